"""The event store: tables, migrations, engines and row mapping (SQLAlchemy 2.x)."""
