"""Export a verifier or reward model (one-label classifier) to ONNX with optimum-onnx.

Two forms, both one logit whose sigmoid is the probability that a solution is correct:
- "sequence": optimum's `text-classification` task (`*ForSequenceClassification`, as public
  reward models are published): one logit per row, read at the row's last non-pad token;
- "token": the paper's token-level value head (`*ForTokenClassification`): a logit after every
  token, the last one selecting. optimum's task table lacks `token-classification` for decoder
  models, so that graph goes through optimum's `export` with the architecture's own ONNX config.
  A token-form checkpoint with a likelihood head beside it (`train verifier
  --likelihood-features`, see likelihood_graph) is exported with torch's exporter instead: its
  graph also takes `solution_mask`.

Needs the export extra (torch, transformers, optimum-onnx); running the result does not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from verisolve.inference.verifier import SOLUTION_MASK
from verisolve.modelstore.export import (
    ExportError,
    atomic_model_dir,
    copy_tokenizer,
    eos_token_ids,
    hash_onnx_files,
    onnx_files_of,
    quantize_int8,
    read_config,
)
from verisolve.modelstore.likelihood_graph import LIKELIHOOD_FILE
from verisolve.modelstore.manifest import Manifest, PromptSpec

logger = logging.getLogger(__name__)

ScoreForm = Literal["sequence", "token"]

GRAPH_FILE = "model.onnx"
INT8_GRAPH_FILE = "model.int8.onnx"
_ARCH_SUFFIX: dict[str, str] = {
    "sequence": "ForSequenceClassification",
    "token": "ForTokenClassification",
}


def export_verifier(
    hf_dir: Path,
    out_dir: Path,
    *,
    name: str,
    int8: bool = False,
    score_form: ScoreForm = "sequence",
    source: str = "",
    prompt: PromptSpec | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Export a transformers verifier to a model directory with its manifest (all or nothing)."""
    from transformers import AutoConfig

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    read_config(hf_dir)
    config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    _check_head(config, score_form, hf_dir)
    pad_id = _pad_token_id(hf_dir, config)
    with atomic_model_dir(out_dir, overwrite=overwrite) as stage:
        if score_form == "sequence":
            _export_sequence(hf_dir, stage, pad_id)
        elif (hf_dir / LIKELIHOOD_FILE).is_file():
            _export_token_likelihood(hf_dir, stage)
        else:
            _export_token(hf_dir, stage)
        copy_tokenizer(hf_dir, stage)
        graph = GRAPH_FILE
        if int8:
            quantize_int8(stage / GRAPH_FILE, stage / INT8_GRAPH_FILE)
            for path in onnx_files_of(stage / GRAPH_FILE):
                path.unlink()
            graph = INT8_GRAPH_FILE
        manifest = Manifest(
            kind="verifier",
            name=name,
            architecture=(config.architectures or [config.model_type])[0],
            source=source or str(hf_dir.resolve()),
            files=hash_onnx_files(stage),
            graphs={"classifier": graph},
            int8=int8,
            prompt=prompt or PromptSpec(),
            eos_token_ids=eos_token_ids(hf_dir),
            score_form=score_form,
            pad_token_id=pad_id,
            max_length=getattr(config, "max_position_embeddings", None),
        )
        manifest.save(stage)
    logger.info("exported verifier %s (%s form) to %s", name, score_form, out_dir)
    return manifest


def _check_head(config: Any, score_form: ScoreForm, hf_dir: Path) -> None:
    """Refuse checkpoints whose head would be re-initialised at random or is not one logit."""
    suffix = _ARCH_SUFFIX[score_form]
    arch = (config.architectures or [""])[0]
    # Loading a checkpoint into another head class leaves part of the head random, silently.
    if not arch.endswith(suffix):
        raise ExportError(
            f"{hf_dir}: score form {score_form!r} needs a *{suffix} checkpoint, "
            f"but config.json names {arch or 'no architecture'}"
        )
    if config.num_labels != 1:
        raise ExportError(
            f"{hf_dir}: the model has {config.num_labels} labels; a verifier needs exactly one "
            "(a logit whose sigmoid is the probability of a correct solution)"
        )


