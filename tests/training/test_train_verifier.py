"""`verisolve train verifier`: learns what is learnable, not noise; exported scores match torch."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from training_data import write_candidates
from typer.testing import CliRunner

from verisolve.cli.app import app
from verisolve.inference.verifier import Verifier, verifier_text
from verisolve.modelstore.manifest import Manifest
from verisolve.settings import get_settings

runner = CliRunner()
FAST = ["--batch-tokens", "2048", "--accumulation", "1", "--learning-rate", "3e-3"]


def train(*args: str) -> Manifest:
    """Run the command, fail with its output if it fails; the registered model's manifest."""
    result = runner.invoke(app, ["train", "verifier", *args])
    assert result.exit_code == 0, result.output
    name = args[args.index("--name") + 1]
    return Manifest.load(get_settings().models_path / name)


def score_file(data: Path, verifier: str, out: Path) -> list[dict[str, Any]]:
    """`verisolve score` on a candidate file; its output lines, each with a score and values."""
    result = runner.invoke(app, ["score", str(data), "--verifier", verifier, "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(0 <= r["score"] <= 1 and r["token_values"] for r in rows)
    return rows


def last_epoch(manifest: Manifest) -> dict[str, Any]:
    assert manifest.training is not None
    return dict(manifest.training["epochs"][-1])


def test_a_verifier_learns_what_the_text_shows(tiny_base: Path, tmp_path: Path) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 120)
    manifest = train(
        "--candidates",
        str(data),
        "--base",
        str(tiny_base),
        "--name",
        "learned",
        "--epochs",
        "3",
        "--val-fraction",
        "0.25",
        *FAST,
    )
    metrics = last_epoch(manifest)
    assert metrics["auroc"] >= 0.9
    assert metrics["auroc_within_problem"] >= 0.9
    assert metrics["problems"] == 30
    assert metrics["accuracy_verifier_top1"] > metrics["accuracy_first_sample"]
    assert manifest.kind == "verifier"
    assert manifest.score_form == "token"
    training = manifest.training or {}
    assert training["data"]["problems_validation"] == 30
    assert training["data"]["sha256"]
    assert training["base"]["sha256"]
    assert training["hyperparameters"]["epochs"] == 3
    assert training["seed"] == 0
    assert {"torch", "transformers", "accelerate"} <= set(training["versions"])
    # The registered verifier scores a file at once.
    rows = score_file(data, "learned", tmp_path / "scored.jsonl")
    assert len(rows) == 480
    assert rows[0]["correct"] in (True, False)  # other fields kept
    # A file of another system's candidates: score, then evaluate what `score` wrote.
    theirs = tmp_path / "theirs.jsonl"
    lines = []
    for row in rows[:80]:
        a, b = map(int, re.findall(r"has (\d+) apples and buys (\d+)", row["question"])[0])
        problem = {"problem": row["question"].split(":")[0], "gold": a + b}
        lines.append({**problem, "question": row["question"], "completion": row["completion"]})
    theirs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    score_file(theirs, "learned", tmp_path / "theirs-scored.jsonl")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "theirs-scored.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_problems"] == 20
    assert report["strategies"]["verifier"] > report["test_at_1"]
    assert report["auroc"] >= 0.9


def test_shuffled_labels_teach_nothing(tiny_base: Path, tmp_path: Path) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 120, shuffle=True)
    manifest = train(
        "--candidates",
        str(data),
        "--base",
        str(tiny_base),
        "--name",
        "noise",
        "--epochs",
        "3",
        "--val-fraction",
        "0.25",
        *FAST,
    )
    assert last_epoch(manifest)["auroc"] <= 0.65


