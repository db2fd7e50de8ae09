"""The Dockerfiles: what they copy exists, and the images run verisolve as a non-root user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist(path: Path) -> None:
    for word, args in instructions(path):
        if word == "COPY" and "--from=" not in args:
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name} copies missing {source}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_runs_verisolve_as_a_non_root_uid(path: Path) -> None:
    final = final_stage(path)
    users = [args for word, args in final if word == "USER"]
    assert users
    assert users[-1].isdigit()
    assert int(users[-1]) != 0
    assert ("ENTRYPOINT", '["verisolve"]') in final


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_each_dockerfile_has_its_ignore_file(path: Path) -> None:
    ignore = path.with_name(path.name + ".dockerignore").read_text().splitlines()
    assert ignore[0:2] == ["# Only what the image needs goes into the build context.", "*"]
    for word, args in instructions(path):
        if word == "COPY" and "--from=" not in args:
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, source


def test_the_gpu_image_has_onnxruntime_gpu_alone_on_a_cuda_base() -> None:
    path = DOCKER / "Dockerfile.gpu"
    steps = instructions(path)
    assert re.search(r"nvidia/cuda:12\.\S+-cudnn-runtime-", steps[0][1]), steps[0]
    installs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip uninstall -y onnxruntime" in installs
    assert '"onnxruntime-gpu' in installs
    assert any(w == "ENV" and "VERISOLVE_PROVIDER=cuda" in a for w, a in final_stage(path))
