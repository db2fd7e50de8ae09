"""API-key authentication: a bearer token names a live key, and the key names the tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.submission.deps import SessionDep
from verisolve.apikeys import authenticate

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="vs_…",
    description="An API key from `verisolve keys create --tenant T`.",
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def current_tenant(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The tenant of the request's API key; 401 when the key is missing, wrong or revoked."""
    if credentials is None:
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    key = authenticate(session, credentials.credentials)
    if key is None:
        raise _unauthorized("the API key is not valid (unknown or revoked)")
    return key.tenant


TenantDep = Annotated[str, Depends(current_tenant)]
