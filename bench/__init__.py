"""krsid benchmarks: bench/run.py is the entry point."""
