"""API keys: issued once, stored as a sha256 digest, looked up by that digest.

A token is `vs_` and 43 URL-safe characters (32 random bytes). Only its digest is stored, so a
leaked database gives no usable key; a lookup by digest needs no secret comparison in Python.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from verisolve.db.base import utcnow
from verisolve.tables import ApiKey

TOKEN_PREFIX = "vs_"
SHOWN_CHARS = 8  # of the token, kept in clear so keys can be told apart
MAX_TENANT_CHARS = 128  # the width of jobs.owner and api_keys.tenant


class ApiKeyError(ValueError):
    """A key request that cannot be carried out (bad tenant, unknown key)."""


@dataclass(frozen=True)
class IssuedKey:
    """A new key: its row, and the token, which is shown once."""

    key: ApiKey
    token: str


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_tenant(tenant: str) -> str:
    """A tenant name as stored; raises ApiKeyError when it is empty or too long."""
    tenant = tenant.strip()
    if not tenant:
        raise ApiKeyError("the tenant name is empty")
    if len(tenant) > MAX_TENANT_CHARS:
        raise ApiKeyError(f"the tenant name is over {MAX_TENANT_CHARS} characters")
    return tenant


def create_key(session: Session, tenant: str, name: str = "") -> IssuedKey:
    """Issue a key for a tenant; flushed, not committed."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        tenant=check_tenant(tenant),
        name=name,
        prefix=token[: len(TOKEN_PREFIX) + SHOWN_CHARS],
        key_hash=digest(token),
    )
    session.add(key)
    session.flush()
    return IssuedKey(key, token)


def authenticate(session: Session, token: str) -> ApiKey | None:
    """The live key a token stands for, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return session.scalars(
        sa.select(ApiKey).where(ApiKey.key_hash == digest(token), ApiKey.revoked_at.is_(None))
    ).first()


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    """Every key (of one tenant, when given), oldest first."""
    query = sa.select(ApiKey).order_by(ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list(session.scalars(query))


def revoke_key(session: Session, key_id: int) -> ApiKey:
    """Revoke a key by id (again is a no-op); raises ApiKeyError for an unknown id."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise ApiKeyError(f"no API key with id {key_id}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key
