"""Reproducible benchmarks of statesaga against its peers; `python -m benchmarks` runs them all.

Each row is a ratio measured side by side in one run on one machine (see __main__.py).
"""
