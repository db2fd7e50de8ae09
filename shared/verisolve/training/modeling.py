"""The torch modules trained here: a verifier (value head and LM head on one trunk), dropout.

A token-form verifier can also read the likelihood of its solution (see
verisolve.modelstore.likelihood_graph): a small linear head on features of its own LM head's
log-probabilities adds to the value logit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def load_causal_lm(hf_dir: Path) -> Any:
    """A causal LM in fp32 from a Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM

    auto: Any = AutoModelForCausalLM
    return auto.from_pretrained(str(hf_dir), local_files_only=True, dtype=torch.float32)


def add_residual_dropout(model: Any, p: float) -> None:
    """Dropout on every attention and MLP output before it joins the residual stream."""
    import torch

    if p <= 0:
        return
    layers = getattr(model.base_model, "layers", None)
    if layers is None:
        raise ValueError(
            f"residual dropout needs a Llama-family model (decoder layers with self_attn and "
            f"mlp); {type(model).__name__} has none"
        )
    drop = torch.nn.Dropout(p)

    def after(module: Any, args: Any, output: Any) -> Any:
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (drop(output[0]), *output[1:])
        return drop(output)

    for layer in layers:
        layer.self_attn.register_forward_hook(after)
        layer.mlp.register_forward_hook(after)


def _verifier_net_class() -> Any:
    """The VerifierNet class (torch imported on first use)."""
    import torch
    import torch.nn.functional as f

    from verisolve.modelstore.likelihood_graph import (
        likelihood_features,
        logits_logprobs,
        token_logprobs,
    )

    class VerifierNet(torch.nn.Module):
        """A classifier (the exported part) with the generator's LM head on the same trunk."""

        def __init__(
            self,
            classifier: Any,
            lm_head: Any | None,
            score_form: str,
            likelihood: Any | None = None,
            likelihood_lr: float | None = None,
            likelihood_gradient: bool = False,
        ) -> None:
            super().__init__()
            self.classifier = classifier
            self.lm_head = lm_head
            self.score_form = score_form
            self.likelihood = likelihood
            self.likelihood_lr = likelihood_lr
            self.likelihood_gradient = likelihood_gradient

        def param_groups(self, learning_rate: float) -> list[dict[str, Any]]:
            """The optimizer's groups: the likelihood head at its own rate when it has one."""
            own, likelihood = self.likelihood_lr, self.likelihood
            if own is None or likelihood is None:
                return [{"params": [p for p in self.parameters() if p.requires_grad]}]
            head = list(likelihood.parameters())
            rest = [
                p for p in self.parameters() if p.requires_grad and all(p is not h for h in head)
            ]
            return [{"params": rest}, {"params": head, "lr": own}]

        def _after_prefix(self, input_ids: Any, attention_mask: Any, prefix: int) -> Any:
            """The hidden states after the shared prefix, the prefix read once for all rows."""
            trunk = self.classifier.base_model
            shared = trunk(input_ids=input_ids[:1, :prefix], use_cache=True).past_key_values
            shared.batch_repeat_interleave(input_ids.shape[0])  # differentiable: grads add up
            return trunk(
                input_ids=input_ids[:, prefix:],
                attention_mask=attention_mask,
                past_key_values=shared,
                use_cache=True,
            ).last_hidden_state

        def lm_weight(self) -> Any:
            """The LM head's weight (the input embedding when the two are tied)."""
            if self.lm_head is not None:
                return self.lm_head.weight
            return self.classifier.get_input_embeddings().weight

        def forward(
            self,
            input_ids: Any,
            attention_mask: Any,
            solution_mask: Any,
            with_lm: bool = True,
            parts: list[tuple[Any, int]] | None = None,
        ) -> tuple[Any, Any, Any]:
            """Value logits [rows, tokens]; LM logits and targets at the solution's tokens.

            With `parts` (batching.prompt_parts: row indices, and how many leading tokens those
            rows share), each part's shared tokens are read once, their keys and values serving
            every row of the part; the outputs are the same as without, up to rounding, but
            for the value logits at a part's shared positions and past its widest row (0 there;
            all before or after the solutions the losses read). One call for all parts, as
            data-parallel training (DDP) needs one forward per backward.
            """
            if parts is None:
                return self._forward(input_ids, attention_mask, solution_mask, with_lm, 0)
            values: Any = None
            logits: list[Any] = [None] * input_ids.shape[0]
            targets: list[Any] = [None] * input_ids.shape[0]
            for rows, prefix in parts:
                width = int(attention_mask[rows].sum(dim=1).max())
                part = (input_ids[rows, :width], attention_mask[rows, :width])
                got = self._forward(*part, solution_mask[rows, :width], with_lm, prefix)
                if values is None:
                    values = got[0].new_zeros(input_ids.shape)
                values[rows, :width] = got[0]
                if with_lm:
                    # Row-major, as the mask indexing without parts orders them.
                    per_row = solution_mask[rows, 1:width].sum(dim=1).tolist()
                    for row, lm, target in zip(
                        rows.tolist(), got[1].split(per_row), got[2].split(per_row), strict=True
                    ):
                        logits[row], targets[row] = lm, target
            if not with_lm:
                return values, None, None
            return values, torch.cat(logits), torch.cat(targets)

        def _forward(
            self,
            input_ids: Any,
            attention_mask: Any,
            solution_mask: Any,
            with_lm: bool,
            prefix: int,
        ) -> tuple[Any, Any, Any]:
            """forward's outputs for rows that share their first `prefix` tokens (0: none)."""
            rows = input_ids.shape[0]
            if prefix > 0:
                hidden = self._after_prefix(input_ids, attention_mask, prefix)
                input_ids, solution_mask = input_ids[:, prefix:], solution_mask[:, prefix:]
            else:
                trunk = self.classifier.base_model
                out = trunk(input_ids=input_ids, attention_mask=attention_mask)
                hidden = out.last_hidden_state
            head_in = hidden
            if hasattr(self.classifier, "dropout"):
                head_in = self.classifier.dropout(hidden)
            values = self.classifier.score(head_in).squeeze(-1)
            every = None  # the LM logits at every position, when the features' loss reaches them
            if self.likelihood is not None:
                if self.likelihood_gradient:
                    every = f.linear(hidden[:, :-1], self.lm_weight())
                    logprobs = logits_logprobs(every, input_ids, solution_mask)
                else:
                    with torch.no_grad():
                        logprobs = token_logprobs(
                            hidden, self.lm_weight(), input_ids, solution_mask
                        )
                features = likelihood_features(logprobs, solution_mask)
                values = values + self.likelihood(features).squeeze(-1)
            if prefix > 0:
                values = torch.cat([values.new_zeros(rows, prefix), values], dim=1)
            if not with_lm:
                return values, None, None
            # Position p predicts token p + 1: solution tokens are the targets.
            targets_at = solution_mask[:, 1:]
            if every is not None:
                logits = every[targets_at]
            else:
                logits = f.linear(hidden[:, :-1][targets_at], self.lm_weight())
            return values, logits, input_ids[:, 1:][targets_at]

    return VerifierNet


