"""Export Hugging Face models to verisolve model directories (ONNX, tokenizer, manifest).

Exporting needs the `export` extra (torch, transformers, optimum-onnx); it is imported lazily so
that running a model needs onnxruntime only. The generic helpers (atomic directory, int8
quantisation, hashing the ONNX files, eos ids) serve the verifier exporter too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from verisolve.modelstore.manifest import Manifest, PromptSpec, sha256_file

DECODER_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# The Hugging Face source (config and weights) kept inside a model dir for benchmarks.
HF_SUBDIR = "hf"
_HF_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_HF_WEIGHT_SUFFIXES = (".safetensors", ".json")
# MatMuls whose inputs carry activation outliers, by node-name part (optimum's Llama-family
# names): per-tensor dynamic int8 would clip those, so they get blockwise 8-bit weights instead.
BLOCKWISE_NODES = ("/mlp/down_proj/", "/lm_head/")
BLOCK_SIZE = 32


class ExportError(RuntimeError):
    """A model that cannot be exported; the message says what is missing or wrong."""


@contextmanager
def atomic_model_dir(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary directory beside `target`, renamed to it only if the block succeeds."""
    target = target.resolve()
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is readable like any other
    try:
        yield tmp
        if target.exists():
            # Move the old directory aside first so the swap leaves one complete model at a time.
            old = tmp.with_suffix(".old")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def onnx_files_of(path: Path) -> list[Path]:
    """One ONNX file followed by the external data files its initializers reference."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations = {
        ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)
    }
    return [path, *(path.parent / loc for loc in sorted(locations))]


def onnx_files(model_dir: Path) -> list[Path]:
    """Every ONNX file at the top of a model directory, with its external data files."""
    found = {f for path in model_dir.glob("*.onnx") for f in onnx_files_of(path)}
    return sorted(found)


def hash_onnx_files(model_dir: Path) -> dict[str, str]:
    """Relative file name -> sha256 for every ONNX file and external data file."""
    return {p.relative_to(model_dir).as_posix(): sha256_file(p) for p in onnx_files(model_dir)}


def quantize_int8(
    src: Path,
    dst: Path,
    *,
    matmul_only: bool = True,
    blockwise: Sequence[str] = BLOCKWISE_NODES,
    outliers: Mapping[int, Sequence[int]] | None = None,
) -> list[str]:
    """ONNX Runtime's int8 quantisation of every MatMul weight; the names quantised blockwise.

    With `outliers` (each layer's down-projection input channels to keep in fp32, from
    `int8.down_proj_outliers`), the row-scaled scheme of `verisolve.modelstore.int8`: every
    weight product int8, activations scaled per row, per-channel weights for the down
    projections and the LM head; nothing is blockwise. Without (the default), the scheme below.

    Most MatMuls get int8 weights (one scale per tensor) and int8 activations quantised per row:
    each row is divided by its largest magnitude, quantised with a fixed scale (2/255, zero point
    128: `int8.fixed_row_activations`) and its product multiplied back. So a row's int8 values do
    not depend on which rows share its batch, as they did with ONNX Runtime's dynamic quantisation
    (one activation scale for the whole batch, set by its widest row); the cascade graph keeps the
    rest of a step's arithmetic row by row too (`cascade_graph.sum_blocks`, and the decoder's
    `padded_prefix`), since rounding to 255 levels turns a last-bit difference into a whole step.
    The MLP down-projections' inputs carry activation outliers, and the LM head is a third of the
    model's weights: those (`blockwise`) get 8-bit weights in blocks of 32 along the input
    dimension with their own scale and zero point, and activations quantised per block too
    (MatMulNBits, accuracy level 4), which clips nothing. A tied head, read through a Transpose
    of the embedding, gets its own copy. Graphs over 2 GB (external data) keep dynamic
    per-tensor activations.

    Measured on the default model (SmolLM2-135M-Instruct), teacher-forced over the gold answers of
    the first 20 GSM8K test problems with the 4-shot prompt (optimum's graph, 2,923 positions in
    one sequence, against fp32; 2026-12-03, an AMD EPYC with AVX-512 VNNI): mean KL 0.033 nats and
    6.6% of greedy tokens changed, against 0.051 and 8.2% with dynamic per-tensor activations;
    on an AMD EPYC with AVX2 only (no VNNI, where ONNX Runtime's u8 x s8 kernel sums pairs into
    int16), 0.035 and 5.8%: per-tensor weights do not saturate it.
    Earlier (3 GSM8K prompts with their answers): dynamic int8 everywhere cost 0.45 nats and 30%
    of greedy tokens; the down projections and head blockwise rather than fp32 cost 0.002 nats
    more, for a cascade decode step of 98.8 ms at 64 rows (100 cached tokens) against 111.9.
    Blockwise 8-bit for every MatMul is closer still (0.003 nats, 2.7%) but slower on this CPU.
    Quantising the embedding Gather as well (`matmul_only=False`) saves 85 MB of file but is no
    faster and a little less accurate.
    """
    import onnx

    external = len(onnx_files_of(src)) > 1
    if outliers is not None and matmul_only and not external:
        from verisolve.modelstore.int8 import quantize_row_scaled

        quantize_row_scaled(src, dst, outliers)
        return []
    # Without external data this is the whole model; with, its nodes only.
    model = onnx.load(str(src), load_external_data=False)
    chosen = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and any(part in node.name for part in blockwise)
    ]
    source = src
    if not external:
        from verisolve.modelstore.int8 import fixed_row_activations, scale_rows, weight_products

        scaled = scale_rows(model, [n for n in weight_products(model.graph) if n not in chosen])
        source = dst.with_suffix(".rows.onnx")
        onnx.save(model, str(source))
    try:
        _quantize_dynamic(source, dst, chosen, matmul_only=matmul_only, external=external)
    finally:
        if source != src:
            source.unlink(missing_ok=True)
    if not external:
        fixed_row_activations(dst, set(scaled))
    if chosen:
        quantize_blockwise(dst, chosen, external=external)
    return chosen


def _quantize_dynamic(
    src: Path, dst: Path, excluded: Sequence[str], *, matmul_only: bool, external: bool
) -> None:
    """ONNX Runtime's dynamic int8 (QInt8 weights per tensor) for every MatMul but `excluded`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=["MatMul"] if matmul_only else None,
        weight_type=QuantType.QInt8,
        per_channel=False,
        nodes_to_exclude=list(excluded),
        # Weights over 2 GB stay in external data, as they came.
        use_external_data_format=external,
    )


