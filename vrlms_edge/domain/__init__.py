"""Business rules as plain async functions over the database; no aiohttp here."""

from vrlms_edge.domain.managed import install_read_only_rule

# Every process that uses the domain gets the enrolled-box rule (see managed.py).
install_read_only_rule()