@pytest.mark.parametrize("form", ["token", "sequence", "token-likelihood"])
def test_exported_scores_equal_torch(tiny_base: Path, tmp_path: Path, form: str) -> None:
    import torch

    from verisolve.training.base import resolve_base
    from verisolve.training.data import load_candidate_file
    from verisolve.training.modeling import build_verifier
    from verisolve.training.publish import publish_verifier
    from verisolve.training.verifier import VerifierOptions, VerifierTask, _tokenise

    candidates = load_candidate_file(write_candidates(tmp_path / "c.jsonl", 6)).candidates
    base = resolve_base(str(tiny_base))
    likelihood = form == "token-likelihood"
    form = form.removesuffix("-likelihood")
    options = VerifierOptions(score_form=form, likelihood_features=likelihood)
    torch.manual_seed(3)
    net = build_verifier(tiny_base, form, with_lm=True, dropout=0.0, likelihood=likelihood)
    net.eval()
    with torch.no_grad():  # a head that spreads the scores, so equality means something
        net.classifier.score.weight.mul_(40.0)
        if likelihood:  # and a likelihood head that reads every feature
            net.likelihood.weight.copy_(torch.tensor([[0.2, 0.5, 0.1, -0.02]]))
            net.likelihood.bias.fill_(4.0)
    examples = _tokenise(base, candidates, options)
    pad = int(net.classifier.config.pad_token_id)
    with torch.no_grad():
        expected = VerifierTask(examples, [], [], pad, options).scores(net, examples)
    publish_verifier(net, base, "exported", {}, options, tmp_path / "work")
    verifier = Verifier.load(get_settings().models_path / "exported")
    texts = [verifier_text(base.prompt, c.question, c.completion) for c in candidates]
    prefixes = [len(base.prompt.render(c.question)) for c in candidates]
    got = [s.score for s in verifier.score_texts(texts, prefixes)]
    assert max(expected) - min(expected) > 0.05
    assert got == pytest.approx(expected, abs=1e-4)
    one = candidates[0]
    assert verifier.score(one.question, [one.completion])[0].score == pytest.approx(got[0])
    assert verifier.needs_prefixes is likelihood
    if likelihood:
        with pytest.raises(ValueError, match="prompt length"):
            verifier.score_texts(texts)


def test_likelihood_features_train_and_score(tiny_base: Path, tmp_path: Path) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 40)
    manifest = train(
        "--candidates", str(data), "--base", str(tiny_base), "--name", "likely",
        "--likelihood-features", "--val-fraction", "0.25", *FAST,
    )  # fmt: skip
    training = manifest.training or {}
    assert training["hyperparameters"]["likelihood_features"] is True
    assert last_epoch(manifest)["problems"] == 10
    assert len(score_file(data, "likely", tmp_path / "scored.jsonl")) == 160


def test_the_likelihood_head_learns_at_its_own_rate(tiny_base: Path, tmp_path: Path) -> None:
    from verisolve.modelstore.likelihood_graph import LIKELIHOOD_FEATURES, LIKELIHOOD_PRIOR

    data = write_candidates(tmp_path / "c.jsonl", 40)
    moved = {}
    for name, extra in (("same", []), ("own", ["--likelihood-learning-rate", "0.3"])):
        manifest = train(
            "--candidates", str(data), "--base", str(tiny_base), "--name", name,
            "--likelihood-features", "--val-fraction", "0.25", *FAST, *extra,
        )  # fmt: skip
        training = manifest.training or {}
        assert training["hyperparameters"]["likelihood_lr"] == (0.3 if extra else None)
        head = training["likelihood_head"]
        assert set(head) == {*LIKELIHOOD_FEATURES, "bias"}
        weights = [head[f] for f in LIKELIHOOD_FEATURES]
        moved[name] = max(abs(w - p) for w, p in zip(weights, LIKELIHOOD_PRIOR, strict=True))
    # Adam moves a weight by about its learning rate per step: 3e-3 against 0.3.
    assert moved["own"] > 10 * moved["same"]


