"""The SQL side: ORM models, engine setup, dialect glue and migrations."""
