"""Store of record: models, datasets, wizard sessions (SQLAlchemy; SQLite or PostgreSQL)."""