def test_without_the_value_head_the_likelihood_head_scores_alone(
    tiny_base: Path, tmp_path: Path
) -> None:
    from verisolve.training.modeling import build_verifier

    net = build_verifier(
        tiny_base, "token", with_lm=True, dropout=0.0, likelihood=True, likelihood_lr=0.1,
        value_head=False,
    )  # fmt: skip
    frozen = list(net.classifier.score.parameters())
    assert all(not p.requires_grad and not p.any() for p in frozen)
    groups = net.param_groups(1e-4)
    assert [g.get("lr") for g in groups] == [None, 0.1]
    assert not any(p is f for g in groups for p in g["params"] for f in frozen)
    data = write_candidates(tmp_path / "c.jsonl", 40)
    manifest = train(
        "--candidates", str(data), "--base", str(tiny_base), "--name", "likely-only",
        "--likelihood-features", "--no-value-head", "--value-weight", "0", "--rank-weight", "1",
        "--likelihood-learning-rate", "0.05", "--val-fraction", "0.25", *FAST,
    )  # fmt: skip
    assert (manifest.training or {})["hyperparameters"]["value_head"] is False
    assert len(score_file(data, "likely-only", tmp_path / "scored.jsonl")) == 160


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--no-value-head"], "--no-value-head needs --likelihood-features"),
        (
            ["--likelihood-learning-rate", "0.01"],
            "--likelihood-learning-rate needs --likelihood-features",
        ),
        (
            ["--likelihood-features", "--score-form", "sequence"],
            "--likelihood-features needs --score-form token",
        ),
        (["--likelihood-gradient"], "--likelihood-gradient needs --likelihood-features"),
    ],
)
def test_likelihood_options_are_refused_without_what_they_need(
    tiny_base: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 8)
    result = runner.invoke(app, [
        "train", "verifier", "--candidates", str(data), "--base", str(tiny_base),
        "--name", "nope", *flags, *FAST,
    ])  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output


def test_the_likelihood_gradient_reaches_the_trunk(tiny_base: Path) -> None:
    import torch

    from verisolve.training.modeling import build_verifier

    ids = torch.tensor([[5, 9, 14, 3, 7, 11], [5, 9, 14, 4, 8, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    solution = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    outputs, grads = {}, {}
    for gradient in (False, True):
        torch.manual_seed(0)
        net = build_verifier(
            tiny_base, "token", with_lm=True, dropout=0.0, likelihood=True, value_head=False,
            likelihood_gradient=gradient,
        )  # fmt: skip
        values, logits, targets = net(ids, attention, solution)
        (values[0, 5] - values[1, 4]).backward()  # a score difference, as the ranking loss
        outputs[gradient] = (values.detach(), logits.detach(), targets)
        embed = net.classifier.get_input_embeddings().weight.grad
        grads[gradient] = 0.0 if embed is None else float(embed.abs().sum())
    # The same scores, LM logits and targets either way (one LM head pass, or two) ...
    for before, after in zip(outputs[False], outputs[True], strict=True):
        torch.testing.assert_close(before, after)
    # ... but only with the gradient does a score's loss train the trunk.
    assert grads[False] == 0.0
    assert grads[True] > 0.0


@pytest.mark.parametrize("likelihood", [False, True])
def test_shared_prompts_give_the_same_losses_and_gradients(
    tiny_base: Path, likelihood: bool
) -> None:
    import torch

    from verisolve.training.batching import Example, collate
    from verisolve.training.modeling import build_verifier
    from verisolve.training.verifier import VerifierOptions, VerifierTask, count_targets

    rng = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(5, 200, (n,), generator=rng).tolist()

    rows = []
    for group, (prompt_length, n_rows) in enumerate([(20, 4), (27, 3), (9, 1)]):
        prompt = tokens(prompt_length)
        for row in range(n_rows):
            solution = tokens(int(torch.randint(4, 20, (1,), generator=rng)))
            rows.append(Example((*prompt, *solution), prompt_length, float(row % 2), group))
    batch = collate(rows, pad_id=0)
    extra = {"likelihood": True, "likelihood_gradient": True} if likelihood else {}
    results = {}
    for share in (False, True):
        torch.manual_seed(0)
        net = build_verifier(tiny_base, "token", with_lm=True, dropout=0.0, **extra)
        options = VerifierOptions(
            rank_weight=1.0, lm_on="right", share_prompts=share,
            likelihood_features=likelihood, likelihood_gradient=likelihood,
        )  # fmt: skip
        loss = VerifierTask(rows, [], [], 0, options).loss(net, batch, count_targets(rows, "right"))
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad and p.grad is not None]
        results[share] = (loss.detach(), torch.cat([g.flatten() for g in grads]))
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-4, atol=1e-6)
    assert float(results[False][1].abs().max()) > 1e-3  # the gradients compared are not zeros


def test_a_verifier_trained_with_shared_prompts_follows_the_same_path(
    tiny_base: Path, tmp_path: Path
) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 60)
    epochs = {}
    for name, extra in (("each", []), ("shared", ["--share-prompts"])):
        manifest = train(
            "--candidates", str(data), "--base", str(tiny_base), "--name", name,
            "--rank-weight", "1", "--epochs", "2", "--val-fraction", "0.25", *FAST, *extra,
        )  # fmt: skip
        assert (manifest.training or {})["hyperparameters"]["share_prompts"] is bool(extra)
        epochs[name] = (manifest.training or {})["epochs"]
    # The same batches (the ranking loss groups them either way) and the same losses up to
    # rounding: the held-out metrics after each epoch agree.
    for each, shared in zip(epochs["each"], epochs["shared"], strict=True):
        assert shared["loss"] == pytest.approx(each["loss"], rel=1e-3)
        assert shared["auroc_within_problem"] == pytest.approx(
            each["auroc_within_problem"], abs=0.02
        )


