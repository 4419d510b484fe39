"""The database: engine, tables, migrations and the read models the API answers from."""
