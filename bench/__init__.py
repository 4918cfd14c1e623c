"""Benchmarks with their recorded results (bench/results/). Run them with `make bench`."""
