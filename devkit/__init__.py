"""Dev-only helpers shared by the tests, the benchmarks and docs/screenshots.py: tiny models,
small data folders, a throwaway MLflow store, server processes on 127.0.0.1, process checks.

Not installed with the package (pyproject.toml lists distrinews, pipelines and
serving only); imported from the repository root.
"""
