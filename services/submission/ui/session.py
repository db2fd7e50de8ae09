"""Browser sign-in for the inspector: an API key becomes a signed, expiring session cookie.

The cookie holds the key's id, its tenant and an expiry, signed with HMAC-SHA256 under the
configured `ui_secret` (a random one per process when unset). Every request checks the key is
still live, so revoking a key ends its browser sessions too. In local mode (`verisolve inspect`)
there is no sign-in: every request belongs to the one local tenant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, cast

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.submission.deps import SessionDep
from verisolve.tables import ApiKey

logger = logging.getLogger(__name__)

COOKIE = "verisolve_ui"
SESSION_SECONDS = 12 * 3600


class SignInRequiredError(Exception):
    """The request has no valid inspector session; the page redirects to the sign-in form."""


@dataclass(frozen=True)
class UiConfig:
    """How the inspector signs cookies, and the tenant of local mode (None: sign-in needed)."""

    secret: bytes
    local_tenant: str | None = None


def make_config(secret: str | None, local_tenant: str | None) -> UiConfig:
    """The inspector's configuration; a missing secret gets a random one for this process."""
    if secret:
        return UiConfig(secret.encode(), local_tenant)
    if local_tenant is None:
        logger.warning(
            "inspector: VERISOLVE_UI_SECRET is not set; browser sessions last only as long as "
            "this process and do not carry across workers"
        )
    return UiConfig(secrets.token_bytes(32), local_tenant)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def sign(config: UiConfig, key: ApiKey, now: float | None = None) -> str:
    """A cookie value for a signed-in key, valid for SESSION_SECONDS."""
    expires = int((now or time.time()) + SESSION_SECONDS)
    body = _b64(json.dumps({"k": key.id, "t": key.tenant, "e": expires}).encode())
    return f"{body}.{_signature(config.secret, body)}"


def unsign(config: UiConfig, value: str, now: float | None = None) -> tuple[int, str] | None:
    """(key id, tenant) of a genuine, unexpired cookie value, else None."""
    body, _, signature = value.partition(".")
    if not hmac.compare_digest(signature, _signature(config.secret, body)):
        return None
    try:
        data = json.loads(_unb64(body))
        key_id, tenant, expires = int(data["k"]), str(data["t"]), int(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    return (key_id, tenant) if expires > (now or time.time()) else None


def ui_config(request: Request) -> UiConfig:
    """The inspector configuration the app was mounted with."""
    return cast(UiConfig, request.app.state.ui_config)


def ui_tenant(request: Request, session: SessionDep) -> str:
    """The tenant of the browser session (or local mode); raises SignInRequiredError."""
    config = ui_config(request)
    if config.local_tenant is not None:
        return config.local_tenant
    claims = unsign(config, request.cookies.get(COOKIE, ""))
    if claims is None or not _key_live(session, *claims):
        raise SignInRequiredError
    return claims[1]


def _key_live(session: Session, key_id: int, tenant: str) -> bool:
    return (
        session.scalar(
            sa.select(ApiKey.id).where(
                ApiKey.id == key_id, ApiKey.tenant == tenant, ApiKey.revoked_at.is_(None)
            )
        )
        is not None
    )


UiTenantDep = Annotated[str, Depends(ui_tenant)]
