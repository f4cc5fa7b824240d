"""Benchmarks: redismpx against the raw-hiredis limit and redis-py's asyncio PubSub.

Run ``python -m bench`` (or ``python bench/run.py``) from the repository root; see
``bench/README.md`` for the method and ``bench/results.md`` for the latest figures.
"""
