"""`verisolve exporter`: serve job, accuracy, outbox and queue metrics for Prometheus."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console

from verisolve.cli.line_errors import fail
from verisolve.db import create_engine
from verisolve.settings import get_settings

console = Console()
DEFAULT_PORT = 9465
DEFAULT_RECENT_SECONDS = 3600.0


def exporter(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve /metrics on.")] = (
        DEFAULT_PORT
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    queue: Annotated[
        list[str] | None,
        typer.Option(help="A broker queue to report (repeat) [default: the deployment's]."),
    ] = None,
    recent_seconds: Annotated[
        float, typer.Option(min=0, help="Keep finished jobs' series this long.")
    ] = DEFAULT_RECENT_SECONDS,
    broker: Annotated[bool, typer.Option(help="Report queue depths from the broker.")] = True,
) -> None:
    """Serve metrics read from the database and the broker at each scrape, until stopped."""
    # Imported here: prometheus_client picks its multiprocess mode once, at import, and a
    # worker started by this same CLI may still have to set PROMETHEUS_MULTIPROC_DIR.
    from verisolve.metrics_exporter import JobCollector, default_queues
    from verisolve.metrics_exporter import serve as serve_metrics

    settings = get_settings()
    try:
        engine = create_engine(settings.database_url)
    except sa.exc.ArgumentError as exc:
        fail(f"VERISOLVE_DATABASE_URL is not a database URL: {exc}")
        raise typer.Exit(1) from None
    collector = JobCollector(
        engine,
        settings.broker_url if broker else None,
        queue or default_queues(settings.queue_prefix),
        recent_seconds,
    )
    try:
        server = serve_metrics(collector, port, host)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    console.print(f"serving metrics on http://{host}:{port}/metrics")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        engine.dispose()
