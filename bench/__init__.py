"""Benchmarks: programs that measure the project against its alternatives, side by side.

``python -m bench`` runs every benchmark in :mod:`bench.registry` and writes
``docs/BENCHMARKS.md`` plus PNG charts. Nothing here is imported by the tests, and nothing here
asserts: a benchmark returns figures and the report prints them, with PASS/FAIL only where an
issue states a target ratio.
"""
