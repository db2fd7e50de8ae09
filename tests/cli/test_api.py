"""`verisolve api`: uvicorn serves the submission service on the configured database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.db.migrate import upgrade

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_serves_health_readiness_and_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    port = free_port()
    command = [sys.executable, "-c", "from verisolve.cli.app import main; main()"]
    command += ["api", "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "VERISOLVE_DATABASE_URL": url}
    process = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the server exited"
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert ready.json()["status"] == "ready"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        schema = httpx.get(f"{base}/openapi.json").json()
        assert "/v1/jobs/{job_id}/problems" in schema["paths"]
        assert httpx.get(f"{base}/v1/jobs").status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_api_refuses_an_unmigrated_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERISOLVE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    result = runner.invoke(app, ["api", "--port", "0"])
    assert result.exit_code == 1
    assert "verisolve db upgrade" in result.stderr
