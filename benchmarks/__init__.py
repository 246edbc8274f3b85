"""Benchmark scripts, each run as a module: `python -m benchmarks.<name>` (see README.md)."""
