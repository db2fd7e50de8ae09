"""deploy/compose.yaml: it parses, and everything a service refers to exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LONGEST_TASK_S = 3600  # verisolve.executors.celery_app.LONGEST_TASK_S


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def seconds(duration: str) -> int:
    """A compose duration ("62m", "1h30m", "90s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def test_the_stack_has_every_service() -> None:
    assert set(services()) == {
        "postgres", "rabbitmq", "migrate", "api", "relay", "relay-gpu", "generator", "verifier",
        "generator-gpu", "verifier-gpu", "aggregator", "exporter", "prometheus", "grafana",
    }  # fmt: skip


def test_dependencies_name_existing_services_and_valid_conditions() -> None:
    known = set(services())
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services().items():
        depends = service.get("depends_on", {})
        for target, rule in depends.items() if isinstance(depends, dict) else []:
            assert target in known, f"{name} depends on unknown {target}"
            assert rule["condition"] in conditions, name
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services()[target], f"{target} has no healthcheck"


def test_named_volumes_are_declared_and_mounted_files_exist() -> None:
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_builds_point_at_existing_dockerfiles() -> None:
    for name, service in services().items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name


def test_profiles_separate_cpu_gpu_and_monitoring() -> None:
    profiles = {name: service.get("profiles", []) for name, service in services().items()}
    assert profiles["generator"] == ["cpu"]
    assert profiles["verifier"] == ["cpu"]
    assert profiles["generator-gpu"] == ["gpu"]
    assert profiles["verifier-gpu"] == ["gpu"]
    assert profiles["relay"] == ["cpu"]
    assert profiles["relay-gpu"] == ["gpu"]
    for name in ("exporter", "prometheus", "grafana"):
        assert profiles[name] == ["monitoring"]


@pytest.mark.parametrize("name", ["generator-gpu", "verifier-gpu"])
def test_gpu_workers_reserve_a_gpu_and_use_cuda(name: str) -> None:
    service = services()[name]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert service["environment"]["VERISOLVE_PROVIDER"] == "cuda"
    assert service["build"]["dockerfile"].endswith("Dockerfile.gpu")


@pytest.mark.parametrize(
    "name", ["generator", "verifier", "generator-gpu", "verifier-gpu", "aggregator"]
)
def test_workers_drain_before_stopping_and_serve_metrics(name: str) -> None:
    service = services()[name]
    assert seconds(service["stop_grace_period"]) > LONGEST_TASK_S
    assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/metrics"
    assert any(mount.startswith("/tmp/metrics") for mount in service["tmpfs"])
    assert "healthcheck" in service


def test_long_running_services_have_healthchecks() -> None:
    # The relay serves no port: a stuck relay shows as the VerisolveOutboxBacklog alert.
    without = {n for n, s in services().items() if "healthcheck" not in s}
    assert without == {"migrate", "relay", "relay-gpu"}


def test_the_gpu_relay_sizes_generate_tasks_for_gpu_batches() -> None:
    """Generate tasks of 2048 candidates on GPU workers (8 batches of 256 rows), as in the
    Kubernetes GPU overlay; the CPU relay keeps the default (512: 8 batches of 64)."""
    key = "VERISOLVE_GENERATE_CHUNK_CANDIDATES"
    gpu, cpu = services()["relay-gpu"], services()["relay"]
    assert gpu["command"] == cpu["command"] == ["relay"]
    assert gpu["environment"][key] == "2048"
    assert key not in cpu["environment"]
    assert (
        gpu["environment"]["VERISOLVE_DATABASE_URL"] == cpu["environment"]["VERISOLVE_DATABASE_URL"]
    )


def test_secrets_have_no_defaults() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for secret in ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses, secret
        assert all(use.startswith(":?") for use in uses), secret


def test_prometheus_scrapes_the_worker_services() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (dns,) = jobs["verisolve-workers"]["dns_sd_configs"]
    workers = {n for n, s in services().items() if s.get("command", [None])[0] == "worker"}
    assert set(dns["names"]) == workers
    assert jobs["verisolve-exporter"]["static_configs"][0]["targets"] == ["exporter:9465"]
