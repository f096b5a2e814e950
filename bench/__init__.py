"""Benchmarks of xenreconcile, the simulated xl and the shipped peer: `python bench/run.py`."""
