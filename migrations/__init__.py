"""Alembic migrations of the event store (installed as ``lifecycle.migrations``)."""
