"""`verisolve bench inspector`: every page answers on the job it builds, and it cleans up."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from verisolve.cli.app import app


def test_bench_inspector_times_every_page(sqlite_url: str) -> None:
    args = ["bench", "inspector", "--problems", "4", "--candidates", "6", "--repeats", "1"]
    result = CliRunner().invoke(app, [*args, "--database-url", sqlite_url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["problems"], report["candidates"]) == (4, 6)
    pages = report["pages"]
    assert "baseline /healthz" in pages
    assert "problem, candidates 1-25 shaded" in pages
    assert all(p["median_ms"] > 0 and p["x_baseline"] > 0 for p in pages.values())


def test_bench_inspector_leaves_no_job_behind(sqlite_url: str) -> None:
    import sqlalchemy as sa

    from verisolve.db import create_engine

    args = ["bench", "inspector", "--problems", "2", "--candidates", "3", "--repeats", "1"]
    assert CliRunner().invoke(app, [*args, "--database-url", sqlite_url]).exit_code == 0
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        owners = conn.scalars(sa.text("SELECT owner FROM jobs")).all()
        models = conn.scalars(sa.text("SELECT name FROM model_artifacts")).all()
    engine.dispose()
    assert not [o for o in owners if o.startswith("bench-inspector-")]
    assert not [m for m in models if m.startswith("bench-inspector-")]
