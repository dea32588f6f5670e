"""Failures on private servers: lost connections, restarts, kills, proxies, oversized values."""
