"""`python -m verisolve`: the same command as `verisolve`."""

from verisolve.cli.app import main

main()
