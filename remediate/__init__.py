"""remediate: close open relays and anonymous SMTP authentication on a fleet of mail servers."""

__version__ = "0.1.0"