def _pad_token_id(hf_dir: Path, config: Any) -> int:
    """The pad id the graph compares against: the config's, else the tokenizer's, else EOS."""
    if config.pad_token_id is not None:
        return int(config.pad_token_id)
    import transformers

    # Typed as Any: transformers leaves from_pretrained untyped.
    auto_tokenizer: Any = transformers.AutoTokenizer
    tokenizer = auto_tokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    eos = eos_token_ids(hf_dir)
    if not eos:
        raise ExportError(f"{hf_dir}: neither a pad token nor an EOS token is defined")
    # As transformers does with pad == EOS: trailing EOS tokens are then skipped when scoring.
    return eos[0]


def _export_sequence(hf_dir: Path, stage: Path, pad_id: int) -> None:
    """optimum's text-classification export (validated against PyTorch by optimum)."""
    from optimum.exporters.onnx import main_export

    main_export(
        str(hf_dir),
        output=stage,
        task="text-classification",
        library_name="transformers",
        local_files_only=True,
        # Used only when config.json has no pad id: the graph then compares against this one.
        pad_token_id=pad_id,
    )


def _token_onnx_config(config: Any) -> Any:
    """optimum's ONNX config of the architecture, for the token-classification task."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs)
    from optimum.exporters.tasks import TasksManager

    constructor = TasksManager.get_exporter_config_constructor(
        exporter="onnx",
        model_type=config.model_type,
        task="text-classification",
        library_name="transformers",
    )
    return constructor(config, task="token-classification")


TOKEN_ATOL = 1e-4  # the least tolerance a token-level graph is checked against PyTorch with


def _export_token(hf_dir: Path, stage: Path) -> None:
    """A token-classification graph: optimum's ONNX config of the architecture, other task."""
    from optimum.exporters.onnx import export, validate_model_outputs
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(str(hf_dir), local_files_only=True)
    model.eval()
    model.config.use_cache = False
    onnx_config = _token_onnx_config(model.config)
    path = stage / GRAPH_FILE
    _, outputs = export(model, onnx_config, path)
    atol = onnx_config.ATOL_FOR_VALIDATION
    if isinstance(atol, dict):
        atol = atol.get("text-classification", TOKEN_ATOL)
    # optimum's Llama tolerance (1e-5) is below what fp32 itself varies by over a deep model on
    # random inputs: SmolLM2-135M's token logits differed by 1.9e-5 in one export of two.
    atol = max(atol, TOKEN_ATOL)
    validate_model_outputs(onnx_config, model, path, outputs, atol=atol, use_subprocess=False)
    model.config.save_pretrained(str(stage))


def _export_token_likelihood(hf_dir: Path, stage: Path) -> None:
    """The likelihood-reading token graph, checked against PyTorch on a padded batch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from verisolve.modelstore.likelihood_graph import load_graph_module

    module = load_graph_module(hf_dir)
    # optimum's patches make the architecture traceable (its attention masks among them).
    patcher = _token_onnx_config(module.classifier.config)
    vocab = int(module.classifier.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    solution = torch.zeros_like(ids)
    solution[0, 5:] = 1
    solution[1, 4:9] = 1
    path = stage / GRAPH_FILE
    names = ["input_ids", "attention_mask", SOLUTION_MASK]
    with torch.no_grad(), patcher.patch_model_for_export(module.classifier):
        torch.onnx.export(
            module,
            (ids, mask, solution),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "logits"]},
            opset_version=17,
            dynamo=False,
        )
        expected = module(ids, mask, solution).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        "input_ids": ids.numpy(),
        "attention_mask": mask.numpy(),
        SOLUTION_MASK: solution.numpy(),
    }
    (got,) = session.run(["logits"], feeds)
    real = mask.numpy().astype(bool)
    error = float(np.abs(got - expected)[real].max())
    if error > 1e-3:
        raise ExportError(
            f"{hf_dir}: the exported graph's values differ from PyTorch's by {error:g}"
        )
    module.classifier.config.save_pretrained(str(stage))
