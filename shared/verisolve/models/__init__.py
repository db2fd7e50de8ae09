"""Typed SQLAlchemy models: every table verisolve keeps."""

from verisolve.models.api_key import ApiKey
from verisolve.models.artifact import ModelArtifact
from verisolve.models.candidate import Candidate
from verisolve.models.job import Job, JobStatus
from verisolve.models.outbox import OutboxMessage
from verisolve.models.problem import Problem, ProblemStatus
from verisolve.models.selection import Selection

__all__ = [
    "ApiKey",
    "Candidate",
    "Job",
    "JobStatus",
    "ModelArtifact",
    "OutboxMessage",
    "Problem",
    "ProblemStatus",
    "Selection",
]
