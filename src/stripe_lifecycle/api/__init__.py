"""The HTTP API: thin translators between HTTP, the database and Temporal."""
