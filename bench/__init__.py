"""Benchmarks: each module has `run() -> dict` measuring ratios within one run on one machine."""
