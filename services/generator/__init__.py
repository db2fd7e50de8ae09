"""The generator worker: samples candidate solutions on the `generate` queue."""
