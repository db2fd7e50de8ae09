"""The submission service on each test database: its app, tenants with keys, cleanup."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from jobtools import register_fake
from services.submission.api import create_app
from verisolve.apikeys import create_key
from verisolve.db import session_scope
from verisolve.settings import get_settings
from verisolve.tables import ApiKey, Job, OutboxMessage, Problem


@dataclass(frozen=True)
class Tenant:
    """A tenant and the token of one of its keys."""

    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Tenants:
    """Makes tenants with keys; removes their jobs, outbox rows and keys afterwards."""

    engine: sa.Engine
    names: list[str] = field(default_factory=list)

    def new(self) -> Tenant:
        name = f"tenant-{uuid.uuid4().hex[:10]}"
        with session_scope(self.engine) as session:
            token = create_key(session, name).token
        self.names.append(name)
        return Tenant(name, token)

    def cleanup(self) -> None:
        with session_scope(self.engine) as session:
            problem_ids = sa.select(Problem.id).join(Job).where(Job.owner.in_(self.names))
            keys = [f"generate:{pid}" for pid in session.scalars(problem_ids)]
            for start in range(0, len(keys), 500):
                batch = keys[start : start + 500]
                session.execute(sa.delete(OutboxMessage).where(OutboxMessage.dedupe_key.in_(batch)))
            session.execute(sa.delete(Job).where(Job.owner.in_(self.names)))
            session.execute(sa.delete(ApiKey).where(ApiKey.tenant.in_(self.names)))


# Registered names the API tests use (no model files: the stages run on doubles).
GENERATORS = (get_settings().default_generator, "tiny")
VERIFIERS = ("v",)


@pytest.fixture(autouse=True)
def registered_models(engine: sa.Engine) -> None:
    """The models the tests name are in the registry, as they must be for a job to be made."""
    with session_scope(engine) as session:
        for name in GENERATORS:
            register_fake(session, name, "generator")
        for name in VERIFIERS:
            register_fake(session, name, "verifier")


@pytest.fixture
def tenants(engine: sa.Engine) -> Iterator[Tenants]:
    made = Tenants(engine)
    yield made
    made.cleanup()


@pytest.fixture
def alice(tenants: Tenants) -> Tenant:
    return tenants.new()


@pytest.fixture
def client(engine: sa.Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine)) as test_client:
        yield test_client
