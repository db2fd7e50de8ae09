"""Typed SQLAlchemy models: every table verisolve keeps."""

from verisolve.tables.api_key import ApiKey
from verisolve.tables.artifact import ModelArtifact
from verisolve.tables.candidate import Candidate
from verisolve.tables.job import Job, JobStatus
from verisolve.tables.outbox import OutboxMessage
from verisolve.tables.problem import Problem, ProblemStatus
from verisolve.tables.selection import Selection

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
