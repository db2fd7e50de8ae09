"""`verisolve bench pipeline`: a real job on Celery workers, timed against its model time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.cli.bench_pipeline import PipelineTiming, _registered, bench_problems
from verisolve.db import create_engine, get_engine, session_scope
from verisolve.db.migrate import upgrade
from verisolve.modelstore import registry
from verisolve.settings import get_settings
from verisolve.tables import Job, ModelArtifact, OutboxMessage


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bench-model")
    export_generator(build_tiny_model(root / "hf"), root / "generator", name="tiny-bench")
    return root / "generator"


@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.slow
def test_the_benchmark_reports_its_overhead(
    postgres_url: str,
    rabbitmq_url: str,
    tiny_generator: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("VERISOLVE_BROKER_URL", rabbitmq_url)
    engine = create_engine(postgres_url)
    with session_scope(engine) as session:
        jobs_before = session.query(Job).count()
        messages_before = session.query(OutboxMessage).count()
    options = ["--problems", "3", "-n", "4", "--max-new-tokens", "16", "--verifier", "none"]
    result = CliRunner().invoke(
        app, ["bench", "pipeline", "--generator", str(tiny_generator), *options, "--json"]
    )
    assert result.exit_code == 0, result.output
    timing = json.loads(result.stdout)
    assert (timing["problems"], timing["samples"], timing["score_s"]) == (3, 4, 0.0)
    assert timing["wall_s"] >= timing["generate_s"] > 0
    assert set(timing["tasks_s"]) == {
        "verisolve.generate",
        "verisolve.aggregate",
        "verisolve.finalize",
    }
    assert timing["overhead"] == pytest.approx(timing["wall_s"] / timing["generate_s"] - 1)
    with session_scope(engine) as session:
        # Its jobs and their messages are removed afterwards.
        assert session.query(Job).count() == jobs_before
        assert session.query(OutboxMessage).count() == messages_before
        # The model directory was registered under its name, as every job's models are.
        assert registry.get(session, "tiny-bench") is not None
        session.execute(sa.delete(ModelArtifact).where(ModelArtifact.name == "tiny-bench"))
    engine.dispose()


def test_a_model_option_is_a_directory_a_stored_name_or_a_registered_one(
    tiny_generator: Path,
) -> None:
    settings = get_settings()
    upgrade(settings.database_url)
    engine = get_engine(settings.database_url)
    stored = settings.models_path / "tiny-bench"
    shutil.copytree(tiny_generator, stored)
    with session_scope(engine) as session:
        assert registry.get(session, "tiny-bench") is None
    # A name whose directory is in the store, unknown to this database, is registered there.
    assert _registered(engine, "tiny-bench") == "tiny-bench"
    with session_scope(engine) as session:
        assert registry.resolve_name(session, "tiny-bench") == stored.resolve()
    # A directory is registered under its manifest's name, wherever it lies.
    assert _registered(engine, str(tiny_generator)) == "tiny-bench"
    with session_scope(engine) as session:
        assert registry.resolve_name(session, "tiny-bench") == tiny_generator.resolve()
    # Registered names, 'none' and unknown names (ensure_models refuses those) pass as they are.
    shutil.rmtree(stored)
    assert _registered(engine, "tiny-bench") == "tiny-bench"
    assert _registered(engine, "none") == "none"
    assert _registered(engine, "nowhere") == "nowhere"
    assert _registered(engine, None) is None


@pytest.mark.parametrize(
    ("generate_s", "score_s", "critical_s"),
    [
        (100.0, 0.0, 100.0),
        (100.0, 20.0, 105.0),  # scoring overlaps generation; the last problem's adds
        (10.0, 40.0, 42.5),  # the verifier is the slower stage
    ],
)
def test_the_critical_path_is_the_slower_stage_plus_one_problem_of_the_other(
    generate_s: float, score_s: float, critical_s: float
) -> None:
    timing = PipelineTiming(4, 16, 110.0, generate_s, score_s, {})
    assert timing.critical_s == pytest.approx(critical_s)
    assert timing.overhead == pytest.approx(110.0 / critical_s - 1)


def test_bench_problems_are_ours_and_answered() -> None:
    problems = bench_problems(12)
    assert len({p.external_id for p in problems}) == 12
    assert all(p.gold is not None and int(p.gold) > 0 for p in problems)
