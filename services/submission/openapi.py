"""The OpenAPI schema as this deployment really behaves: its limits and its registered models."""

from __future__ import annotations

import copy
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from verisolve.db import session_scope
from verisolve.modelstore import registry
from verisolve.settings import Settings


def static_openapi(app: FastAPI) -> dict[str, Any]:
    """The schema the code declares, built once."""
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
    return app.openapi_schema


def query_names(app: FastAPI, path: str, method: str) -> set[str]:
    """The query parameters one operation takes, as its schema declares them."""
    operation = static_openapi(app)["paths"].get(path, {}).get(method.lower(), {})
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


def live_openapi(app: FastAPI, engine: sa.Engine, settings: Settings) -> dict[str, Any]:
    """The static schema with the configured limits and the registered model names filled in."""
    schema = copy.deepcopy(static_openapi(app))
    fields = schema["components"]["schemas"]["JobCreate"]["properties"]
    _at_most(fields["n_samples"], settings.max_samples)
    _at_most(fields["max_new_tokens"], settings.max_new_tokens)
    try:
        with session_scope(engine) as session:
            for kind in ("generator", "verifier"):
                _only(fields[kind], [m.name for m in registry.list_models(session, kind)])
    except sa.exc.SQLAlchemyError:
        pass  # the database is away (see /readyz): the schema without the list of models
    return schema


def _at_most(field: dict[str, Any], limit: int) -> None:
    field["maximum"] = min(int(field.get("maximum", limit)), limit)


def _only(field: dict[str, Any], names: list[str]) -> None:
    """A nullable string field that takes only these names (only null when there are none)."""
    choices: list[dict[str, Any]] = [{"type": "null"}]
    if names:
        choices.insert(0, {"type": "string", "enum": names})
    field.pop("anyOf", None)
    field["anyOf"] = choices
