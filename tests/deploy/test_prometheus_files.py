"""The Prometheus configurations and alert rules pass promtool, and the alerts fire as meant."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=PROMETHEUS
    )


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_config_is_valid(promtool: str, config: str) -> None:
    done = promtool_run(promtool, "check", "config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_alert_rules_are_valid(promtool: str) -> None:
    done = promtool_run(promtool, "check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_fire_on_the_situations_they_describe(promtool: str) -> None:
    done = promtool_run(promtool, "test", "rules", "tests/alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
