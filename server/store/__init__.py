"""PostgreSQL persistence: asyncpg pool, migrations, one module per table group."""
