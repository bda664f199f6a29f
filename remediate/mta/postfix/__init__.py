"""Postfix: configuration syntax (`syntax`), judgements and transforms (`rules`), and the driver (`driver`)."""

from remediate.mta.postfix.driver import PostfixDriver

__all__ = ["PostfixDriver"]
