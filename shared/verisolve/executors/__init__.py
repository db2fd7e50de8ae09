"""Executors run the pipeline's stages: inline (one process) or on Celery workers."""
