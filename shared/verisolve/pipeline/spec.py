"""A job's parameters in one frozen spec: models, sampling and selection, from request to engine.

The sampling parameters are the engine's own `SamplingParams`; the jobs table stores them in the
columns `SAMPLING_COLUMNS` names, and `JobSpec.of_job` / `JobSpec.columns` are the only two places
that map one onto the other. A new sampling option touches SamplingParams, the table and the
engine only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from verisolve.inference.sampling import SamplingParams
from verisolve.pipeline.errors import JobInvalid
from verisolve.problems import ProblemIn
from verisolve.selection import Strategy
from verisolve.tables import Job

# SamplingParams field -> the jobs column (and API / CLI field) that holds it.
SAMPLING_COLUMNS: dict[str, str] = {
    "n": "n_samples",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_new_tokens": "max_new_tokens",
    "seed": "seed",
}
DEFAULT_SAMPLING = SamplingParams(n=16)


def sampling_from(
    values: Mapping[str, Any], base: SamplingParams = DEFAULT_SAMPLING
) -> SamplingParams:
    """SamplingParams from values named like the jobs columns (absent ones from `base`).

    SamplingParams refuses a bad value with a message that starts with its field's name; the
    JobInvalid says it with the column's name, which is what the user wrote.
    """
    given = {f: values[c] for f, c in SAMPLING_COLUMNS.items() if c in values}
    try:
        return replace(base, **given)
    except ValueError as exc:
        field, _, rest = str(exc).partition(" ")
        column = SAMPLING_COLUMNS.get(field, field)
        raise JobInvalid(column, f"{column} {rest}") from None


@dataclass(frozen=True)
class JobSpec:
    """What a job runs: its models, how it samples, how it selects, and whose it is."""

    generator: str
    verifier: str | None = None
    sampling: SamplingParams = field(default=DEFAULT_SAMPLING)
    strategy: str | None = None  # default: topk-vote with a verifier, majority without
    vote_k: int = 5
    owner: str = "local"
    name: str = ""

    @classmethod
    def of_job(cls, job: Job) -> JobSpec:
        """The spec a job row was made from."""
        columns = {c: getattr(job, c) for c in SAMPLING_COLUMNS.values()}
        return cls(
            generator=job.generator,
            verifier=job.verifier,
            sampling=sampling_from(columns, SamplingParams()),
            strategy=job.strategy,
            vote_k=job.vote_k,
            owner=job.owner,
            name=job.name,
        )

    def columns(self) -> dict[str, Any]:
        """The jobs-table values of this spec (strategy resolved)."""
        sampling = {c: getattr(self.sampling, f) for f, c in SAMPLING_COLUMNS.items()}
        return {
            "generator": self.generator,
            "verifier": self.verifier,
            **sampling,
            "strategy": self.resolved_strategy().value,
            "vote_k": self.vote_k,
            "owner": self.owner,
            "name": self.name,
        }

    def resolved_strategy(self) -> Strategy:
        """The strategy that answers, checked against the presence of a verifier."""
        default = Strategy.TOPK_VOTE if self.verifier else Strategy.MAJORITY
        names = ", ".join(s.value for s in Strategy)
        try:
            strategy = Strategy(self.strategy) if self.strategy else default
        except ValueError:
            message = f"unknown strategy {self.strategy!r}; choose one of: {names}"
            raise JobInvalid("strategy", message) from None
        if strategy.needs_scores and not self.verifier:
            message = f"strategy {strategy.value!r} needs a verifier"
            raise JobInvalid("strategy", message)
        return strategy

    def validate(self) -> None:
        """Raise JobInvalid naming the first bad field."""
        if self.vote_k < 1:
            raise JobInvalid("vote_k", "vote_k must be at least 1")
        self.resolved_strategy()

    def fingerprint(self, problems: Sequence[ProblemIn], models: Sequence[str | None]) -> str:
        """A digest of parameters, models and problems: the same run again finds its job.

        `models` are the generator's and verifier's weights (their registry sha256): a model
        trained or exported again under the same name makes another job, not the old one's.
        """
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        digest.update(json.dumps(list(models)).encode())
        for p in problems:
            digest.update(json.dumps([p.external_id, p.question, p.gold_raw]).encode())
        return digest.hexdigest()
