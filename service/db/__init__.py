"""Postgres: tables, queries per area, and Alembic migrations."""
