"""verisolve's services: the submission API (the Celery workers live in verisolve.executors)."""
