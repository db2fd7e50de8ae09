"""`verisolve bench pipeline`: one job on Celery, wall time against the time inside the models.

Workers (one process per queue), the relay and a warm-up job start first, so model loading is
not counted. The measured job runs from the commit that enqueues it to the moment it is done.
Model time is what the workers' metrics middleware measured around each generator and verifier
call. One generator process is the critical path: it generates every problem, then the last
problem is scored; what the wall time adds to that is queue, relay and database overhead.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from verisolve.cli.job_options import DEFAULTS, JobOptions, job_spec
from verisolve.db import get_engine, session_scope
from verisolve.pipeline.jobs import JobSpec, create_job, start_job
from verisolve.pipeline.limits import JobLimits
from verisolve.problems import ProblemIn
from verisolve.settings import get_settings
from verisolve.tables import Job, JobStatus, OutboxMessage, Problem

console = Console()
err_console = Console(stderr=True)
TARGET = 0.10
MODEL_SAMPLE = "verisolve_model_call_duration_seconds_sum"
TASK_SAMPLE = "verisolve_task_duration_seconds_sum"
_ITEMS = ("marbles", "stickers", "apples", "pencils", "cards", "shells")


def bench_problems(n: int) -> list[ProblemIn]:
    """n two-step word problems of our own, with their answers."""
    problems = []
    for i in range(n):
        a, b, c = 4 + i % 9, 3 + (i * 5) % 7, 2 + (i * 3) % 5
        item = _ITEMS[i % len(_ITEMS)]
        question = (
            f"Sam has {a} bags with {b} {item} in each bag. He gives away {c} {item}. "
            f"How many {item} does Sam have left?"
        )
        answer = str(a * b - c)
        problems.append(ProblemIn(f"bench-{i}", question, answer, answer, i + 1))
    return problems


@dataclass(frozen=True)
class PipelineTiming:
    """One measured job: wall time, model time and task time (seconds)."""

    problems: int
    samples: int
    wall_s: float
    generate_s: float
    score_s: float
    tasks_s: dict[str, float]  # wall time inside the tasks, by task name

    @property
    def critical_s(self) -> float:
        """Model time on the critical path of a two-stage pipeline, one process a stage.

        The slower stage works through every problem; the other adds one problem's worth.
        """
        stages = sorted((self.generate_s, self.score_s))
        return stages[1] + stages[0] / max(self.problems, 1)

    @property
    def overhead(self) -> float:
        """What queue, relay and database add to the critical path, as a ratio."""
        return self.wall_s / self.critical_s - 1 if self.critical_s > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        """The measurements and the derived figures."""
        return {
            **asdict(self),
            "critical_model_s": self.critical_s,
            "in_task_overhead_s": sum(self.tasks_s.values()) - self.generate_s - self.score_s,
            "overhead": self.overhead,
            "target": TARGET,
            "within_target": self.overhead <= TARGET,
        }


def _registered(engine: sa.Engine, model: str | None) -> str | None:
    """A model option as a registered name.

    A model directory, or a name whose directory is in the model store (as the other `bench`
    commands take it) but which this database does not know yet, is registered first under its
    manifest's name; a registered name and 'none' pass as they are.
    """
    from verisolve.cli.job_options import NO_VERIFIER
    from verisolve.modelstore import registry
    from verisolve.modelstore.manifest import MANIFEST_FILE, Manifest

    if model is None or model == NO_VERIFIER:
        return model
    directory = Path(model).expanduser()
    if not (directory / MANIFEST_FILE).is_file():
        with session_scope(engine) as session:
            if registry.get(session, model) is not None:
                return model
        directory = get_settings().models_path / model
        if not (directory / MANIFEST_FILE).is_file():
            return model  # unknown: ensure_models names it in its error
    manifest = Manifest.load(directory)
    with session_scope(engine) as session:
        registry.register(session, manifest, directory)
    return manifest.name


def _submit(engine: sa.Engine, spec: JobSpec, problems: list[ProblemIn]) -> int:
    with session_scope(engine) as session:
        job, _ = create_job(session, spec, problems, limits=JobLimits.from_settings())
        start_job(session, job)
        return job.id


def _done(engine: sa.Engine, job_id: int) -> bool:
    with session_scope(engine) as session:
        status = session.get_one(Job, job_id).status
    if status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise RuntimeError(f"the benchmark job {job_id} ended {status}")
    return status == JobStatus.DONE


def _delete_jobs(engine: sa.Engine, job_ids: list[int]) -> None:
    """Remove the benchmark's jobs and their outbox messages."""
    with session_scope(engine) as session:
        problem_ids = session.scalars(sa.select(Problem.id).where(Problem.job_id.in_(job_ids)))
        keys = [f"finalize:{j}" for j in job_ids]
        keys += [
            f"{stage}:{p}" for p in problem_ids for stage in ("generate", "score", "aggregate")
        ]
        session.execute(sa.delete(OutboxMessage).where(OutboxMessage.dedupe_key.in_(keys)))
        session.execute(sa.delete(Job).where(Job.id.in_(job_ids)))


