"""Resource limits on a job, from the settings, enforced when the job or its problems are made."""

from __future__ import annotations

from dataclasses import dataclass

from verisolve.inference.sampling import SamplingParams
from verisolve.pipeline.errors import JobInvalid
from verisolve.settings import Settings, get_settings


@dataclass(frozen=True)
class JobLimits:
    """The most a job may ask for (each one a VERISOLVE_ setting)."""

    max_samples: int = 1000
    max_new_tokens: int = 2048
    max_sample_tokens: int = 262_144  # samples x new tokens, per problem
    max_problems: int = 1_000_000
    max_active_jobs: int = 100  # pending or running jobs per tenant

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> JobLimits:
        """The configured limits."""
        s = settings or get_settings()
        return cls(
            max_samples=s.max_samples,
            max_new_tokens=s.max_new_tokens,
            max_sample_tokens=s.max_sample_tokens,
            max_problems=s.max_problems_per_job,
            max_active_jobs=s.max_active_jobs,
        )

    def check_sampling(self, sampling: SamplingParams) -> None:
        """JobInvalid when the samples, the new tokens or their product are over the limits."""
        product = sampling.n * sampling.max_new_tokens
        for field, value, limit, setting in (
            ("n_samples", sampling.n, self.max_samples, "MAX_SAMPLES"),
            ("max_new_tokens", sampling.max_new_tokens, self.max_new_tokens, "MAX_NEW_TOKENS"),
            ("n_samples", product, self.max_sample_tokens, "MAX_SAMPLE_TOKENS"),
        ):
            if value > limit:
                what = field if setting != "MAX_SAMPLE_TOKENS" else "n_samples x max_new_tokens"
                raise JobInvalid(field, _over(what, value, limit, setting))

    def check_problems(self, count: int) -> None:
        """JobInvalid when a job would hold more problems than allowed."""
        if count > self.max_problems:
            over = _over("problems", count, self.max_problems, "MAX_PROBLEMS_PER_JOB")
            raise JobInvalid("problems", over)

    def check_active_jobs(self, active: int) -> None:
        """JobInvalid when the tenant already has as many unfinished jobs as allowed."""
        if active >= self.max_active_jobs:
            message = (
                f"{active} unfinished jobs: the limit is {self.max_active_jobs} per tenant "
                "(VERISOLVE_MAX_ACTIVE_JOBS); finish or cancel one first"
            )
            raise JobInvalid("jobs", message)


def _over(what: str, value: int, limit: int, setting: str) -> str:
    return f"{what} {value:,} is over the limit of {limit:,} (VERISOLVE_{setting})"
