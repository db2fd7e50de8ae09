"""`verisolve bench ingest`: synthetic problems through a real API server into the database.

The server is `verisolve api`'s app under uvicorn in a child process on 127.0.0.1, so it has a
core of its own; the client is the one `verisolve submit --api` uses. The job and the key made
for the run are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import httpx
import sqlalchemy as sa
import typer
from rich.console import Console

from verisolve.apikeys import create_key
from verisolve.cli.database import require_schema
from verisolve.cli.line_errors import fail
from verisolve.client import CHUNK_LINES, Client
from verisolve.db import get_engine, session_scope
from verisolve.modelstore import registry
from verisolve.tables import ApiKey, Job, ModelArtifact

console = Console()
STARTUP_TIMEOUT_S = 60.0

_NAMES = ("Ada", "Bram", "Chiara", "Dev", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas")
_THINGS = ("marbles", "stickers", "pencils", "apples", "stamps", "shells", "cards", "coins")


def synthetic_problem(i: int, rng: random.Random) -> dict[str, str]:
    """One grade-school problem with its answer, written from a template of ours."""
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    have, bought, per_box = (rng.randint(2, 90) for _ in range(3))
    given = rng.randint(1, have + bought * per_box - 1)
    question = (
        f"{name} has {have} {thing}. {name} buys {bought} boxes with {per_box} {thing} in each "
        f"box, then gives {given} {thing} to a friend. How many {thing} does {name} have now?"
    )
    answer = have + bought * per_box - given
    return {"id": f"p{i}", "question": question, "answer": str(answer)}


def write_problems(path: Path, n: int, seed: int = 0) -> int:
    """Write n synthetic problems as JSONL; returns the file's size in bytes."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(synthetic_problem(i, rng)) + "\n")
    return path.stat().st_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_server() -> Iterator[str]:
    """A uvicorn child process serving the app on 127.0.0.1; yields its base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "services.submission.api:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API server did not get ready in {STARTUP_TIMEOUT_S:.0f} s")


def _run(url: str, token: str, tenant: str, path: Path, chunk_lines: int) -> tuple[int, int, float]:
    """Create a job and upload the file; (job id, problems stored, seconds)."""
    with Client(url, token) as client:
        start = time.perf_counter()
        # The job is never run: its generator is the placeholder `ingest` registers.
        job = client.create_job({"name": "bench-ingest", "n_samples": 1, "generator": tenant})
        summary = client.upload(job["id"], path, chunk_lines=chunk_lines)
        seconds = time.perf_counter() - start
    if summary.n_errors:
        raise RuntimeError(f"the service rejected {summary.n_errors} line(s): {summary.errors[0]}")
    return int(job["id"]), summary.stored, seconds


def ingest(
    n: Annotated[int, typer.Option("--n", min=1, help="Problems to upload.")] = 100_000,
    chunk_lines: Annotated[int, typer.Option(min=1, help="Lines per request.")] = CHUNK_LINES,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Upload N synthetic problems through the API into the configured database; problems/s."""
    engine = get_engine()
    require_schema(engine)
    tenant = f"bench-{uuid.uuid4().hex[:12]}"
    with session_scope(engine) as session:
        token = create_key(session, tenant, "bench ingest").token
        session.add(registry.placeholder(tenant))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "problems.jsonl"
            size = write_problems(path, n)
            with api_server() as url:
                job_id, stored, seconds = _run(url, token, tenant, path, chunk_lines)
    except (RuntimeError, httpx.HTTPError) as exc:
        fail(f"bench ingest: {exc}")
        raise typer.Exit(1) from None
    finally:
        with session_scope(engine) as session:
            session.execute(sa.delete(Job).where(Job.owner == tenant))
            session.execute(sa.delete(ApiKey).where(ApiKey.tenant == tenant))
            session.execute(sa.delete(ModelArtifact).where(ModelArtifact.name == tenant))
    result = {
        "problems": stored,
        "seconds": round(seconds, 3),
        "problems_per_s": round(stored / seconds, 1),
        "mib_per_s": round(size / seconds / 2**20, 2),
        "chunk_lines": chunk_lines,
        "database": engine.dialect.name,
        "job_id": job_id,
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(
        f"{stored:,} problems in {seconds:.2f} s through the API into {engine.dialect.name}: "
        f"[bold]{stored / seconds:,.0f} problems/s[/] ({result['mib_per_s']} MiB/s)"
    )
