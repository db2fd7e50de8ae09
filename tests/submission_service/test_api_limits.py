"""What a job may ask for: registered model names only, within the service's limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Tenant
from services.submission.api import create_app
from verisolve.db import session_scope
from verisolve.settings import Settings
from verisolve.tables import Problem

LIMITED = Settings(
    max_samples=100,
    max_new_tokens=512,
    max_sample_tokens=10_000,
    max_problems_per_job=3,
    max_active_jobs=2,
)


@pytest.fixture
def limited(engine: sa.Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, LIMITED)) as test_client:
        yield test_client


def refusal(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"generator": "../../etc/passwd"}, "generator", "is not a model name"),
        ({"generator": "/etc"}, "generator", "is not a model name"),
        ({"generator": "~"}, "generator", "is not a model name"),
        ({"generator": " "}, "generator", "is not a model name"),
        ({"generator": "not-registered"}, "generator", "no generator 'not-registered'"),
        ({"generator": "v"}, "generator", "no generator 'v' is registered"),  # a verifier
        ({"verifier": "../v"}, "verifier", "is not a model name"),
        ({"verifier": "tiny"}, "verifier", "no verifier 'tiny' is registered"),  # a generator
    ],
)
def test_models_are_registered_names_and_nothing_else(
    client: TestClient, alice: Tenant, body: dict[str, str], field: str, reason: str
) -> None:
    answer = refusal(client, alice, **body)
    assert answer["errors"][0]["field"] == field
    assert reason in answer["detail"]
    # The tenant learns nothing beyond its own request: no other model is named.
    for other in ("smollm2-135m-instruct", "tiny", "v"):
        if other not in body.values():
            assert f"'{other}'" not in answer["detail"]


@pytest.mark.parametrize(
    ("body", "field", "setting"),
    [
        ({"n_samples": 101}, "n_samples", "VERISOLVE_MAX_SAMPLES"),
        ({"max_new_tokens": 513}, "max_new_tokens", "VERISOLVE_MAX_NEW_TOKENS"),
        ({"n_samples": 100, "max_new_tokens": 101}, "n_samples", "VERISOLVE_MAX_SAMPLE_TOKENS"),
        ({"n_samples": 10_000, "max_new_tokens": 1_000_000}, "n_samples", "VERISOLVE_MAX_SAMPLES"),
    ],
)
def test_sampling_over_a_limit_is_refused_naming_it(
    limited: TestClient, alice: Tenant, body: dict[str, int], field: str, setting: str
) -> None:
    answer = refusal(limited, alice, **body)
    assert answer["errors"][0]["field"] == field
    assert setting in answer["detail"]
    at_limit = {"n_samples": 100, "max_new_tokens": 100}
    assert limited.post("/v1/jobs", json=at_limit, headers=alice.headers).is_success


def test_problems_over_the_job_limit_are_refused_whole(
    limited: TestClient, alice: Tenant, engine: sa.Engine
) -> None:
    job_id = limited.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    lines = b"".join(b'{"question": "What is %d + 1?"}\n' % i for i in range(4))
    url = f"/v1/jobs/{job_id}/problems"
    response = limited.post(url, content=lines, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "problems"
    assert "VERISOLVE_MAX_PROBLEMS_PER_JOB" in response.json()["detail"]
    with session_scope(engine) as session:
        stored = session.scalar(sa.select(sa.func.count()).where(Problem.job_id == job_id))
    assert stored == 0
    three = b"".join(lines.splitlines(keepends=True)[:3])
    assert limited.post(url, content=three, headers=alice.headers).is_success


def test_a_tenant_has_at_most_so_many_unfinished_jobs(
    limited: TestClient, alice: Tenant, tenants: Any
) -> None:
    ids = [limited.post("/v1/jobs", json={}, headers=alice.headers).json()["id"] for _ in "ab"]
    answer = refusal(limited, alice)
    assert answer["errors"][0]["field"] == "jobs"
    assert "VERISOLVE_MAX_ACTIVE_JOBS" in answer["detail"]
    bob = tenants.new()  # another tenant is not held back
    assert limited.post("/v1/jobs", json={}, headers=bob.headers).status_code == 201
    limited.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice.headers)
    assert limited.post("/v1/jobs", json={}, headers=alice.headers).status_code == 201


@pytest.mark.parametrize(
    ("written", "stored"),
    [(b"1e2", "100"), (b"1.5E3", "1500"), (b"0.0000001", "0.0000001"), (b"-2.50e-1", "-0.25")],
)
def test_an_answer_is_a_json_number_in_any_form(
    client: TestClient, alice: Tenant, engine: sa.Engine, written: bytes, stored: str
) -> None:
    job_id = client.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    line = b'{"id": "n", "question": "How many?", "answer": ' + written + b"}\n"
    response = client.post(f"/v1/jobs/{job_id}/problems", content=line, headers=alice.headers)
    assert response.status_code == 200, response.text
    with session_scope(engine) as session:
        gold = session.scalar(sa.select(Problem.gold).where(Problem.job_id == job_id))
    assert gold == stored


@pytest.mark.parametrize(
    ("content", "headers", "field"),
    [
        (b"", {}, "body"),  # an upload with no problem
        (b"\n  \n", {}, "body"),
    ],
)
def test_an_upload_without_problems_is_refused(
    client: TestClient, alice: Tenant, content: bytes, headers: dict[str, str], field: str
) -> None:
    job_id = client.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    response = client.post(
        f"/v1/jobs/{job_id}/problems", content=content, headers={**alice.headers, **headers}
    )
    assert response.status_code == 422
    assert "holds no problem" in response.json()["errors"][0]["reason"]


@pytest.mark.parametrize(
    "content",
    [b"{bad", b"\xff\xfe{}", b'{"n_samples": true}', b'{"n_samples": "3"}', b"[]"],
)
def test_a_body_that_is_not_a_job_is_a_documented_422(
    client: TestClient, alice: Tenant, content: bytes
) -> None:
    headers = {**alice.headers, "Content-Type": "application/json"}
    response = client.post("/v1/jobs", content=content, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_405_names_every_method_of_the_path(client: TestClient, alice: Tenant) -> None:
    response = client.options("/v1/jobs", headers=alice.headers)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


def test_an_unknown_query_parameter_is_refused(client: TestClient, alice: Tenant) -> None:
    response = client.get("/v1/jobs", params={"limt": 5}, headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.limt"


def test_the_schema_lists_the_registered_models_and_the_limits(limited: TestClient) -> None:
    job = limited.get("/openapi.json").json()["components"]["schemas"]["JobCreate"]
    generator = job["properties"]["generator"]["anyOf"][0]
    assert "tiny" in generator["enum"]
    assert "v" not in generator["enum"]
    assert job["properties"]["n_samples"]["maximum"] == 100
    assert job["properties"]["max_new_tokens"]["maximum"] == 512


def test_a_unique_key_conflict_is_a_409_not_a_500(
    client: TestClient, alice: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.submission import ingest

    def lost_a_race(*_: object, **__: object) -> None:
        raise sa.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(ingest, "store_chunk", lost_a_race)
    job_id = client.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    line = b'{"question": "How many?"}\n'
    response = client.post(f"/v1/jobs/{job_id}/problems", content=line, headers=alice.headers)
    assert response.status_code == 409
    assert "retry" in response.json()["detail"]