def build_verifier(
    hf_dir: Path,
    score_form: str,
    *,
    with_lm: bool,
    dropout: float,
    likelihood: bool = False,
    likelihood_lr: float | None = None,
    value_head: bool = True,
    likelihood_gradient: bool = False,
) -> Any:
    """A verifier net initialised from a causal LM's weights; its value head fresh (seeded).

    `likelihood` (token form only) adds the likelihood-feature head, which needs the LM head;
    `likelihood_lr` is its learning rate (None: the trunk's). Without `value_head` the value
    head on the hidden states is zero and frozen: the score is the likelihood head's alone.
    With `likelihood_gradient` the losses on the score reach the trunk and the LM head through
    the log-probabilities the likelihood head reads (else those are fixed features).
    """
    import copy

    import torch
    import transformers

    from verisolve.modelstore.likelihood_graph import likelihood_head

    causal = load_causal_lm(hf_dir)
    config = copy.deepcopy(causal.config)
    config.num_labels = 1
    config.classifier_dropout = 0.0
    config.use_cache = False
    if config.pad_token_id is None:
        config.pad_token_id = _pad_id(hf_dir, config)
    auto: Any = (
        transformers.AutoModelForTokenClassification
        if score_form == "token"
        else transformers.AutoModelForSequenceClassification
    )
    classifier = auto.from_config(config)
    classifier.base_model.load_state_dict(causal.base_model.state_dict())
    if likelihood and score_form != "token":
        raise ValueError("likelihood features need the token form (a value after every token)")
    lm_head = None
    if (with_lm or likelihood) and not getattr(config, "tie_word_embeddings", False):
        lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        lm_head.weight.data.copy_(causal.get_output_embeddings().weight.data)
    head = likelihood_head() if likelihood else None  # after the trunk: same seeds as before
    if not value_head:
        if head is None:
            raise ValueError("a verifier without its value head needs the likelihood head")
        for param in classifier.score.parameters():
            param.data.zero_()
            param.requires_grad_(False)
    if likelihood_gradient and head is None:
        raise ValueError("the likelihood gradient needs the likelihood head")
    net = _verifier_net_class()(
        classifier, lm_head, score_form, head, likelihood_lr, likelihood_gradient
    )
    add_residual_dropout(classifier, dropout)
    return net


def _pad_id(hf_dir: Path, config: Any) -> int:
    """The tokenizer's pad id, else the first EOS id."""
    from verisolve.modelstore.export import eos_token_ids
    from verisolve.training.tokens import load_tokenizer

    tokenizer = load_tokenizer(hf_dir)
    pad = tokenizer.token_to_id(_special(hf_dir, "pad_token") or "")
    if pad is not None:
        return int(pad)
    eos = eos_token_ids(hf_dir) or [config.eos_token_id]
    return int(eos[0] if isinstance(eos, list) else eos)


def _special(hf_dir: Path, name: str) -> str | None:
    """A special token's text from tokenizer_config.json, if named there."""
    import json

    path = hf_dir / "tokenizer_config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def save_hf(model: Any, hf_src: Path, out_dir: Path) -> Path:
    """A Hugging Face directory: the model's config and safetensors, the source's tokenizer."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        if (hf_src / name).is_file() and not (out_dir / name).is_file():
            shutil.copy2(hf_src / name, out_dir / name)
    return out_dir
