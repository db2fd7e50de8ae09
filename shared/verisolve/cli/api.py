"""`verisolve api`: serve the submission service with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from verisolve.cli.database import require_schema
from verisolve.db import get_engine


def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the HTTP API (OpenAPI schema at /docs); the schema must be migrated first."""
    import uvicorn

    require_schema(get_engine())
    uvicorn.run(
        "services.submission.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
