"""Alembic revisions of the run database (applied by ``serve.migrate.upgrade``)."""
