"""Schemathesis against the running service, every check on: the schema says what it does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from conftest import Tenant
from live_api import live_api
from services.submission.api import create_app
from services.submission.schemas import NDJSON
from verisolve.db import create_engine
from verisolve.settings import Settings

# Per operation and generation mode; 9 operations x 2 modes x 2 backends stay near a minute.
EXAMPLES = 25
# Quotas are the state of a tenant, not the shape of a request, and n_samples x max_new_tokens
# is a rule between two fields that JSON Schema cannot state: both are tested on their own
# (test_api_limits.py), and set out of reach here so that valid requests are all accepted.
SERVICE = Settings(max_active_jobs=1_000_000, max_sample_tokens=1000 * 2048)
# Every check runs on every operation, with one exception: an upload's lines have rules JSON
# Schema cannot state (ids unique across lines, an answer string that parses as a number), so
# a valid-looking chunk may be refused with 422 naming the line; test_api_upload.py tests those.
RULES_BEYOND_SCHEMA = {("POST", "/v1/jobs/{job_id}/problems"): [positive_data_acceptance]}
# schemathesis' own pytest plugin does not run under pytest 9 (it reads Function._nodeid), so
# the operations are listed here and each one is driven by hypothesis directly.
OPERATIONS = [
    (method.upper(), path)
    for path, methods in FastAPI.openapi(create_app(create_engine("sqlite://")))["paths"].items()
    for method in methods
]
PROBLEMS = b'{"id": "k", "question": "Kai has 4 cups and breaks 1. How many are left?"}\n'


@schemathesis.serializer(NDJSON)
def ndjson(_: schemathesis.SerializationContext, value: object) -> bytes:
    """The upload's lines, as the schema describes them (an array of problems)."""
    lines = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


@pytest.fixture
def base_url(engine: sa.Engine) -> Iterator[str]:
    with live_api(engine, SERVICE) as url:
        yield url


def own_jobs(base_url: str, tenant: Tenant) -> list[int]:
    """A pending job with a problem, and a running one: generated cases also hit real jobs."""
    with httpx.Client(base_url=base_url, headers=tenant.headers) as client:
        ids = [client.post("/v1/jobs", json={}).json()["id"] for _ in "ab"]
        for job_id in ids:
            client.post(f"/v1/jobs/{job_id}/problems", content=PROBLEMS)
        client.post(f"/v1/jobs/{ids[1]}/start")
    return ids


def negative(case: schemathesis.Case, location: ParameterLocation) -> bool:
    """Whether schemathesis made this part of the request invalid on purpose."""
    info = case.meta.components.get(location) if case.meta else None
    return info is not None and info.mode.is_negative


def on_job(case: schemathesis.Case, job_id: int) -> schemathesis.Case:
    """The case on one of the tenant's jobs (unless its path is meant to be invalid)."""
    if not negative(case, ParameterLocation.PATH):
        case.path_parameters = {**(case.path_parameters or {}), "job_id": job_id}
    return case


def as_tenant(case: schemathesis.Case, tenant: Tenant) -> schemathesis.Case:
    """The case with the tenant's key (unless its headers are meant to be invalid)."""
    if not negative(case, ParameterLocation.HEADER):
        case.headers = {**(case.headers or {}), **tenant.headers}
    return case


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_keeps_to_the_schema(
    base_url: str, alice: Tenant, method: str, path: str
) -> None:
    operation = schemathesis.openapi.from_url(f"{base_url}/openapi.json")[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    if "{job_id}" in path:
        job_ids = st.sampled_from(own_jobs(base_url, alice))
        cases = st.one_of(cases, st.tuples(cases, job_ids).map(lambda pair: on_job(*pair)))

    @given(case=cases)
    @settings(
        max_examples=2 * EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases in every run: a failure in CI is one to reproduce
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: schemathesis.Case) -> None:
        excluded = RULES_BEYOND_SCHEMA.get((method, path))
        as_tenant(case, alice).call_and_validate(base_url=base_url, excluded_checks=excluded)

    conforms()
