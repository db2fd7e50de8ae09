"""Request and response bodies of the submission API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from verisolve.jsonl import InvalidLineError, check_storable
from verisolve.selection import Strategy
from verisolve.tables import JobStatus

NDJSON = "application/x-ndjson"
MAX_INT32 = 2**31 - 1  # integer columns (ids, line numbers) are 32-bit on PostgreSQL
NO_NUL = "^[^\\x00]*$"  # PostgreSQL text cannot hold NUL


def _storable(value: str) -> str:
    """Refuse text the database cannot store (NUL, unpaired surrogates)."""
    try:
        check_storable(value, "")
    except InvalidLineError as exc:
        raise ValueError(exc.reason) from None
    return value


def _utc(value: datetime) -> datetime:
    """Timestamps are stored in UTC; SQLite returns them without the zone."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _json_number(value: object) -> object:
    """Only a JSON number is a number: not `true`, not "3" (2.0 is the integer 2, as in JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
JsonInt = Annotated[int, BeforeValidator(_json_number)]
JsonFloat = Annotated[float, BeforeValidator(_json_number)]
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=256), AfterValidator(_storable)
]


class JobCreate(BaseModel):
    """A new job's parameters; problems are uploaded afterwards.

    Numbers are strict: `true` is not a number of samples, nor "3". The models must be
    registered names; the schema served at /openapi.json lists them, with the limits.
    """

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        # A strategy that reads verifier scores needs a verifier (else 422, naming `strategy`).
        json_schema_extra={
            "if": {
                "properties": {"strategy": {"enum": [s.value for s in Strategy if s.needs_scores]}},
                "required": ["strategy"],
            },
            "then": {"properties": {"verifier": {"type": "string"}}, "required": ["verifier"]},
        },
    )

    name: Annotated[
        str, StringConstraints(max_length=256, pattern=NO_NUL), AfterValidator(_storable)
    ] = ""
    generator: ModelName | None = Field(
        default=None,
        description="A registered generator's name; the service's default when absent.",
    )
    verifier: ModelName | None = Field(
        default=None, description="A registered verifier's name, if any."
    )
    n_samples: JsonInt = Field(default=16, ge=1, le=10_000)
    temperature: JsonFloat = Field(default=0.7, ge=0, le=10)
    top_p: JsonFloat = Field(default=1.0, gt=0, le=1)
    top_k: JsonInt = Field(default=0, ge=0, le=1_000_000)
    max_new_tokens: JsonInt = Field(default=256, ge=1, le=1_000_000)
    seed: JsonInt = Field(
        default=0,
        ge=0,
        le=2**53 - 1,
        description="Up to 2^53 - 1: every JSON reader keeps it exact.",
    )
    strategy: Strategy | None = Field(
        default=None, description="Default: topk-vote with a verifier, majority without."
    )
    vote_k: JsonInt = Field(default=5, ge=1, le=10_000)
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The same key again returns the tenant's job made with it, not a new one.",
    )


class ProblemLine(BaseModel):
    """One line of an upload: a problem. Lines without an id take their line number."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, pattern=r"\S", description="Not blank.")
    answer: str | float | None = Field(
        default=None, description="Gold answer: a number, or a solution ending in '#### N'."
    )
    id: str | int | None = None


class JobOut(BaseModel):
    """A job as the service shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: JobStatus
    generator: str
    verifier: str | None
    n_samples: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: int
    strategy: Strategy
    vote_k: int
    n_problems: int
    n_done: int
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class Progress(BaseModel):
    """How many of a job's problems wait for each stage, or are through."""

    pending: int
    generated: int
    scored: int
    done: int
    failed: int


class JobDetail(JobOut):
    """A job with its progress, and its metrics once it is done."""

    progress: Progress
    metrics: dict[str, Any] | None


class JobPage(BaseModel):
    """Jobs, newest first; pass `next_before` as `before` for the next page."""

    jobs: list[JobOut]
    next_before: int | None


class UploadResult(BaseModel):
    """What one chunk of problems did."""

    received: int = Field(description="Problems in the chunk (blank lines are not counted).")
    stored: int = Field(description="New problems stored.")
    skipped: int = Field(description="Problems the job held already (a retried chunk).")
    n_problems: int = Field(description="The job's problems after this chunk.")
    dry_run: bool


class ErrorItem(BaseModel):
    """One reason a request was refused: a line of the upload, or a parameter."""

    line: int | None = Field(description="The line number in the file (offset applied).")
    field: str | None
    reason: str


class ErrorBody(BaseModel):
    """Every error response: a summary, and the lines or parameters at fault."""

    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)
    n_errors: int = Field(default=0, description="Errors in all; `errors` keeps the first 1000.")


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether the service can take requests: its database answers at the newest schema."""

    status: Literal["ready", "unavailable"]
    database_revision: str | None
    code_revision: str | None
    detail: str | None = None
