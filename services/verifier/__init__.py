"""The verifier worker: scores candidates on the `verify` queue."""
