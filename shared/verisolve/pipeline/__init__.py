"""Stage functions shared by every executor: a session in, plain values out, no Celery."""

from verisolve.pipeline.jobs import JobSpec, add_problems, cancel_job, create_job, start_job
from verisolve.pipeline.stages import (
    GeneratedCandidate,
    NextStep,
    aggregate_problem,
    finalize_job,
    generate_problem,
    score_problem,
)

__all__ = [
    "GeneratedCandidate",
    "JobSpec",
    "NextStep",
    "add_problems",
    "aggregate_problem",
    "cancel_job",
    "create_job",
    "finalize_job",
    "generate_problem",
    "score_problem",
    "start_job",
]
