"""verisolve: solve math word problems in bulk with generators and verifiers."""

__version__ = "0.1.0"
