"""Benchmarks and compliance runs (not part of the installed packages)."""