def quantize_blockwise(path: Path, names: Sequence[str], *, external: bool = False) -> None:
    """8-bit weights in blocks of `BLOCK_SIZE` for these MatMuls (MatMulNBits), in place."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(path))
    _fold_weight_transposes(model, set(names))
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=8,
        block_size=BLOCK_SIZE,
        is_symmetric=False,
        accuracy_level=4,
        nodes_to_include=list(names),
    )
    with _quiet_quantizer():
        quantizer.process()
    quantizer.model.save_model_to_file(str(path), use_external_data_format=external)


def _fold_weight_transposes(model: Any, names: set[str]) -> None:
    """Give these MatMuls, where they read Transpose(initializer), the transposed initializer."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    makers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.name not in names or len(node.input) < 2:
            continue
        maker = makers.get(node.input[1])
        if maker is None or maker.op_type != "Transpose" or maker.input[0] not in weights:
            continue
        array = numpy_helper.to_array(weights[maker.input[0]])
        perms = [list(a.ints) for a in maker.attribute if a.name == "perm"]
        perm = perms[0] if perms else list(range(array.ndim))[::-1]
        folded = f"{node.input[1]}_folded"
        graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(array.transpose(perm)), folded)
        )
        node.input[1] = folded
    readers = {name for node in graph.node for name in node.input}
    for node in list(graph.node):
        if node.op_type == "Transpose" and not any(o in readers for o in node.output):
            graph.node.remove(node)


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The MatMulNBits quantizer logs a line per node at INFO; keep only its warnings."""
    import logging

    log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def eos_token_ids(hf_dir: Path) -> list[int]:
    """The end-of-sequence ids, from generation_config.json, else config.json."""
    for name in ("generation_config.json", "config.json"):
        path = hf_dir / name
        if not path.is_file():
            continue
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        if isinstance(value, int):
            return [value]
        if isinstance(value, list) and value:
            return [int(v) for v in value]
    return []


def copy_tokenizer(hf_dir: Path, out_dir: Path) -> Path:
    """Copy the fast tokenizer file, which is all the runtime needs."""
    src = hf_dir / TOKENIZER_FILE
    if not src.is_file():
        raise ExportError(f"{hf_dir} has no {TOKENIZER_FILE} (a fast tokenizer is required)")
    return Path(shutil.copy2(src, out_dir / TOKENIZER_FILE))


def copy_hf_source(hf_dir: Path, out_dir: Path) -> Path:
    """Keep the Hugging Face config and safetensors weights under out_dir/hf (for baselines)."""
    dest = out_dir / HF_SUBDIR
    dest.mkdir()
    for path in hf_dir.iterdir():
        if path.is_file() and (path.name in _HF_FILES or path.suffix in _HF_WEIGHT_SUFFIXES):
            shutil.copy2(path, dest / path.name)
    if not any(dest.glob("*.safetensors")):
        raise ExportError(f"{hf_dir} has no .safetensors weights to keep")
    return dest


def read_config(hf_dir: Path) -> dict[str, Any]:
    """The transformers config.json of a source directory."""
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{hf_dir} has no config.json: not a Hugging Face model directory")
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def export_generator(
    hf_dir: Path,
    out_dir: Path,
    *,
    name: str,
    int8: bool = False,
    prompt: PromptSpec | None = None,
    stop: list[str] | None = None,
    source: str = "",
    keep_hf: bool = False,
    overwrite: bool = False,
    prefix_shared: bool = True,
    row_scaled: bool = False,
) -> Manifest:
    """Export a causal LM as a verisolve generator directory (decoder with past).

    `row_scaled` (with `int8`): the row-scaled int8 scheme (see `verisolve.modelstore.int8`)
    instead of blockwise 8-bit head and down projections, for every graph of the model.

    With `prefix_shared`, supported architectures also get the prefix-shared decode graph and
    the cascade graph that batches rows of many problems.
    """
    from optimum.exporters.onnx import main_export

    from verisolve.modelstore.cascade_export import CASCADE_ROLE, add_cascade_decoder
    from verisolve.modelstore.int8 import down_proj_outliers
    from verisolve.modelstore.prefix_export import add_prefix_decoder

    config = read_config(hf_dir)
    if not (hf_dir / TOKENIZER_FILE).is_file():
        raise ExportError(f"{hf_dir} has no {TOKENIZER_FILE} (a fast tokenizer is required)")
    with atomic_model_dir(out_dir, overwrite=overwrite) as tmp:
        main_export(
            str(hf_dir),
            str(tmp),
            task="text-generation-with-past",
            do_validation=False,
            local_files_only=True,
        )
        decoder = tmp / DECODER_FILE
        if not decoder.is_file():
            raise ExportError(f"optimum wrote no {DECODER_FILE} for {hf_dir}")
        # Found once, so that every graph of the model quantises the same channels alike.
        outliers = down_proj_outliers(hf_dir) if int8 and row_scaled else None
        if int8:
            quantized = tmp / "model.int8.onnx"
            quantize_int8(decoder, quantized, outliers=outliers)
            _replace_onnx(decoder, quantized)
        graphs = {"decoder": DECODER_FILE}
        prefix = (
            add_prefix_decoder(hf_dir, tmp, int8=int8, outliers=outliers) if prefix_shared else None
        )
        if prefix is not None:
            graphs["decoder_prefix"] = prefix
        cascade = (
            add_cascade_decoder(hf_dir, tmp, int8=int8, outliers=outliers)
            if prefix_shared
            else None
        )
        if cascade is not None:
            graphs[CASCADE_ROLE] = cascade
        copy_tokenizer(hf_dir, tmp)
        if keep_hf:
            copy_hf_source(hf_dir, tmp)
        manifest = Manifest(
            kind="generator",
            name=name,
            architecture=str(config.get("model_type", "")),
            source=source or str(hf_dir.resolve()),
            files=hash_onnx_files(tmp),
            graphs=graphs,
            tokenizer=TOKENIZER_FILE,
            int8=int8,
            prompt=prompt or PromptSpec(),
            stop=list(stop or []),
            eos_token_ids=eos_token_ids(hf_dir),
        )
        manifest.save(tmp)
    return manifest


def _replace_onnx(original: Path, replacement: Path) -> None:
    """Put `replacement` in place of `original`, dropping the original's external data."""
    keep = set(onnx_files_of(replacement))
    for path in onnx_files_of(original):
        if path not in keep:
            path.unlink()
    replacement.rename(original)