def measure(
    engine: sa.Engine, spec: JobSpec, problems: list[ProblemIn], timeout: float
) -> PipelineTiming:
    """Run the warm-up and the measured job on a fresh local Celery deployment."""
    from verisolve.executors.local_stack import LocalStack
    from verisolve.pipeline.routes import QueueName

    queues = [QueueName.GENERATE, QueueName.AGGREGATE]
    if spec.verifier:
        queues.append(QueueName.VERIFY)
    url = engine.url.render_as_string(hide_password=False)
    jobs: list[int] = []
    with tempfile.TemporaryDirectory(prefix="verisolve-bench-") as workdir:
        stack = LocalStack(url, get_settings().broker_url, Path(workdir))
        try:
            stack.start_relay()
            for queue in queues:
                stack.start_worker(queue)
            stack.wait_ready(queues, timeout=120)
            err_console.print("workers ready; warming up (loading the models)")
            sampling = replace(spec.sampling, n=1, max_new_tokens=4)
            warm = replace(spec, sampling=sampling, name="bench warm-up")
            jobs.append(_submit(engine, warm, problems[:1]))
            stack.wait(lambda: _done(engine, jobs[-1]), timeout, "the warm-up job")
            model_before = stack.metric_sums(MODEL_SAMPLE, "stage")
            tasks_before = stack.metric_sums(TASK_SAMPLE, "task")
            err_console.print(f"running {len(problems)} problems x {spec.sampling.n} samples")
            started = time.perf_counter()
            jobs.append(_submit(engine, spec, problems))
            stack.wait(lambda: _done(engine, jobs[-1]), timeout, "the benchmark job")
            wall = time.perf_counter() - started
            stack.stop()
            model = stack.metric_sums(MODEL_SAMPLE, "stage")
            tasks = stack.metric_sums(TASK_SAMPLE, "task")
        finally:
            stack.stop()
            stack.delete_queues()
            _delete_jobs(engine, jobs)

    def spent(stage: str) -> float:
        return model.get(stage, 0.0) - model_before.get(stage, 0.0)

    in_tasks = {name: s - tasks_before.get(name, 0.0) for name, s in tasks.items()}
    return PipelineTiming(
        len(problems), spec.sampling.n, wall, spent("generate"), spent("score"), in_tasks
    )


def _table(timing: PipelineTiming) -> Table:
    result = timing.to_json()
    table = Table(title=f"pipeline: {timing.problems} problems x N = {timing.samples}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("wall time", f"{timing.wall_s:.2f} s")
    table.add_row("model time: generate", f"{timing.generate_s:.2f} s")
    table.add_row("model time: score", f"{timing.score_s:.2f} s")
    table.add_row("critical path (model)", f"{timing.critical_s:.2f} s")
    table.add_row("in tasks, outside the model", f"{result['in_task_overhead_s']:.2f} s")
    verdict = "within" if result["within_target"] else "above"
    table.add_row("overhead (queue + database)", f"{100 * timing.overhead:.1f}%")
    table.add_row("target", f"<= {100 * TARGET:.0f}% ({verdict})")
    return table


def pipeline(
    problems: Annotated[int, typer.Option("--problems", min=1, help="Problems in the job.")] = 8,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="N.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = DEFAULTS.sampling.max_new_tokens,
    generator: Annotated[
        str | None,
        typer.Option(
            help="A name (registered, or a directory of the model store) or a model directory;"
            " registered first when this database does not know it [default: the settings']"
        ),
    ] = None,
    verifier: Annotated[
        str | None,
        typer.Option(help="A name or a model directory, as for --generator, or 'none'."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time one job on Celery workers: the overhead of queue and database over the model."""
    from verisolve.cli.database import require_schema
    from verisolve.executors.loading import ensure_models

    engine = get_engine()
    require_schema(engine)
    spec = job_spec(
        JobOptions(
            generator=_registered(engine, generator),
            verifier=_registered(engine, verifier),
            n_samples=samples,
            max_new_tokens=max_new_tokens,
            name="bench pipeline",
        )
    )
    ensure_models(spec.generator, spec.verifier, console=err_console)
    timing = measure(engine, spec, bench_problems(problems), timeout)
    if as_json:
        typer.echo(json.dumps(timing.to_json()))
    else:
        console.print(_table(timing))
