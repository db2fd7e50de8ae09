"""deploy/kubernetes/training: a data-parallel `verisolve train` Job on GPU nodes that validates,
whose torchrun options agree with the Job's pod and GPU counts; its image runs as non-root."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from test_dockerfiles import final_stage, instructions

ROOT = Path(__file__).resolve().parents[2]
TRAINING = ROOT / "deploy" / "kubernetes" / "training"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.train"
K8S_VERSION = "1.30.0"

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def docs(kubectl: str) -> list[Doc]:
    done = subprocess.run(
        [kubectl, "kustomize", str(TRAINING)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(docs: list[Doc], kind: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def options(args: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)


def test_every_object_validates(docs: list[Doc]) -> None:
    assert {d["kind"] for d in docs} == {"ConfigMap", "Service", "Job"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_torchrun_matches_the_job(docs: list[Doc]) -> None:
    job, service = one(docs, "Job"), one(docs, "Service")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["torchrun"]
    launch = options(container["args"])
    assert int(launch["--nnodes"]) == job["spec"]["completions"] == job["spec"]["parallelism"]
    assert job["spec"]["completionMode"] == "Indexed"
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert int(launch["--nproc-per-node"]) == gpus
    name, subdomain = job["metadata"]["name"], pod["subdomain"]
    assert subdomain == service["metadata"]["name"]
    assert launch["--rdzv-endpoint"] == f"{name}-0.{subdomain}:29500"
    assert (
        service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    )
    assert container["args"][container["args"].index("--no-python") + 1 :][:3] == [
        "verisolve",
        "train",
        "verifier",
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_the_pod_runs_unprivileged_and_writes_only_its_volumes(docs: list[Doc]) -> None:
    pod = one(docs, "Job")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"] == "verisolve-models"
    assert {"/tmp", "/dev/shm", "/data", "/app"} <= set(mounts)


def test_the_training_image_runs_as_non_root_with_the_export_extra() -> None:
    final = final_stage(DOCKERFILE)
    users = [args for word, args in final if word == "USER"]
    assert users[-1].isdigit()
    assert int(users[-1]) != 0
    runs = " ".join(args for word, args in instructions(DOCKERFILE) if word == "RUN")
    assert '".[export]"' in runs
    ignore = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore").read_text().splitlines()
    assert "!shared/" in ignore
