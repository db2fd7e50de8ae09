"""Settings: one pydantic-settings class, read from the environment (prefix VERISOLVE_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_path
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The per-user data directory that holds the embedded database and the models."""
    return user_data_path("verisolve", appauthor=False)


class Settings(BaseSettings):
    """Everything configurable in verisolve; every field reads VERISOLVE_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="VERISOLVE_", env_file=None, extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    # Prepended to every queue and exchange name, so deployments can share one vhost.
    queue_prefix: str = ""
    model_dir: Path | None = None

    # Limits on input.
    max_question_chars: int = Field(default=8000, gt=0)
    max_line_bytes: int = Field(default=1_000_000, gt=0)
    max_upload_bytes: int = Field(default=16 * 1024 * 1024, gt=0)  # one request body of the API

    # Limits on a job, enforced when it is created (see verisolve.pipeline.limits).
    max_samples: int = Field(default=1000, gt=0)  # candidates per problem
    max_new_tokens: int = Field(default=2048, gt=0)  # tokens per candidate
    max_sample_tokens: int = Field(default=262_144, gt=0)  # samples x new tokens, per problem
    max_problems_per_job: int = Field(default=1_000_000, gt=0)
    max_active_jobs: int = Field(default=100, gt=0)  # pending or running jobs per tenant

    # Calculator bounds (see verisolve.calculator).
    calc_max_expr_chars: int = Field(default=200, gt=0)
    calc_max_digits: int = Field(default=30, gt=0)

    # Signs the inspector's browser sessions (/ui); unset: a random secret per process.
    ui_secret: str | None = None

    # Generation defaults.
    default_generator: str = "smollm2-135m-instruct"
    default_verifier: str | None = None
    provider: str = Field(default="cpu", pattern="^(cpu|cuda)$")
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # a worker's /metrics; 0: none

    # Continuous batching (verisolve.inference.batching): rows decoding at once, and the memory
    # their caches may grow to. Unset: 64 rows and 2048 MB on CPU, 256 rows and 16384 MB on CUDA.
    batch_rows: int | None = Field(default=None, gt=0)
    kv_budget_mb: int | None = Field(default=None, gt=0)
    # A generate task's chunk of problems, whose rows share one batch on the worker: consecutive
    # problems until their samples reach generate_chunk_candidates, at most generate_chunk.
    # A batch drains at the end of every task (its last long rows run nearly alone), so a chunk
    # should fill the batch several times: at N = 16 on a 2-core CPU, 32 problems a task ran
    # 1.18x as fast as 8 (see README).
    generate_chunk: int = Field(default=64, gt=0)
    generate_chunk_candidates: int = Field(default=512, gt=0)

    # The GSM8K dataset (train.jsonl, test.jsonl, the paper's samples), for tests and benchmarks;
    # a relative path is read from the working directory.
    gsm8k_dir: Path = Path("../shared/data/gsm8k")

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'verisolve.db'}"
        if self.model_dir is None:
            self.model_dir = self.data_dir / "models"
        return self

    @property
    def rows_in_flight(self) -> int:
        """Rows the batch engine decodes at once (batch_rows, else the provider's default)."""
        return self.batch_rows or (256 if self.provider == "cuda" else 64)

    @property
    def kv_budget_bytes(self) -> int:
        """Bytes the batch engine's caches may grow to (kv_budget_mb, else the provider's)."""
        return (self.kv_budget_mb or (16384 if self.provider == "cuda" else 2048)) << 20

    @property
    def models_path(self) -> Path:
        """The model directory, always set after validation."""
        assert self.model_dir is not None
        return self.model_dir


class SettingsError(ValueError):
    """VERISOLVE_* variables that do not hold valid values: each one named, with the reason."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (SettingsError names every bad variable)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One line per bad variable: its name, the value read and why it was refused."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"VERISOLVE_{field.upper()}" if field else "VERISOLVE_* settings"
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        lines.append(f"{name}{shown}: {error['msg']}")
    return "invalid settings: " + "; ".join(lines)
