"""Schemathesis against the OpenAPI schema: no 5xx, and every response as documented."""

from __future__ import annotations

import json

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import Tenant
from services.submission.api import create_app
from services.submission.schemas import NDJSON
from verisolve.db import create_engine

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# schemathesis' own pytest plugin does not run under pytest 9 (it reads Function._nodeid), so
# the operations are listed here and each one is driven by hypothesis directly.
OPERATIONS = [
    (method.upper(), path)
    for path, methods in create_app(create_engine("sqlite://")).openapi()["paths"].items()
    for method in methods
]
PROBLEMS = b'{"id": "k", "question": "Kai has 4 cups and breaks 1. How many are left?"}\n'


@schemathesis.serializer(NDJSON)
def ndjson(_: schemathesis.SerializationContext, value: object) -> bytes:
    """The upload's lines, as the schema describes them (an array of problems)."""
    lines = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def own_jobs(client: TestClient, tenant: Tenant) -> list[int]:
    """A pending job with a problem, and a running one: generated cases also hit real jobs."""
    ids = [client.post("/v1/jobs", json={}, headers=tenant.headers).json()["id"] for _ in "ab"]
    for job_id in ids:
        client.post(f"/v1/jobs/{job_id}/problems", content=PROBLEMS, headers=tenant.headers)
    client.post(f"/v1/jobs/{ids[1]}/start", headers=tenant.headers)
    return ids


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_keeps_to_the_schema(
    engine: sa.Engine, alice: Tenant, method: str, path: str
) -> None:
    app = create_app(engine)
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    cases = operation.as_strategy()
    if "{job_id}" in path:
        with TestClient(app) as client:
            job_ids = st.sampled_from(own_jobs(client, alice))
        cases = st.one_of(cases, st.tuples(cases, job_ids).map(lambda pair: on_job(*pair)))

    @given(case=cases)
    @settings(
        max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=alice.headers, checks=CHECKS)

    conforms()


def on_job(case: schemathesis.Case, job_id: int) -> schemathesis.Case:
    case.path_parameters = {**(case.path_parameters or {}), "job_id": job_id}
    return case
