"""The `verisolve` command line."""
