"""The database layer: every runtime statement (``queries.sql``) and the connections that run
them. Nothing here uses the Django ORM models."""
