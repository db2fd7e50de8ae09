"""Training a verifier the paper's way (token form) or as a reward model (sequence form).

Token form: a value after every solution token, mean squared error of its sigmoid against the
candidate's 0/1 label, trained jointly with the language-modelling loss on the solution tokens
(question tokens are in neither loss). Sequence form: one logit at the last token, binary
cross-entropy. The trunk starts from the base generator's weights; the value head is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from verisolve.modelstore.manifest import Manifest
from verisolve.training.base import BaseModel
from verisolve.training.batching import Example, collate, plan_batches, prompt_parts
from verisolve.training.data import Dataset, LabelledCandidate, check_labels, split_problems
from verisolve.training.loop import LoopConfig, LoopRun, cleanup, train
from verisolve.training.metrics import verifier_metrics
from verisolve.training.publish import provenance, publish_verifier
from verisolve.training.tokens import load_tokenizer, verifier_example

LM_ON = ("all", "right")


@dataclass(frozen=True)
class VerifierOptions:
    """What a verifier run does beyond the loop's hyperparameters."""

    score_form: str = "token"
    lm_weight: float = 1.0
    # Weight of the within-problem ranking loss: over each pair of a problem's right and wrong
    # candidates, -log sigmoid(score(right) - score(wrong)) at the scored (last) token. A value
    # loss alone lets the verifier lower its error mostly by learning which problems are hard;
    # this term rewards only telling a problem's candidates apart, which is what selection uses.
    rank_weight: float = 0.0
    value_weight: float = 1.0  # of the value loss (MSE per token, or BCE per row)
    # Token form: the value also reads the solution's log-probabilities under the LM head
    # (see verisolve.training.modeling.likelihood_features).
    likelihood_features: bool = False
    # The candidates the LM loss learns from: "all" (the paper's joint objective on the
    # verifier's data) or "right" ones only, so that the LM head, which the likelihood features
    # read, learns right solutions and not the generator's slips.
    lm_on: str = "all"
    # The likelihood head's learning rate (None: --learning-rate). The head has five weights and
    # starts as a ranking by mean log-probability; at the trunk's rate it barely moves, so the
    # value head's weight in the score grows with the steps while the likelihood's stays put.
    likelihood_lr: float | None = None
    # False: the value head on the hidden states is left out (zero, frozen) and the score is
    # the likelihood head's alone. On repro mini's data that head ranks a problem's candidates
    # better than the sum does: the value head's share is mostly noise within a problem.
    value_head: bool = True
    # True: the value and ranking losses also train the trunk and the LM head through the
    # log-probabilities the likelihood head reads, so the language model itself learns to give
    # a problem's right candidates more probability than its wrong ones. False: those
    # log-probabilities are fixed features and only the LM loss trains the trunk.
    likelihood_gradient: bool = False
    # True: a problem's candidates in a batch read their shared prompt once (its keys and
    # values serve them all; see batching.prompt_parts). The same losses up to rounding without
    # dropout; with dropout, the prompt's dropout mask is shared by the problem's candidates.
    share_prompts: bool = False

    def __post_init__(self) -> None:
        if self.value_weight <= 0 and self.rank_weight <= 0:
            raise ValueError(
                "--value-weight and --rank-weight are both 0: no loss would teach the verifier"
            )
        if self.likelihood_features and self.score_form != "token":
            raise ValueError("--likelihood-features needs --score-form token")
        if self.likelihood_lr is not None and not self.likelihood_features:
            raise ValueError("--likelihood-learning-rate needs --likelihood-features")
        if self.likelihood_gradient and not self.likelihood_features:
            raise ValueError("--likelihood-gradient needs --likelihood-features")
        if not self.value_head and not self.likelihood_features:
            raise ValueError("--no-value-head needs --likelihood-features: nothing would score")
        if self.lm_on not in LM_ON:
            raise ValueError(f"--lm-on {self.lm_on!r}: expected one of {', '.join(LM_ON)}")

    dropout: float = 0.0
    val_fraction: float = 0.1
    max_length: int | None = 1024
    int8: bool = False


