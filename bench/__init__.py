"""Benchmarks (`make bench`): ratios against raw asyncpg measured in the same run."""
