"""Paths of the deployment files, and the command-line tools their checks need."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tool(name: str, install: str) -> str:
    """The path of a command; skip without it, except under CI=true, where it must be there."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install})"
        if IN_CI:
            pytest.fail(f"{message}; CI=true: the checks that need it must run")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """Prometheus's checker, from Debian's prometheus package."""
    return tool("promtool", "apt-get install -y prometheus")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """The Prometheus server, from Debian's prometheus package."""
    return tool("prometheus", "apt-get install -y prometheus")


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl, for its built-in kustomize."""
    return tool("kubectl", "kubectl, which builds kustomizations offline")
