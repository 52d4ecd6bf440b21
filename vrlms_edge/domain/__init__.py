"""Business rules as plain async functions over the database; no aiohttp here."""
