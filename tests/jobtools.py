"""Making jobs in tests: register the models a spec names, then create it the one way there is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from verisolve.modelstore import registry
from verisolve.pipeline.jobs import create_job
from verisolve.pipeline.limits import JobLimits
from verisolve.pipeline.spec import JobSpec, sampling_from
from verisolve.problems import ProblemIn
from verisolve.tables import Job, ModelArtifact


def spec(
    generator: str = "g",
    verifier: str | None = None,
    *,
    owner: str = "local",
    name: str = "",
    strategy: str | None = None,
    vote_k: int = 5,
    **sampling: Any,
) -> JobSpec:
    """A JobSpec with sampling given as the jobs columns name it (n_samples, seed, ...)."""
    return JobSpec(generator, verifier, sampling_from(sampling), strategy, vote_k, owner, name)


def register_fake(session: Session, name: str, kind: str) -> None:
    """A registry row for a model a test double stands in for (no files behind it)."""
    if registry.get(session, name) is None:
        session.add(
            ModelArtifact(
                kind=kind, name=name, path=f"/nowhere/{name}", sha256="0" * 64, manifest={}
            )
        )
        session.flush()


def make_job(session: Session, job_spec: JobSpec, problems: Sequence[ProblemIn] = ()) -> Job:
    """A pending job of the spec, its models registered as fakes when they are not yet."""
    register_fake(session, job_spec.generator, "generator")
    if job_spec.verifier:
        register_fake(session, job_spec.verifier, "verifier")
    job, _ = create_job(session, job_spec, problems, limits=JobLimits())
    return job
