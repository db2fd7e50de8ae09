"""API keys: 401 without a valid one; a tenant sees only its own jobs (404 for another's)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Tenant, Tenants
from services.submission.api import create_app
from verisolve.apikeys import revoke_key
from verisolve.db import create_engine, session_scope
from verisolve.tables import ApiKey

PROBLEM = b'{"question": "Tom has 2 kites and makes 3 more. How many kites?", "answer": 5}\n'
JOB_ENDPOINTS = [
    ("GET", "/v1/jobs/{id}"),
    ("POST", "/v1/jobs/{id}/problems"),
    ("POST", "/v1/jobs/{id}/start"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("GET", "/v1/jobs/{id}/answers"),
    ("GET", "/v1/jobs/{id}/candidates"),
]
EVERY_ENDPOINT = [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), *JOB_ENDPOINTS]


def call(
    client: TestClient, method: str, path: str, job_id: int, headers: dict[str, str]
) -> httpx.Response:
    body = PROBLEM if path.endswith("/problems") else None
    json_body: dict[str, object] | None = {} if (method, path) == ("POST", "/v1/jobs") else None
    return client.request(
        method, path.format(id=job_id), headers=headers, content=body, json=json_body
    )


@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer vs_not-a-key-anyone-was-given"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "other-scheme", "empty"],
)
def test_no_valid_key_gets_401(
    client: TestClient, alice: Tenant, method: str, path: str, headers: dict[str, str]
) -> None:
    job_id = client.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    response = call(client, method, path, job_id, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"]


def test_a_revoked_key_gets_401(client: TestClient, alice: Tenant, engine: sa.Engine) -> None:
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    with session_scope(engine) as session:
        key_id = session.scalars(sa.select(ApiKey.id).where(ApiKey.tenant == alice.name)).one()
        revoke_key(session, key_id)
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 401


@pytest.mark.parametrize(("method", "path"), JOB_ENDPOINTS)
def test_another_tenants_job_is_not_found(
    client: TestClient, tenants: Tenants, method: str, path: str
) -> None:
    alice, bob = tenants.new(), tenants.new()
    job_id = client.post("/v1/jobs", json={}, headers=alice.headers).json()["id"]
    response = call(client, method, path, job_id, bob.headers)
    assert response.status_code == 404
    assert response.json()["detail"] == f"no job {job_id}"
    listed = client.get("/v1/jobs", headers=bob.headers).json()["jobs"]
    assert job_id not in [j["id"] for j in listed]
    mine = call(client, method, path, job_id, alice.headers)
    assert mine.status_code != 404


def test_health_and_readiness_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_readiness_fails_on_a_database_without_the_schema(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with TestClient(create_app(engine)) as client:
        response = client.get("/readyz")
    engine.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database_revision"] is None
    assert "verisolve db upgrade" in body["detail"]


def test_readiness_fails_when_the_database_is_unreachable() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    with TestClient(create_app(engine)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]
