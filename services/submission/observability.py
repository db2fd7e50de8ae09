"""The service's own metrics: an ASGI middleware that times every request, and /metrics.

Requests are labelled by their route template (`/v1/jobs/{job_id}`), never by the raw path, so
the label set stays bounded by the code; a path that matches no route counts as "unmatched".
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verisolve import metrics

UNMATCHED = "unmatched"


class RequestMetricsMiddleware:
    """Records each HTTP request's count, duration and body size in verisolve.metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "body": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["body"] += len(message.get("body", b""))
            return message

        async def status_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            metrics.record_request(
                scope["method"],
                route_template(scope),
                state["status"],
                time.perf_counter() - started,
                state["body"],
            )


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (static mounts by their prefix)."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    if path:
        return str(path)
    root = scope.get("root_path", "") or ""
    app_root = scope.get("app_root_path")
    if app_root is not None and root and root != app_root:
        return root[len(app_root) :] or UNMATCHED  # a mounted app: its mount point
    return UNMATCHED


def metrics_endpoint() -> Response:
    """Prometheus' text format: this process's request metrics (all processes' when multiproc)."""
    registry = metrics.api_registry()
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """Time every request of `app` and serve the values at GET /metrics."""
    app.add_middleware(RequestMetricsMiddleware)
    app.get("/metrics", tags=["health"], include_in_schema=False)(metrics_endpoint)
