"""Exim 4.96 (Debian 12 packaging): configuration syntax (`syntax`), judgements, transforms and audit
(`rules`); the driver lives in `driver`."""
