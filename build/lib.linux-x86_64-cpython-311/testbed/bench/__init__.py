"""Benchmarks: measured numbers printed next to references measured in the same run."""
