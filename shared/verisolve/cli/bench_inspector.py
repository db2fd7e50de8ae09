"""`verisolve bench inspector`: the inspector's HTML pages on a large finished job.

A job of N problems x M candidates (token-level scores included) is written straight into a
fresh SQLite database (or the one given), then each page is requested through the app in this
process. The baseline, measured in the same run, is /healthz: a request that reads nothing.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from verisolve.benchmarks.inspector_job import build_job, register_verifier
from verisolve.cli.bench_ingest import synthetic_problem
from verisolve.db import create_engine, session_scope
from verisolve.db.migrate import upgrade
from verisolve.tables import Job, ModelArtifact, Problem

console = Console()


def _pages(job_id: int, problem_id: int) -> dict[str, str]:
    base = f"/ui/jobs/{job_id}"
    return {
        "baseline /healthz": "/healthz",
        "job list": "/ui/jobs",
        "job, problems page 1": base,
        "job, problems page 20": f"{base}?page=20",
        "filter: wrong only": f"{base}?wrong=1",
        "filter: disagreements": f"{base}?disagree=1",
        "filter: parse failures": f"{base}?unparsed=1",
        "search": f"{base}?q=stickers",
        "problem, candidates 1-25 shaded": f"{base}/problems/{problem_id}",
        "problem, candidates 76-100": f"{base}/problems/{problem_id}?page=4",
    }


def _time(client: object, path: str, repeats: int) -> list[float]:
    """Seconds per request, after one request that is not counted (warm caches)."""
    client.get(path)  # type: ignore[attr-defined]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(path)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}")
    return times


def _build(engine: sa.Engine, problems: int, candidates: int, folder: Path) -> tuple[str, int]:
    owner = f"bench-inspector-{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        verifier = register_verifier(session, folder, f"{owner}-verifier")
    rng = random.Random(0)
    rows = [synthetic_problem(i, rng) for i in range(problems)]
    return owner, build_job(engine, owner, verifier, rows, candidates)


def inspector(
    problems: Annotated[int, typer.Option(min=1, help="Problems in the job.")] = 1000,
    candidates: Annotated[int, typer.Option(min=1, help="Candidates per problem.")] = 100,
    repeats: Annotated[int, typer.Option(min=1, help="Requests per page.")] = 5,
    database_url: Annotated[
        str | None, typer.Option(help="Database to use (default: a fresh SQLite file).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time each inspector page on a job of PROBLEMS x CANDIDATES; ratios against /healthz."""
    with warnings.catch_warnings():
        # Starlette's test client now asks for the `httpx2` package; `httpx` still works.
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    from services.submission.api import create_app

    with tempfile.TemporaryDirectory(prefix="verisolve-bench-inspector-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = create_engine(url)
        started = time.perf_counter()
        owner, job_id = _build(engine, problems, candidates, Path(tmp) / "verifier")
        build_s = time.perf_counter() - started
        with session_scope(engine) as session:
            first = session.scalar(
                sa.select(sa.func.min(Problem.id)).where(Problem.job_id == job_id)
            )
        try:
            with TestClient(create_app(engine, ui_local_tenant=owner)) as client:
                results = {
                    name: _time(client, path, repeats)
                    for name, path in _pages(job_id, int(first or 0)).items()
                }
        finally:
            _cleanup(engine, owner)
            engine.dispose()
    _show(results, problems, candidates, build_s, as_json)


def _cleanup(engine: sa.Engine, owner: str) -> None:
    with session_scope(engine) as session:
        session.execute(sa.delete(Job).where(Job.owner == owner))
        session.execute(sa.delete(ModelArtifact).where(ModelArtifact.name.startswith(f"{owner}-")))


def _show(
    results: dict[str, list[float]], problems: int, candidates: int, build_s: float, as_json: bool
) -> None:
    base = statistics.median(results["baseline /healthz"])
    rows = {
        name: {
            "median_ms": 1000 * statistics.median(t),
            "max_ms": 1000 * max(t),
            "x_baseline": statistics.median(t) / base,
        }
        for name, t in results.items()
    }
    if as_json:
        typer.echo(json.dumps({"problems": problems, "candidates": candidates, "pages": rows}))
        return
    table = Table(title=f"Inspector pages, {problems} problems x {candidates} candidates")
    for column in ("Page", "median ms", "max ms", "x /healthz"):
        table.add_column(column, justify="left" if column == "Page" else "right")
    for name, row in rows.items():
        table.add_row(
            name, f"{row['median_ms']:.1f}", f"{row['max_ms']:.1f}", f"{row['x_baseline']:.1f}"
        )
    console.print(f"Job built in {build_s:.1f} s")
    console.print(table)
