"""Request dependencies: the engine and settings of the app, and one session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, cast

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from services.submission.openapi import query_names
from verisolve.db import session_scope
from verisolve.settings import Settings


def get_engine(request: Request) -> sa.Engine:
    """The engine the app was made with."""
    return cast(sa.Engine, request.app.state.engine)


def get_settings(request: Request) -> Settings:
    """The settings the app was made with."""
    return cast(Settings, request.app.state.settings)


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request: committed when the endpoint returns, rolled back on error."""
    with session_scope(get_engine(request)) as session:
        yield session


def known_query(request: Request) -> None:
    """Refuse query parameters the operation does not take (a typo is not silently ignored)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = query_names(request.app, route.path_format, request.method)
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        raise RequestValidationError(
            [
                {"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown parameter"}
                for name in unknown
            ]
        )


EngineDep = Annotated[sa.Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": commit before the response is sent, so a 2xx means the data is stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
