"""Adapters that put other frameworks' persistence on purpose_agent's stores.

Each adapter lives in its own subpackage and needs its framework installed through an extra,
for example ``pip install 'purpose-agent[langgraph]'``; importing this package needs nothing.
"""
