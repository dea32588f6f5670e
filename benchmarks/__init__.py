"""Benchmarks: the store against the raw driver doing the same durable work.

Run ``python -m benchmarks --help`` from the repository root. Every case times our store and a
baseline on the same database in the same run, interleaved round by round, and reports the ratio;
the figures go to a table on stdout and to a JSON file (``benchmarks/results/`` by default).
"""