def test_the_value_loss_learns_with_shared_prompts_and_problems_cut_to_the_budget(
    tiny_base: Path, tmp_path: Path
) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 120)
    # About 50 tokens a candidate: a problem's 4 do not fit 120, so each problem is cut in two.
    manifest = train(
        "--candidates", str(data), "--base", str(tiny_base), "--name", "cut",
        "--share-prompts", "--epochs", "3", "--val-fraction", "0.25",
        "--batch-tokens", "120", "--accumulation", "2", "--learning-rate", "3e-3",
    )  # fmt: skip
    metrics = last_epoch(manifest)
    assert metrics["auroc_within_problem"] >= 0.9
    assert (manifest.training or {})["hyperparameters"]["share_prompts"] is True


def test_the_ranking_loss_trains_the_lm_through_the_likelihood(
    tiny_base: Path, tmp_path: Path
) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 120)
    metrics = {}
    for name, extra in (("fixed", []), ("through", ["--likelihood-gradient"])):
        # No LM loss, no value head and a likelihood head that stays as it starts (mean
        # log-probability): what ranks the candidates can only come through the gradient.
        manifest = train(
            "--candidates", str(data), "--base", str(tiny_base), "--name", name,
            "--likelihood-features", "--no-value-head", "--value-weight", "0",
            "--rank-weight", "1", "--lm-weight", "0", "--likelihood-learning-rate", "0",
            "--epochs", "2", "--val-fraction", "0.25", *FAST, *extra,
        )  # fmt: skip
        metrics[name] = last_epoch(manifest)["auroc_within_problem"]
        assert (manifest.training or {})["hyperparameters"]["likelihood_gradient"] is bool(extra)
    assert metrics["through"] >= 0.9
    assert metrics["through"] > metrics["fixed"] + 0.2


def test_the_ranking_loss_alone_teaches_the_order_within_problems(
    tiny_base: Path, tmp_path: Path
) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 120)
    manifest = train(
        "--candidates",
        str(data),
        "--base",
        str(tiny_base),
        "--name",
        "ranked",
        "--epochs",
        "3",
        "--val-fraction",
        "0.25",
        "--value-weight",
        "0",
        "--rank-weight",
        "1",
        *FAST,
    )
    metrics = last_epoch(manifest)
    assert metrics["auroc_within_problem"] >= 0.9
    assert metrics["accuracy_verifier_top1"] > metrics["accuracy_first_sample"]
    assert manifest.training is not None
    assert manifest.training["hyperparameters"]["rank_weight"] == 1.0


def test_no_loss_at_all_is_refused(tiny_base: Path, tmp_path: Path) -> None:
    data = write_candidates(tmp_path / "c.jsonl", 8)
    args = ["--candidates", str(data), "--base", str(tiny_base), "--name", "nothing"]
    result = runner.invoke(
        app, ["train", "verifier", *args, "--value-weight", "0", "--rank-weight", "0"]
    )
    assert result.exit_code == 1
    assert "--value-weight and --rank-weight are both 0" in result.output
    assert not (get_settings().models_path / "nothing").exists()
