class AsyncSQLCheckpointer:  # pragma: no cover
    pass
