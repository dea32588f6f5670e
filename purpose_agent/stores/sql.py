class SQLCheckpointer:  # pragma: no cover
    pass

class SQLiteCheckpointer:  # pragma: no cover
    pass
