"""`verisolve exporter`: serves /metrics until stopped; clear errors for bad settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.settings import get_settings

runner = CliRunner()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_port_in_use_is_an_error(
    busy_port: int, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    result = runner.invoke(app, ["exporter", "--port", str(busy_port), "--no-broker"])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.output


def test_a_bad_database_url_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", "not a url")
    get_settings.cache_clear()
    result = runner.invoke(app, ["exporter", "--port", str(free_port())])
    assert result.exit_code == 1
    assert "VERISOLVE_DATABASE_URL is not a database URL" in result.output


def test_it_serves_metrics_until_terminated(sqlite_url: str) -> None:
    port = free_port()
    env = {**os.environ, "VERISOLVE_DATABASE_URL": sqlite_url}
    code = "from verisolve.cli.app import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "exporter", "--port", str(port), "--no-broker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = _fetch(f"http://127.0.0.1:{port}/metrics", proc, deadline=30)
        assert 'verisolve_exporter_up{source="database"} 1.0' in body
        assert "verisolve_jobs{" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _fetch(url: str, proc: subprocess.Popen[str], deadline: float) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(
                f"the exporter exited: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {deadline} s")
