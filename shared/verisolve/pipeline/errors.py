"""The job lifecycle's one error type: the CLI prints it as one line, the API as 404/409/422."""

from __future__ import annotations


class JobError(ValueError):
    """A job request that cannot be carried out."""


class JobNotFound(JobError, LookupError):  # noqa: N818 - reads as the condition it names
    """No such job (for this tenant: another tenant's job is not found either)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job {job_id}")


class JobConflict(JobError):  # noqa: N818
    """The job's state, or an idempotency key used with other parameters, does not allow it."""


class JobInvalid(JobError):  # noqa: N818
    """A parameter no job may have, an unknown model, or a limit passed; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)