class VerifierTask:
    """The verifier's losses and validation for the training loop."""

    def __init__(
        self,
        examples: Sequence[Example],
        val: Sequence[Example],
        val_candidates: Sequence[LabelledCandidate],
        pad_id: int,
        options: VerifierOptions,
    ) -> None:
        self.examples = examples
        self.val = val
        self.val_candidates = val_candidates
        self.pad_id = pad_id
        self.options = options
        # The ranking loss compares a problem's rows, so they share a batch; prompt sharing
        # gains from them together but can have them cut to the budget.
        self.grouped = options.rank_weight > 0 or options.share_prompts
        self.split_groups = options.rank_weight <= 0

    def counts(self, indices: Sequence[int]) -> dict[str, float]:
        """Rows, solution tokens (value targets), LM targets and ranked pairs of these examples."""
        return count_targets([self.examples[i] for i in indices], self.options.lm_on)

    def loss(self, model: Any, batch: dict[str, Any], totals: dict[str, float]) -> Any:
        """Value loss (MSE per token, or BCE per row) plus the weighted LM loss."""
        import torch.nn.functional as f

        with_lm = self.options.lm_weight > 0
        parts = prompt_parts(batch) if self.options.share_prompts else None
        values, logits, targets = model(
            batch["input_ids"], batch["attention_mask"], batch["solution_mask"], with_lm, parts
        )
        values = values.float()
        if self.options.score_form == "token":
            mask = batch["solution_mask"]
            labels = batch["labels"][:, None].expand_as(values)[mask]
            value = f.mse_loss(values[mask].sigmoid(), labels, reduction="sum")
            loss = self.options.value_weight * value / max(totals["value"], 1.0)
        else:
            last = values.gather(1, batch["last"][:, None]).squeeze(1)
            value = f.binary_cross_entropy_with_logits(last, batch["labels"], reduction="sum")
            loss = self.options.value_weight * value / max(totals["rows"], 1.0)
        if self.options.rank_weight > 0 and totals.get("pairs", 0.0) > 0:
            last = values.gather(1, batch["last"][:, None]).squeeze(1)
            rank = ranking_loss(last, batch["labels"], batch["groups"])
            loss = loss + self.options.rank_weight * rank / totals["pairs"]
        if with_lm and logits is not None and self.options.lm_on == "right":
            targets_at = batch["solution_mask"][:, 1:]
            row_label = batch["labels"][:, None].expand_as(targets_at)[targets_at]
            logits, targets = logits[row_label >= 0.5], targets[row_label >= 0.5]
        if with_lm and logits is not None and logits.shape[0] > 0:
            lm = f.cross_entropy(logits.float(), targets, reduction="sum")
            loss = loss + self.options.lm_weight * lm / max(totals["lm"], 1.0)
        return loss

    def scores(self, model: Any, examples: Sequence[Example]) -> list[float]:
        """P(correct) at each example's last token, in order."""
        out = [0.0] * len(examples)
        lengths = [len(e.ids) for e in examples]
        device = next(model.parameters()).device
        for batch in plan_batches(lengths, 8192, seed=0, shuffle=False):
            tensors = collate([examples[i] for i in batch], self.pad_id)
            values, _, _ = model(
                tensors["input_ids"].to(device),
                tensors["attention_mask"].to(device),
                tensors["solution_mask"].to(device),
                False,
            )
            last = values.float().gather(1, tensors["last"].to(device)[:, None]).sigmoid()
            for index, value in zip(batch, last.squeeze(1).tolist(), strict=True):
                out[index] = float(value)
        return out

    def validate(self, model: Any) -> dict[str, Any]:
        """Held-out loss, AUROC overall and within problems, top-1 against the baselines."""
        if not self.val:
            return {}
        totals = count_targets(self.val, self.options.lm_on)
        device = next(model.parameters()).device
        loss = 0.0
        lengths = [len(e.ids) for e in self.val]
        groups = [e.group for e in self.val] if self.grouped else None
        split = self.split_groups
        for batch in plan_batches(lengths, 8192, seed=0, shuffle=False, groups=groups, split=split):
            tensors = collate([self.val[i] for i in batch], self.pad_id)
            loss += float(self.loss(model, {k: v.to(device) for k, v in tensors.items()}, totals))
        metrics = verifier_metrics(self.scores(model, self.val), self.val_candidates)
        return {"loss": loss, **metrics}


