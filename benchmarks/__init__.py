"""`make bench`: the figures in docs/BENCHMARKS.md, measured on this machine (`python -m benchmarks --help`)."""
