"""The benchmark harness behind `bench/run.py` (see ../shared/BENCHMARKS.md for the method)."""
