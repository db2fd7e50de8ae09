"""The inspector's pages over HTTP: sign-in and tenancy, filters and search, escaping, shading."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from inspector_jobs import new_job, register_token_verifier, run_job

from services.submission.api import create_app
from services.submission.ui.session import COOKIE
from verisolve.apikeys import revoke_key
from verisolve.db import session_scope
from verisolve.tables import ApiKey, Candidate, Problem

if TYPE_CHECKING:
    from conftest import Tenant, Tenants


@pytest.fixture
def ui(engine: sa.Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine), follow_redirects=False) as client:
        yield client


@pytest.fixture
def job(engine: sa.Engine, tenants: Tenants, tmp_path: Path) -> tuple[Tenant, int]:
    owner = tenants.new()
    folder = tmp_path / "verifier"
    return owner, run_job(engine, owner.name, register_token_verifier(engine, folder), folder)


def sign_in(ui: TestClient, tenant: Tenant) -> None:
    response = ui.post("/ui/login", data={"api_key": tenant.token, "next": "/ui/jobs"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/jobs"


def problem_id(engine: sa.Engine, job_id: int, external_id: str) -> int:
    with session_scope(engine) as session:
        found = session.scalar(
            sa.select(Problem.id).where(
                Problem.job_id == job_id, Problem.external_id == external_id
            )
        )
    assert found is not None
    return found


def shown_problems(html: str) -> list[str]:
    return re.findall(r'<tr class="problem"[^>]*>\s*<td><a [^>]*>([^<]+)</a>', html)


def test_pages_need_a_session(ui: TestClient, job: tuple[Tenant, int]) -> None:
    response = ui.get(f"/ui/jobs/{job[1]}?wrong=1")
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/login?next=/ui/jobs/{job[1]}%3Fwrong%3D1"
    ui.cookies.set(COOKIE, "eyJrIjoxfQ.not-the-signature")
    assert ui.get("/ui/jobs").status_code == 303


def test_a_wrong_key_does_not_sign_in(ui: TestClient) -> None:
    response = ui.post("/ui/login", data={"api_key": "vs_nobody-has-this-key"})
    assert response.status_code == 401
    assert "not valid" in response.text
    assert COOKIE not in response.cookies


def test_sign_in_never_redirects_off_site(ui: TestClient, alice: Tenant) -> None:
    response = ui.post("/ui/login", data={"api_key": alice.token, "next": "//evil.example/x"})
    assert response.headers["location"] == "/ui/jobs"


def test_another_tenants_job_and_problem_are_404(
    ui: TestClient, engine: sa.Engine, tenants: Tenants, job: tuple[Tenant, int]
) -> None:
    owner, job_id = job
    sign_in(ui, tenants.new())
    pid = problem_id(engine, job_id, "kites")
    assert ui.get(f"/ui/jobs/{job_id}").status_code == 404
    assert ui.get(f"/ui/jobs/{job_id}/problems/{pid}").status_code == 404
    assert f"/ui/jobs/{job_id}" not in ui.get("/ui/jobs").text
    sign_in(ui, owner)
    assert ui.get(f"/ui/jobs/{job_id}/problems/{pid}").status_code == 200


def test_revoking_the_key_ends_the_session(
    ui: TestClient, engine: sa.Engine, job: tuple[Tenant, int]
) -> None:
    owner, _ = job
    sign_in(ui, owner)
    assert ui.get("/ui/jobs").status_code == 200
    with session_scope(engine) as session:
        key_id = session.scalar(sa.select(ApiKey.id).where(ApiKey.tenant == owner.name))
        assert key_id is not None
        revoke_key(session, key_id)
    assert ui.get("/ui/jobs").status_code == 303


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["kites", "apples", "coins"]),
        ("wrong=1", ["apples"]),
        ("unparsed=1", ["kites", "apples", "coins"]),
        ("q=jar", ["coins"]),
        ("q=APPLES", ["apples"]),
        ("q=kites", ["kites"]),
        ("q=100%25", []),
        ("wrong=1&q=kites", []),
    ],
)
def test_filters_and_search(
    ui: TestClient, job: tuple[Tenant, int], query: str, expected: list[str]
) -> None:
    owner, job_id = job
    sign_in(ui, owner)
    response = ui.get(f"/ui/jobs/{job_id}?{query}")
    assert response.status_code == 200
    assert shown_problems(response.text) == expected


def test_disagreement_filter(ui: TestClient, engine: sa.Engine, job: tuple[Tenant, int]) -> None:
    owner, job_id = job
    sign_in(ui, owner)
    assert shown_problems(ui.get(f"/ui/jobs/{job_id}?disagree=1").text) == []
    with session_scope(engine) as session:
        session.execute(
            sa.text(
                "UPDATE selections SET answer = '99' WHERE strategy = 'first' AND problem_id = :p"
            ),
            {"p": problem_id(engine, job_id, "coins")},
        )
    assert shown_problems(ui.get(f"/ui/jobs/{job_id}?disagree=1").text) == ["coins"]


def test_candidate_text_is_escaped(
    ui: TestClient, engine: sa.Engine, job: tuple[Tenant, int]
) -> None:
    owner, job_id = job
    pid = problem_id(engine, job_id, "kites")
    with session_scope(engine) as session:
        session.execute(
            sa.update(Candidate)
            .where(Candidate.problem_id == pid, Candidate.sample_index == 0)
            .values(text="<script>alert(1)</script> <<2+3=5>>5\n#### 5", token_scores=None)
        )
    sign_in(ui, owner)
    html = ui.get(f"/ui/jobs/{job_id}/problems/{pid}").text
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_values_that_do_not_match_the_tokens_leave_the_text_unshaded(
    ui: TestClient, engine: sa.Engine, job: tuple[Tenant, int]
) -> None:
    owner, job_id = job
    pid = problem_id(engine, job_id, "kites")
    with session_scope(engine) as session:
        session.execute(
            sa.update(Candidate)
            .where(Candidate.problem_id == pid)
            .values(token_scores=[0.5, 0.5, 0.5])
        )
    sign_in(ui, owner)
    html = ui.get(f"/ui/jobs/{job_id}/problems/{pid}").text
    assert 'class="tok v' not in html.split('class="candidates"')[1]
    assert "3 stored token values do not match" in html


def test_a_missing_tokenizer_is_a_note_not_an_error(
    ui: TestClient, engine: sa.Engine, job: tuple[Tenant, int]
) -> None:
    owner, job_id = job
    pid = problem_id(engine, job_id, "kites")
    with session_scope(engine) as session:
        session.execute(
            sa.update(Candidate).where(Candidate.problem_id == pid).values(verifier="gone-verifier")
        )
    sign_in(ui, owner)
    response = ui.get(f"/ui/jobs/{job_id}/problems/{pid}")
    assert response.status_code == 200
    assert "the verifier&#39;s tokenizer (gone-verifier) is not available" in response.text


@pytest.fixture(scope="module")
def real_token_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random token-level verifier, exported to ONNX as `verisolve models export` does."""
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.tiny import build_tiny_model
    from verisolve.modelstore.verifier_export import export_verifier

    root = tmp_path_factory.mktemp("real-token-verifier")
    hf = build_tiny_model(root / "hf", head="token-classification", seed=2)
    export_verifier(hf, root / "onnx", name="inspector-tiny-token", score_form="token")
    return root / "onnx"


