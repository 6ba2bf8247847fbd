"""asv benchmarks for numbacnn (see benchmarks/RESULTS.md for how to run them)."""
