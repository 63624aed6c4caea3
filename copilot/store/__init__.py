"""Storage: SQLAlchemy 2 models, Alembic migrations, repositories."""