def count_targets(rows: Sequence[Example], lm_on: str = "all") -> dict[str, float]:
    """Per loss term, its elements in these rows: rows, solution tokens, LM targets, pairs.

    `lm_on="right"` counts the LM targets of right candidates only (see VerifierOptions).
    """
    right: dict[int, int] = {}
    wrong: dict[int, int] = {}
    for e in rows:
        tally = right if e.label >= 0.5 else wrong
        tally[e.group] = tally.get(e.group, 0) + 1
    return {
        "rows": float(len(rows)),
        "value": float(sum(e.n_solution for e in rows)),
        "lm": float(
            sum(len(e.ids) - max(e.start, 1) for e in rows if lm_on == "all" or e.label >= 0.5)
        ),
        "pairs": float(sum(n * wrong.get(g, 0) for g, n in right.items())),
    }


def learned_head(head: Any) -> dict[str, float]:
    """The likelihood head's weight on each feature, and its bias (for the manifest)."""
    from verisolve.modelstore.likelihood_graph import LIKELIHOOD_FEATURES

    weights = head.weight.detach().float().cpu()[0].tolist()
    learned = {f: round(float(w), 6) for f, w in zip(LIKELIHOOD_FEATURES, weights, strict=True)}
    return {**learned, "bias": round(float(head.bias.detach().float().cpu()[0]), 6)}


def ranking_loss(scores: Any, labels: Any, groups: Any) -> Any:
    """Sum over (right, wrong) pairs of one group of softplus(score(wrong) - score(right))."""
    import torch.nn.functional as f

    right = labels >= 0.5
    pairs = (groups[:, None] == groups[None, :]) & right[:, None] & ~right[None, :]
    margins = scores[None, :] - scores[:, None]  # [i, j]: score(j) - score(i)
    return f.softplus(margins[pairs]).sum()


def _tokenise(
    base: BaseModel, candidates: Sequence[LabelledCandidate], options: VerifierOptions
) -> list[Example]:
    """Token rows of the candidates, as the exported verifier will score them."""
    tokenizer = load_tokenizer(base.hf_dir)
    groups: dict[str, int] = {}
    return [
        verifier_example(
            tokenizer,
            base.prompt,
            c.question,
            c.completion,
            label=1.0 if c.correct else 0.0,
            group=groups.setdefault(c.problem, len(groups)),
            max_length=options.max_length,
        )
        for c in candidates
    ]


def train_verifier(
    dataset: Dataset,
    base: BaseModel,
    name: str,
    config: LoopConfig,
    options: VerifierOptions,
    run: LoopRun,
) -> Manifest | None:
    """Train, export, register; the manifest (None on a process other than the main one)."""
    from accelerate.utils import set_seed

    from verisolve.training.modeling import build_verifier

    check_labels(dataset.candidates)
    train_set, val_set = split_problems(dataset.candidates, options.val_fraction, config.seed)
    check_labels(train_set)
    set_seed(config.seed)
    net = build_verifier(
        base.hf_dir,
        options.score_form,
        with_lm=options.lm_weight > 0,
        dropout=options.dropout,
        likelihood=options.likelihood_features,
        likelihood_lr=options.likelihood_lr,
        value_head=options.value_head,
        likelihood_gradient=options.likelihood_gradient,
    )
    pad_id = int(net.classifier.config.pad_token_id)
    task = VerifierTask(
        _tokenise(base, train_set, options),
        _tokenise(base, val_set, options),
        val_set,
        pad_id,
        options,
    )
    extra = {"kind": "verifier", **asdict(options), "base": base.sha256}
    trained = train(net, task, config, run, extra)
    if trained is None:
        return None
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return None
    counts = {
        "candidates_train": len(train_set),
        "candidates_validation": len(val_set),
        "problems_train": len({c.problem for c in train_set}),
        "problems_validation": len({c.problem for c in val_set}),
        "right_train": sum(c.correct for c in train_set),
        "right_validation": sum(c.correct for c in val_set),
    }
    training = provenance(
        "verifier", dataset.source | counts, base, config, asdict(options), run.epoch_metrics
    )
    if trained.likelihood is not None:
        training["likelihood_head"] = learned_head(trained.likelihood)
    manifest = publish_verifier(trained, base, name, training, options, run.work_dir)
    cleanup(run, True)
    return manifest
