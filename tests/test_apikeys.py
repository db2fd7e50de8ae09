"""API keys: shown once, stored as a digest, found by it; revoked keys stop working."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from verisolve.apikeys import (
    ApiKeyError,
    authenticate,
    create_key,
    digest,
    list_keys,
    revoke_key,
)


def test_a_new_key_authenticates_as_its_tenant(session: Session) -> None:
    issued = create_key(session, "  acme ", "ci")
    assert issued.token.startswith("vs_")
    assert len(issued.token) == 3 + 43
    assert issued.key.key_hash == digest(issued.token) != issued.token
    assert issued.token.startswith(issued.key.prefix)
    assert len(issued.key.prefix) == 11
    found = authenticate(session, issued.token)
    assert found is not None
    assert found.tenant == "acme"
    assert found.name == "ci"


@pytest.mark.parametrize(
    "token", ["", "vs_", "vs_wrong", "not-even-the-prefix", "vs_\udcff", "vs_" + "A" * 43]
)
def test_a_token_nobody_was_given_authenticates_nobody(session: Session, token: str) -> None:
    create_key(session, "acme")
    assert authenticate(session, token) is None


def test_two_keys_differ_and_revoking_one_leaves_the_other(session: Session) -> None:
    first, second = create_key(session, "acme"), create_key(session, "acme")
    assert first.token != second.token
    revoked = revoke_key(session, first.key.id)
    assert revoked.revoked_at is not None
    assert revoke_key(session, first.key.id).revoked_at == revoked.revoked_at
    assert authenticate(session, first.token) is None
    assert authenticate(session, second.token) is not None


def test_list_keys_by_tenant(session: Session) -> None:
    mine = [create_key(session, "tenant-list-a").key.id for _ in range(2)]
    create_key(session, "tenant-list-b")
    assert [k.id for k in list_keys(session, "tenant-list-a")] == mine


@pytest.mark.parametrize("tenant", ["", "   ", "x" * 129])
def test_a_bad_tenant_name_is_refused(session: Session, tenant: str) -> None:
    with pytest.raises(ApiKeyError):
        create_key(session, tenant)


def test_revoking_an_unknown_key_is_an_error(session: Session) -> None:
    with pytest.raises(ApiKeyError, match="no API key with id"):
        revoke_key(session, 2**31 - 1)
