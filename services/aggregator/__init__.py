"""The aggregator worker: selects answers and finalizes jobs on the `aggregate` queue."""
