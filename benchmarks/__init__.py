"""Benchmarks of objectron-wds: see benchmarks/README.md."""
