"""Supervised fine-tuning of a generator on worked solutions (the paper's first step).

The prompt is the base model's own template with zero exemplars by default (a fine-tuned
generator needs none), encoded as the engine encodes it; the loss is cross-entropy on the
answer's tokens and the EOS after them only. The result keeps its Hugging Face weights, so a
verifier can start from it (`train verifier --base NAME`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from verisolve.modelstore.export import eos_token_ids
from verisolve.modelstore.manifest import Manifest
from verisolve.training.base import BaseModel
from verisolve.training.batching import Example, collate, plan_batches
from verisolve.training.data import Solution, split_solutions
from verisolve.training.loop import LoopConfig, LoopRun, cleanup, train
from verisolve.training.publish import provenance, publish_generator
from verisolve.training.tokens import generator_example, load_tokenizer


@dataclass(frozen=True)
class GeneratorOptions:
    """What a fine-tuning run does beyond the loop's hyperparameters."""

    dropout: float = 0.0
    val_fraction: float = 0.05
    max_length: int | None = 1024
    int8: bool = False


def _causal_net_class() -> Any:
    """The CausalLMNet class (torch imported on first use)."""
    import torch

    class CausalLMNet(torch.nn.Module):
        """A causal LM whose forward returns logits at the answer's positions only."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, solution_mask: Any) -> Any:
            """Logits where the next token is an answer token, and those tokens."""
            trunk = self.model.base_model
            hidden = trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            targets_at = solution_mask[:, 1:]
            # Only these positions reach the vocabulary-sized head: no logits for the prompt.
            logits = self.model.get_output_embeddings()(hidden[:, :-1][targets_at])
            return logits, input_ids[:, 1:][targets_at]

    return CausalLMNet


class GeneratorTask:
    """Cross-entropy on answer tokens, and the held-out loss per answer token."""

    grouped = False
    split_groups = False

    def __init__(self, examples: Sequence[Example], val: Sequence[Example], pad_id: int) -> None:
        self.examples = examples
        self.val = val
        self.pad_id = pad_id

    def counts(self, indices: Sequence[int]) -> dict[str, float]:
        """Answer tokens predicted by these examples."""
        rows = [self.examples[i] for i in indices]
        return {"lm": float(sum(len(e.ids) - max(e.start, 1) for e in rows))}

    def loss(self, model: Any, batch: dict[str, Any], totals: dict[str, float]) -> Any:
        """Summed cross-entropy over the step's answer-token total."""
        import torch.nn.functional as f

        logits, targets = model(batch["input_ids"], batch["attention_mask"], batch["solution_mask"])
        return f.cross_entropy(logits.float(), targets, reduction="sum") / max(totals["lm"], 1.0)

    def held_out_loss(self, model: Any) -> float | None:
        """Mean cross-entropy per answer token of the held-out problems."""
        import torch.nn.functional as f

        if not self.val:
            return None
        device = next(model.parameters()).device
        total, count = 0.0, 0
        lengths = [len(e.ids) for e in self.val]
        for batch in plan_batches(lengths, 8192, seed=0, shuffle=False):
            tensors = collate([self.val[i] for i in batch], self.pad_id)
            logits, targets = model(*(tensors[k].to(device) for k in _INPUTS))
            total += float(f.cross_entropy(logits.float(), targets, reduction="sum"))
            count += int(targets.numel())
        return total / max(count, 1)

    def validate(self, model: Any) -> dict[str, Any]:
        """Held-out loss and perplexity."""
        loss = self.held_out_loss(model)
        if loss is None:
            return {}
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


_INPUTS = ("input_ids", "attention_mask", "solution_mask")


def _examples(
    base: BaseModel, solutions: Sequence[Solution], max_length: int | None
) -> list[Example]:
    """Token rows of prompt, answer and EOS."""
    tokenizer = load_tokenizer(base.hf_dir)
    eos = eos_token_ids(base.hf_dir)
    if not eos:
        raise ValueError(f"{base.hf_dir}: no EOS token id in generation_config.json or config.json")
    return [
        generator_example(
            tokenizer, base.prompt, s.question, s.answer, eos_id=eos[0], max_length=max_length
        )
        for s in solutions
    ]


def _pad_id(model: Any) -> int:
    """The config's pad id, else 0 (padded positions are masked everywhere)."""
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0


def train_generator(
    solutions: Sequence[Solution],
    source: dict[str, Any],
    base: BaseModel,
    name: str,
    config: LoopConfig,
    options: GeneratorOptions,
    run: LoopRun,
) -> Manifest | None:
    """Fine-tune, export, register; the manifest (None on a process other than the main one)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from verisolve.training.modeling import add_residual_dropout, load_causal_lm

    train_set, val_set = split_solutions(solutions, options.val_fraction, config.seed)
    set_seed(config.seed)
    model = load_causal_lm(base.hf_dir)
    add_residual_dropout(model, options.dropout)
    net = _causal_net_class()(model)
    task = GeneratorTask(
        _examples(base, train_set, options.max_length),
        _examples(base, val_set, options.max_length),
        _pad_id(model),
    )
    net.eval()
    with torch.no_grad():
        before = task.held_out_loss(net)
    extra = {"kind": "generator", **asdict(options), "base": base.sha256}
    trained = train(net, task, config, run, extra)
    if trained is None or not PartialState().is_main_process:
        return None
    counts = {"problems_train": len(train_set), "problems_validation": len(val_set)}
    training = provenance(
        "generator", source | counts, base, config, asdict(options), run.epoch_metrics
    )
    training["loss_before"] = before
    manifest = publish_generator(trained.model, base, name, training, options.int8, run.work_dir)
    cleanup(run, True)
    return manifest
