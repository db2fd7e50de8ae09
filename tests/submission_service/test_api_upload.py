"""Bad uploads: every bad line named with its file line number, and nothing of them stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Tenant
from services.submission.api import create_app
from verisolve.settings import Settings
from verisolve.tables import Job, Problem

GOOD = '{"id": "a", "question": "Lea reads 5 pages a day. How many pages in 3 days?", "answer": 15}'
BAD_LINES = [
    (2, None, '{"question": "Unclosed'),
    (3, "qustion", '{"qustion": "A typo in the field name"}'),
    (5, "answer", '{"question": "What is 1 + 1?", "answer": "two"}'),
    (6, "id", '{"id": "a", "question": "Same id as the first line"}'),
    (7, None, "[1, 2]"),
]


def new_job(client: TestClient, tenant: Tenant) -> int:
    job_id: int = client.post("/v1/jobs", json={}, headers=tenant.headers).json()["id"]
    return job_id


def post(
    client: TestClient, tenant: Tenant, job_id: int, body: bytes, **params: int
) -> httpx.Response:
    return client.post(
        f"/v1/jobs/{job_id}/problems", content=body, params=params, headers=tenant.headers
    )


def stored(engine: sa.Engine, job_id: int) -> tuple[int, int]:
    """(problem rows, the job's counter)."""
    with engine.connect() as conn:
        rows = conn.scalar(sa.select(sa.func.count()).where(Problem.job_id == job_id))
        counter = conn.scalar(sa.select(Job.n_problems).where(Job.id == job_id))
    return int(rows or 0), int(counter or 0)


def test_every_bad_line_is_reported_and_nothing_is_stored(
    client: TestClient, alice: Tenant, engine: sa.Engine
) -> None:
    job_id = new_job(client, alice)
    lines = [
        GOOD,
        BAD_LINES[0][2],
        BAD_LINES[1][2],
        "",
        BAD_LINES[2][2],
        *(b[2] for b in BAD_LINES[3:]),
    ]
    response = post(client, alice, job_id, "\n".join(lines).encode(), line_offset=100)
    assert response.status_code == 422
    body = response.json()
    assert body["n_errors"] == len(BAD_LINES)
    assert [(e["line"], e["field"]) for e in body["errors"]] == [
        (100 + line, field) for line, field, _ in BAD_LINES
    ]
    assert "line 101" in body["errors"][3]["reason"]  # the duplicate names the first line
    assert stored(engine, job_id) == (0, 0)


def test_a_rejected_chunk_leaves_earlier_chunks_and_nothing_of_itself(
    client: TestClient, alice: Tenant, engine: sa.Engine
) -> None:
    job_id = new_job(client, alice)
    assert post(client, alice, job_id, GOOD.encode()).status_code == 200
    chunk = '{"id": "b", "question": "Fine on its own?"}\n{"id": 3.5, "question": "Bad id"}\n'
    response = post(client, alice, job_id, chunk.encode(), line_offset=1)
    assert response.status_code == 422
    assert response.json()["errors"][0]["line"] == 3
    assert stored(engine, job_id) == (1, 1)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "a", "question": "Another question under an old id"}', "another question"),
        (GOOD, "already the id of line 1"),  # the same problem on another line: a duplicate
    ],
)
def test_an_id_stored_before_cannot_change(
    client: TestClient, alice: Tenant, engine: sa.Engine, line: str, reason: str
) -> None:
    job_id = new_job(client, alice)
    post(client, alice, job_id, GOOD.encode())
    offset = 0 if "Another" in line else 9
    response = post(client, alice, job_id, line.encode(), line_offset=offset)
    assert response.status_code == 422
    assert reason in response.json()["errors"][0]["reason"]
    assert stored(engine, job_id) == (1, 1)


def test_dry_run_validates_without_storing(
    client: TestClient, alice: Tenant, engine: sa.Engine
) -> None:
    job_id = new_job(client, alice)
    result = post(client, alice, job_id, GOOD.encode(), dry_run=True).json()
    assert (result["received"], result["stored"], result["dry_run"]) == (1, 0, True)
    assert stored(engine, job_id) == (0, 0)


@pytest.fixture
def small_client(engine: sa.Engine) -> Iterator[TestClient]:
    settings = Settings(max_upload_bytes=2000, max_question_chars=60)
    with TestClient(create_app(engine, settings)) as test_client:
        yield test_client


def test_a_body_over_the_limit_gets_413(small_client: TestClient, alice: Tenant) -> None:
    job_id = new_job(small_client, alice)
    line = json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n"
    body = (line * 100).encode()
    declared = post(small_client, alice, job_id, body)
    assert declared.status_code == 413
    assert "2,000 bytes" in declared.json()["detail"]

    def streamed() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield line.encode()

    response = small_client.post(
        f"/v1/jobs/{job_id}/problems", content=streamed(), headers=alice.headers
    )
    assert response.status_code == 413
    assert post(small_client, alice, job_id, line.encode()).status_code == 200


def test_a_question_over_the_limit_is_a_bad_line(small_client: TestClient, alice: Tenant) -> None:
    job_id = new_job(small_client, alice)
    body = json.dumps({"question": "How many? " * 10}).encode()
    error = post(small_client, alice, job_id, body).json()["errors"][0]
    assert (error["line"], error["field"]) == (1, "question")
    assert "over the limit of 60" in error["reason"]
