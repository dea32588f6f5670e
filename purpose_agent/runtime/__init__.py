"""The seed's module paths: ``events``, ``state`` and ``checkpoint``."""
