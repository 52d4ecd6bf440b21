"""The REST API of the box under /api/: one module per area, each with its `routes` table."""
