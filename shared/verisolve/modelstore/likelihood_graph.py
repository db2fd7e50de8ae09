"""A token-form verifier that also reads the likelihood of the solution it scores.

At each solution token the value logit gets a linear term in four features of the LM head's
log-probabilities (`likelihood_features`): the token's own, their running mean and minimum over
the solution so far, and how many tokens so far were unlikely. Training sets the head
(`verisolve train verifier --likelihood-features`); this module holds the features, the file
the head is saved in beside the Hugging Face checkpoint, and the module the ONNX graph is
exported from. The graph takes a `solution_mask` input (1 at the solution's tokens) besides
`input_ids` and `attention_mask`, and returns the value logits, [rows, tokens, 1].

Needs torch (the export or training extra); scoring the exported graph does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LIKELIHOOD_FILE = "likelihood_head.safetensors"
# Features of `likelihood_features`, in order, and the head's starting weight on each: a ranking
# by the solution's mean log-probability, which the training then adjusts.
LIKELIHOOD_FEATURES = ("logprob", "running_mean", "running_min", "unlikely_count")
LIKELIHOOD_PRIOR = (0.0, 5.0, 0.0, 0.0)
UNLIKELY_LOGPROB = -2.0


def token_logprobs(hidden: Any, lm_weight: Any, input_ids: Any, solution_mask: Any) -> Any:
    """[rows, tokens]: log p(token t | tokens before t) at solution tokens, 0 elsewhere."""
    import torch.nn.functional as f

    return logits_logprobs(f.linear(hidden[:, :-1], lm_weight), input_ids, solution_mask)


def logits_logprobs(logits: Any, input_ids: Any, solution_mask: Any) -> Any:
    """token_logprobs from the LM logits at every position but the last ([rows, tokens - 1, V])."""
    import torch

    logits = logits.float()
    picked = torch.log_softmax(logits, dim=-1).gather(2, input_ids[:, 1:, None]).squeeze(-1)
    first = torch.zeros_like(picked[:, :1])
    return torch.cat([first, picked], dim=1) * solution_mask.to(picked.dtype)


def likelihood_features(logprobs: Any, solution_mask: Any) -> Any:
    """[rows, tokens, 4]: the LIKELIHOOD_FEATURES after each token (0 before the solution)."""
    import torch

    mask = solution_mask.to(logprobs.dtype)
    masked = logprobs * mask
    seen = torch.cumsum(mask, dim=1).clamp(min=1.0)
    running_mean = torch.cumsum(masked, dim=1) / seen
    # min over s <= t as a masked reduction: ONNX has no cumulative minimum.
    width = masked.shape[1]
    steps = torch.arange(width, device=masked.device)
    upto = steps[None, :] <= steps[:, None]  # [t, s]: s <= t
    running_min = torch.where(upto, masked[:, None, :], torch.zeros_like(masked[:, None, :]))
    running_min = running_min.min(dim=-1).values
    unlikely = torch.cumsum((logprobs < UNLIKELY_LOGPROB).to(logprobs.dtype) * mask, dim=1)
    return torch.stack([logprobs, running_mean, running_min, unlikely], dim=-1)


def likelihood_head() -> Any:
    """The linear head on the likelihood features, set to LIKELIHOOD_PRIOR with bias 0."""
    import torch

    head = torch.nn.Linear(len(LIKELIHOOD_FEATURES), 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([LIKELIHOOD_PRIOR]))
        head.bias.zero_()
    return head


def save_likelihood(head: Any, lm_head: Any | None, hf_dir: Path) -> Path:
    """The head (and an untied LM head) beside a token-classification checkpoint."""
    from safetensors.torch import save_file

    tensors = {
        "likelihood.weight": head.weight.detach().cpu().contiguous(),
        "likelihood.bias": head.bias.detach().cpu().contiguous(),
    }
    if lm_head is not None:
        tensors["lm_head.weight"] = lm_head.weight.detach().cpu().contiguous()
    path = hf_dir / LIKELIHOOD_FILE
    save_file(tensors, str(path))
    return path


def load_graph_module(hf_dir: Path) -> Any:
    """The exportable module of a checkpoint saved with `save_likelihood` (eager attention)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForTokenClassification

    auto: Any = AutoModelForTokenClassification
    classifier = auto.from_pretrained(
        str(hf_dir), local_files_only=True, attn_implementation="eager"
    )
    tensors = load_file(str(hf_dir / LIKELIHOOD_FILE))
    head = likelihood_head()
    with torch.no_grad():
        head.weight.copy_(tensors["likelihood.weight"])
        head.bias.copy_(tensors["likelihood.bias"])
    lm_weight = tensors.get("lm_head.weight")
    if lm_weight is None:
        if not getattr(classifier.config, "tie_word_embeddings", False):
            raise ValueError(
                f"{hf_dir / LIKELIHOOD_FILE}: no lm_head.weight, and the model's LM head is not "
                "tied to its embeddings"
            )
        lm_weight = classifier.get_input_embeddings().weight
    return _graph_class()(classifier, head, lm_weight).eval()


def _graph_class() -> Any:
    import torch

    class LikelihoodVerifierGraph(torch.nn.Module):
        """input_ids, attention_mask, solution_mask -> value logits [rows, tokens, 1]."""

        def __init__(self, classifier: Any, head: Any, lm_weight: Any) -> None:
            super().__init__()
            self.classifier = classifier
            self.head = head
            self.lm_weight = torch.nn.Parameter(lm_weight.detach().clone(), requires_grad=False)

        def forward(self, input_ids: Any, attention_mask: Any, solution_mask: Any) -> Any:
            trunk = self.classifier.base_model
            hidden = trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            values = self.classifier.score(hidden)
            logprobs = token_logprobs(hidden, self.lm_weight, input_ids, solution_mask)
            return values + self.head(likelihood_features(logprobs, solution_mask))

    return LikelihoodVerifierGraph
