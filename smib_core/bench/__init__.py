"""Benchmarks (`smib bench ...`): each figure is reported beside a baseline from the same run."""
