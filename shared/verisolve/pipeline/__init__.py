"""The pipeline: a job's lifecycle, its spec, and the stages every executor runs (no Celery)."""

from verisolve.pipeline.jobs import (
    JobConflict,
    JobError,
    JobInvalid,
    JobNotFound,
    JobSpec,
    add_problems,
    cancel_job,
    create_job,
    resume_job,
    start_job,
)
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
    "JobConflict",
    "JobError",
    "JobInvalid",
    "JobNotFound",
    "JobSpec",
    "NextStep",
    "add_problems",
    "aggregate_problem",
    "cancel_job",
    "create_job",
    "finalize_job",
    "generate_problem",
    "resume_job",
    "score_problem",
    "start_job",
]
