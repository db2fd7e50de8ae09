"""Concurrent clients against a real server (threads, uvicorn on 127.0.0.1), on both backends."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa

from conftest import Tenant
from live_api import live_api
from verisolve.db import session_scope
from verisolve.settings import Settings
from verisolve.tables import Job, Problem

CLIENTS = 8
T = TypeVar("T")


@pytest.fixture
def base_url(engine: sa.Engine) -> Iterator[str]:
    with live_api(engine) as url:
        yield url


def together(count: int, call: Callable[[int], T]) -> list[T]:
    """Run `call(i)` in `count` threads released at the same moment; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def chunk(first: int, lines: int) -> bytes:
    return b"".join(
        json.dumps({"id": f"p{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}).encode()
        + b"\n"
        for i in range(first, first + lines)
    )


def create(base_url: str, tenant: Tenant, **body: object) -> httpx.Response:
    with httpx.Client(base_url=base_url, headers=tenant.headers, timeout=60) as client:
        return client.post("/v1/jobs", json={"n_samples": 2, **body})


def upload(base_url: str, tenant: Tenant, job_id: int, body: bytes, offset: int) -> httpx.Response:
    with httpx.Client(base_url=base_url, headers=tenant.headers, timeout=60) as client:
        return client.post(
            f"/v1/jobs/{job_id}/problems", content=body, params={"line_offset": offset}
        )


def counts(engine: sa.Engine, job_id: int) -> tuple[int, int]:
    """(the job's n_problems, the problem rows it really has)."""
    with session_scope(engine) as session:
        n_problems = session.get_one(Job, job_id).n_problems
        rows = session.scalar(
            sa.select(sa.func.count()).select_from(Problem).where(Problem.job_id == job_id)
        )
    return n_problems, int(rows or 0)


def test_concurrent_disjoint_uploads_are_all_counted(
    base_url: str, engine: sa.Engine, alice: Tenant
) -> None:
    job_id = create(base_url, alice).json()["id"]
    responses = together(
        CLIENTS, lambda i: upload(base_url, alice, job_id, chunk(100 * i, 100), 100 * i)
    )
    assert [r.status_code for r in responses] == [200] * CLIENTS
    assert sum(r.json()["stored"] for r in responses) == 100 * CLIENTS
    assert counts(engine, job_id) == (100 * CLIENTS, 100 * CLIENTS)


def test_concurrent_uploads_of_one_chunk_store_it_once_and_never_fail(
    base_url: str, engine: sa.Engine, alice: Tenant
) -> None:
    job_id = create(base_url, alice).json()["id"]
    responses = together(CLIENTS, lambda _: upload(base_url, alice, job_id, chunk(0, 100), 0))
    assert [r.status_code for r in responses] == [200] * CLIENTS, [r.text for r in responses]
    assert sum(r.json()["stored"] for r in responses) == 100
    assert sum(r.json()["skipped"] for r in responses) == 100 * (CLIENTS - 1)
    assert {r.json()["n_problems"] for r in responses} == {100}
    assert counts(engine, job_id) == (100, 100)


def test_concurrent_creates_with_one_idempotency_key_make_one_job(
    base_url: str, engine: sa.Engine, alice: Tenant
) -> None:
    responses = together(CLIENTS, lambda _: create(base_url, alice, idempotency_key="race-1"))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * (CLIENTS - 1) + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    with session_scope(engine) as session:
        made = session.scalar(
            sa.select(sa.func.count()).select_from(Job).where(Job.owner == alice.name)
        )
    assert made == 1


def test_a_racing_create_with_other_parameters_is_a_conflict(
    base_url: str, engine: sa.Engine, alice: Tenant
) -> None:
    responses = together(
        CLIENTS, lambda i: create(base_url, alice, idempotency_key="race-2", seed=i % 2)
    )
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 201, 409}
    assert codes.count(201) == 1
    winner = next(r for r in responses if r.status_code == 201).json()
    for response in responses:
        if response.status_code == 200:
            assert response.json()["id"] == winner["id"]
        elif response.status_code == 409:
            assert "seed differs" in response.json()["detail"]


def test_concurrent_creates_keep_to_the_tenants_job_limit(engine: sa.Engine, alice: Tenant) -> None:
    with live_api(engine, Settings(max_active_jobs=3)) as url:
        responses = together(CLIENTS, lambda _: create(url, alice))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 3 + [422] * (CLIENTS - 3), [r.text for r in responses]
    with session_scope(engine) as session:
        made = session.scalar(
            sa.select(sa.func.count()).select_from(Job).where(Job.owner == alice.name)
        )
    assert made == 3