def test_shading_lines_up_with_a_real_token_verifier(
    ui: TestClient, engine: sa.Engine, tenants: Tenants, real_token_verifier: Path
) -> None:
    from verisolve.inference.verifier import Verifier
    from verisolve.modelstore import registry
    from verisolve.modelstore.manifest import Manifest

    manifest = Manifest.load(real_token_verifier)
    with session_scope(engine) as session:
        registry.register(session, manifest, real_token_verifier)
    owner = tenants.new()
    scorer = Verifier.load(real_token_verifier)
    executor, job_id = new_job(
        engine, owner.name, manifest.name, real_token_verifier, scorer=scorer
    )
    executor.run(job_id)
    sign_in(ui, owner)
    html = ui.get(f"/ui/jobs/{job_id}/problems/{problem_id(engine, job_id, 'kites')}").text
    assert "do not match" not in html
    assert "not available" not in html
    cards = re.findall(r'data-score="([0-9.]+)">(.*?)</li>', html, re.S)
    assert len(cards) == 5
    for score, card in cards:
        values = [float(v) for v in re.findall(r'class="tok v\d" title="([0-9.]+)"', card)]
        assert len(values) > 5
        # The verifier reads its score at the last token: the last shaded token shows it.
        assert values[-1] == pytest.approx(float(score), abs=1e-3)


def test_errors_under_ui_are_pages_and_the_api_keeps_json(ui: TestClient, alice: Tenant) -> None:
    sign_in(ui, alice)
    bad = ui.get("/ui/jobs/1?page=0")
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("text/html")
    assert "page" in bad.text
    missing = ui.get("/ui/no-such-page")
    assert missing.status_code == 404
    assert "<h1>Not found</h1>" in missing.text
    api = ui.get("/v1/jobs/not-a-number", headers=alice.headers)
    assert api.status_code == 422
    assert api.headers["content-type"] == "application/json"
    assert ui.get("/v1/nothing-here").json()["detail"] == "Not Found"
