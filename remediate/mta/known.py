"""The MTAs an inventory may name (imports nothing, so the inventory can validate `mta` cheaply).

`auto` detects the MTA listening on port 25 after connecting. A name here without a driver in
`remediate.mta.DRIVERS` is scanned from outside only and skipped by plan and apply, with the reason.
"""

MTAS = ("auto", "postfix", "exim", "sendmail", "exchange")
