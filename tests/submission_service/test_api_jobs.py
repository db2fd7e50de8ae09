"""Jobs through the API: create, upload, start, status, answers and candidates, cancel, list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Tenant
from verisolve.executors.inline import InlineExecutor
from verisolve.pipeline.stages import CandidateScorer, GeneratedCandidate, SamplingRequest
from verisolve.tables import OutboxMessage, Problem

PROBLEMS = [
    {"id": "pens", "question": "Mia has 3 pens and buys 4 more. How many pens?", "answer": "7"},
    {"id": "eggs", "question": "A box holds 6 eggs. How many eggs in 2 boxes?", "answer": "12"},
    {"id": "free", "question": "Name a number bigger than 10."},
]
# What the generator double writes for each question, sample after sample (cycled).
SAMPLES = {
    PROBLEMS[0]["question"]: ["7", "8", "7"],
    PROBLEMS[1]["question"]: ["11", "12", "12"],
    PROBLEMS[2]["question"]: ["20"],
}


class CyclingGenerator:
    """A generator double: `#### <answer>` from a list per question."""

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        answers = SAMPLES[request.question]
        return [
            GeneratedCandidate(i, f"Some steps.\n#### {answers[i % len(answers)]}", 4, "answer")
            for i in range(request.sampling.n)
        ]


def no_verifier(name: str) -> CandidateScorer:
    raise AssertionError(f"these jobs have no verifier, yet {name!r} was asked for")


def ndjson(rows: Sequence[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def new_job(client: TestClient, tenant: Tenant, **params: object) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"n_samples": 3, **params}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def upload(
    client: TestClient, tenant: Tenant, job_id: int, body: bytes, **params: int
) -> httpx.Response:
    return client.post(
        f"/v1/jobs/{job_id}/problems", content=body, params=params, headers=tenant.headers
    )


def test_a_job_from_creation_to_answers(
    client: TestClient, alice: Tenant, engine: sa.Engine
) -> None:
    job = new_job(client, alice, name="round trip", generator="tiny")
    assert job["status"] == "pending"
    assert job["strategy"] == "majority"
    uploaded = upload(client, alice, job["id"], ndjson(PROBLEMS)).json()
    assert uploaded == {"received": 3, "stored": 3, "skipped": 0, "n_problems": 3, "dry_run": False}

    started = client.post(f"/v1/jobs/{job['id']}/start", headers=alice.headers)
    assert started.status_code == 200
    assert started.json()["status"] == "running"
    with engine.connect() as conn:
        ids = conn.scalars(sa.select(Problem.id).where(Problem.job_id == job["id"])).all()
        queued = conn.scalars(
            sa.select(OutboxMessage.dedupe_key).where(
                OutboxMessage.dedupe_key.in_([f"generate:{i}" for i in ids])
            )
        ).all()
    assert sorted(queued) == sorted(f"generate:{i}" for i in ids)

    status = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()
    assert status["progress"] == {"pending": 3, "generated": 0, "scored": 0, "done": 0, "failed": 0}
    assert status["metrics"] is None

    InlineExecutor(engine, lambda _: CyclingGenerator(), no_verifier).run(job["id"])

    status = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()
    assert status["status"] == "done"
    assert status["progress"]["done"] == 3
    assert status["metrics"]["strategies"]["majority"] == 1.0
    answers = client.get(f"/v1/jobs/{job['id']}/answers", headers=alice.headers)
    assert answers.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in answers.text.splitlines()]
    assert [(r["id"], r["answer"]) for r in rows] == [("pens", "7"), ("eggs", "12"), ("free", "20")]
    candidates = client.get(f"/v1/jobs/{job['id']}/candidates", headers=alice.headers)
    rows = [json.loads(line) for line in candidates.text.splitlines()]
    assert len(rows) == 9
    assert [(r["id"], r["sample_index"], r["answer"]) for r in rows[:3]] == [
        ("pens", 0, "7"),
        ("pens", 1, "8"),
        ("pens", 2, "7"),
    ]


def test_uploads_in_chunks_number_lines_as_the_file_does(client: TestClient, alice: Tenant) -> None:
    job = new_job(client, alice)
    lines = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(1, 7)]
    for offset in (0, 3):
        chunk = ndjson(lines[offset : offset + 3])
        assert upload(client, alice, job["id"], chunk, line_offset=offset).json()["stored"] == 3
    again = upload(client, alice, job["id"], ndjson(lines[3:]), line_offset=3).json()
    assert (again["stored"], again["skipped"], again["n_problems"]) == (0, 3, 6)
    client.post(f"/v1/jobs/{job['id']}/start", headers=alice.headers)
    answers = client.get(f"/v1/jobs/{job['id']}/answers", headers=alice.headers).text
    # Lines without an id take their line number in the whole file.
    assert [json.loads(line)["id"] for line in answers.splitlines()] == list("123456")


def test_idempotency_key_returns_the_same_job(client: TestClient, alice: Tenant) -> None:
    params = {"n_samples": 2, "idempotency_key": "file-digest-1"}
    first = client.post("/v1/jobs", json=params, headers=alice.headers)
    second = client.post("/v1/jobs", json=params, headers=alice.headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    other = client.post("/v1/jobs", json={**params, "n_samples": 5}, headers=alice.headers)
    assert other.status_code == 409
    assert "n_samples" in other.json()["detail"]
    # A cancelled job frees its key: the same request again is a new job.
    client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=alice.headers)
    again = client.post("/v1/jobs", json=params, headers=alice.headers)
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_samples": 0}, "body.n_samples"),
        ({"top_p": 0}, "body.top_p"),
        ({"strategy": "best-guess"}, "body.strategy"),
        ({"temperture": 1.0}, "body.temperture"),
        ({"generator": "bad\u0000name"}, "body.generator"),
    ],
)
def test_bad_parameters_are_named(
    client: TestClient, alice: Tenant, params: dict[str, object], field: str
) -> None:
    response = client.post("/v1/jobs", json=params, headers=alice.headers)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_a_strategy_that_needs_a_verifier_is_refused(client: TestClient, alice: Tenant) -> None:
    response = client.post("/v1/jobs", json={"strategy": "verifier"}, headers=alice.headers)
    assert response.status_code == 422
    assert "needs a verifier" in response.json()["detail"]


def test_start_cancel_and_upload_follow_the_job_state(client: TestClient, alice: Tenant) -> None:
    job = new_job(client, alice)
    empty = client.post(f"/v1/jobs/{job['id']}/start", headers=alice.headers)
    assert empty.status_code == 409
    assert "no problems" in empty.json()["detail"]
    upload(client, alice, job["id"], ndjson(PROBLEMS[:1]))
    assert client.post(f"/v1/jobs/{job['id']}/start", headers=alice.headers).status_code == 200
    assert client.post(f"/v1/jobs/{job['id']}/start", headers=alice.headers).status_code == 200
    late = upload(client, alice, job["id"], ndjson(PROBLEMS[1:]))
    assert late.status_code == 409
    assert "running" in late.json()["detail"]
    for _ in range(2):
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
    restart = client.post(f"/v1/jobs/{job['id']}/start", headers=alice.headers)
    assert restart.status_code == 409


def test_list_pages_through_a_tenants_jobs(client: TestClient, alice: Tenant) -> None:
    ids = [new_job(client, alice)["id"] for _ in range(3)]
    first = client.get("/v1/jobs", params={"limit": 2}, headers=alice.headers).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    rest = client.get(
        "/v1/jobs", params={"limit": 2, "before": first["next_before"]}, headers=alice.headers
    ).json()
    assert [j["id"] for j in rest["jobs"]] == ids[:1]
    assert rest["next_before"] is None
    running = client.get("/v1/jobs", params={"status": "running"}, headers=alice.headers).json()
    assert running["jobs"] == []
