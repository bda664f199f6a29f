"""Sendmail (8.17, Debian packaging): sendmail.mc and access map syntax (`syntax`), judgements and transforms
(`rules`); the driver (`driver`) builds on them."""
