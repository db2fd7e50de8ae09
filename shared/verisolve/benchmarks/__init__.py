"""Benchmarks behind `verisolve bench`: throughput of the engine against reference stacks."""
