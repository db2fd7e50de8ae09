"""`verisolve repro mini`: the paper's pipeline at small scale, each stage a real command.

Stages: synthetic data, a Llama built from scratch, `train generator`, `solve` the training
problems with N samples, `train verifier` on that job, `solve` the test problems with the
verifier, then the analysis (accuracy against N with bootstrap intervals, and the verifier's
gain against the size of its training set). Everything lives under one folder, with its own
SQLite database and model store; a stage whose result exists is skipped, so an interrupted run
picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from verisolve.jsonl import write_jsonl
from verisolve.repro.scratch import ScratchShape

GENERATOR = "mini-gen"
VERIFIER_BASE = "mini-ver-base"
VERIFIER = "mini-ver"
TRAIN_JOB = "mini-train"
TEST_JOB = "mini-test"


@dataclass(frozen=True)
class Sizes:
    """How big each part of the run is."""

    gen_problems: int  # worked solutions the generator is fine-tuned on
    ver_problems: int  # training problems sampled for the verifier's data
    train_samples: int  # N per verifier-training problem
    test_problems: int
    test_samples: int  # N at test time (the largest N of the curves)
    shape: ScratchShape
    gen_epochs: int = 2
    gen_lr: float = 2e-3
    ver_epochs: int = 1
    # Measured on the held-out tenth of the default run's verifier data (300 problems x 16, one
    # epoch, within-problem AUROC): 0.62 at 1e-3, 0.67 at 3e-4, 0.71 at 1e-4; residual dropout
    # 0.2 (the paper's) added 0.02 at 3e-4; without the LM loss 0.52.
    ver_lr: float = 1e-4
    ver_dropout: float = 0.2
    # The verifier's within-problem ranking loss (`train verifier --rank-weight`); 0 is the
    # paper's value loss alone.
    ver_rank_weight: float = 1.0
    # A model trained from scratch learns from many small steps, not from a few large ones.
    batch_tokens: int = 2048
    accumulation: int = 1
    max_new_tokens: int = 160
    temperature: float = 0.7
    vote_k: int = 3
    # Shares of the verifier's training problems for the data-scaling curve (1.0 is the run's):
    # a sixty-fourth to all of them, as the paper's curve spans a factor of 16 or more. From a
    # sixteenth (188 problems) the default run's gain grew by 1.6 points, within the noise
    # (-0.2 to +3.6); from a sixty-fourth (47) by 6.8 (+4.2 to +9.6). One epoch at every size,
    # as in the paper: trained for as many steps, 47 and 188 problems matched 750 (README).
    scaling: tuple[float, ...] = (0.015625, 0.0625, 0.25, 1.0)
    # The problems' difficulty (`data synth --min-steps --max-steps --distractors`).
    min_steps: int = 2
    max_steps: int = 4
    distractor_rate: float = 0.3
    # The verifier samples problems the generator was not fine-tuned on (see stage_data).
    ver_unseen: bool = True
    # The verifier starts from a language model of the run's shape trained (as the generator
    # is) on this many problems: the generator's and new ones, none of the verifier's or the
    # test set's. 0: from the generator itself, as in the paper, whose verifiers start from a
    # model pretrained on far more text than they are fine-tuned on; here the generator is
    # all the pretraining there is, and a verifier no better at reading the problems than the
    # generator is at writing them cannot check the numbers it copies.
    ver_base_problems: int = 12_000
    # The verifier's value also reads its LM head's log-probabilities of the solution
    # (`train verifier --likelihood-features`).
    ver_likelihood: bool = True
    # With the likelihood features, the score is the likelihood head's alone (`--no-value-head`),
    # learnt by the ranking loss (`--value-weight 0`) at its own rate. On the default run's
    # quarter-data pilot (500 test problems, N = 32, within-problem AUROC / top-1): with the
    # value head, 0.74 / 38.6%; its likelihood term alone 0.80 / 44.4%; the value head alone
    # 0.60 / 26.8% (near chance within a problem, so it only adds noise to the ranking).
    ver_likelihood_lr: float = 1e-2
    # The ranking loss also trains the language model through the log-probabilities the head
    # reads (`--likelihood-gradient`): on the default run's quarter-data pilot, top-1 44.6% and
    # within-problem AUROC 0.82, against 42.8% and 0.78 with them fixed.
    ver_likelihood_gradient: bool = True
    # The verifier's starting model's own shape (`--ver-layers`, `--ver-hidden`), built from
    # scratch with the run's tokenizer; None: the run's shape. On the default run's quarter-data
    # pilot (docs/repro-mini.md), 6 layers of hidden size 320 (7.5M parameters against 3.2M)
    # gave top-1 52.8% against 45.6%, at about twice the verifier stages' time.
    ver_shape: ScratchShape | None = None
    # The starting model's learning rate (`--ver-base-learning-rate`); None: the generator's.
    # The larger shape above learned the problems worse than the default's at 2e-3 (held-out
    # loss 0.172 against 0.052) and better at 1e-3 (0.030).
    ver_base_lr: float | None = None
    # A problem's candidates read their shared prompt once in the verifier's training
    # (`train verifier --share-prompts`): the same losses but for dropout's masks on the prompt.
    ver_share_prompts: bool = False

    def __post_init__(self) -> None:
        """Refuse sizes no run can have, naming `repro mini`'s options, before any stage."""
        if self.min_steps > self.max_steps:
            raise ValueError(
                f"--min-steps {self.min_steps} is more than --max-steps {self.max_steps}"
            )
        own = self.ver_shape is not None or self.ver_base_lr is not None
        if not self.ver_base_problems and own:
            raise ValueError(
                "a verifier shape or learning rate of its own (--ver-layers, --ver-hidden, "
                "--ver-base-learning-rate) needs a starting model of its own "
                "(--ver-base-problems above 0)"
            )
        if self.ver_base_lr is not None and not self.ver_base_lr > 0:
            raise ValueError(f"--ver-base-learning-rate {self.ver_base_lr} is not above 0")
        if self.ver_shape is None:
            return
        mine = (self.ver_shape.vocab, self.ver_shape.max_positions)
        if mine != (self.shape.vocab, self.shape.max_positions):
            raise ValueError(
                "the verifier's shape keeps the run's vocabulary and positions "
                f"({self.shape.vocab}, {self.shape.max_positions}), not {mine}"
            )


MINI = Sizes(
    gen_problems=6_000,
    ver_problems=3_000,
    train_samples=16,
    test_problems=500,
    test_samples=32,
    shape=ScratchShape(layers=4, hidden=256, heads=4, vocab=512),
)
SCALE = replace(
    MINI, gen_problems=40_000, ver_problems=8_000, train_samples=100, test_samples=100,
    test_problems=1_000, vote_k=5, shape=ScratchShape(layers=8, hidden=384, heads=6, vocab=1024),
)  # fmt: skip
SMOKE = Sizes(
    gen_problems=200,
    ver_problems=24,
    train_samples=4,
    test_problems=12,
    test_samples=4,
    shape=ScratchShape(layers=1, hidden=64, heads=2, vocab=300, max_positions=256),
    gen_epochs=1,
    max_new_tokens=48,
    scaling=(0.5, 1.0),
    ver_base_problems=400,
    # A generator this small gets no new problem right, and a verifier needs both labels: the
    # smoke run samples the generator's own training problems, which it gets right now and then.
    ver_unseen=False,
)


@dataclass
class Run:
    """One run's folder, sizes and seed, and how it calls verisolve's commands."""

    out: Path
    sizes: Sizes
    seed: int = 0
    say: Callable[[str], None] = print

    @property
    def state(self) -> Path:
        return self.out / "state"

    def env(self) -> dict[str, str]:
        """The commands' environment: this run's own database and model store."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VERISOLVE_")}
        keep = ("VERISOLVE_PROVIDER", "VERISOLVE_GSM8K_DIR")
        env.update({k: os.environ[k] for k in keep if k in os.environ})
        env["VERISOLVE_DATA_DIR"] = str(self.state)
        return env

    def verisolve(self, *args: str) -> None:
        """Run one verisolve command in a child process, its output shown as it comes."""
        command = [sys.executable, "-m", "verisolve", *args]
        done = subprocess.run(command, env=self.env(), check=False)
        if done.returncode != 0:
            raise ReproError(f"`verisolve {' '.join(args)}` failed (exit {done.returncode})")

    def file(self, name: str) -> Path:
        return self.out / name


class ReproError(RuntimeError):
    """A stage of the reproduction failed."""


class SettingsMismatchError(ReproError):
    """The folder holds a run started with other sizes or another seed."""


RUN_FILE = "run.json"


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _read_back(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as run.json reads them back (tuples become lists), so that they compare equal."""
    read: dict[str, Any] = json.loads(json.dumps(settings))
    return read


def claim_folder(run: Run) -> None:
    """Record the run's sizes and seed in its folder, or check them against those recorded.

    Stages are skipped when their results exist, so one folder holds one run: resumed with
    other sizes, it would report the first run's results under the second run's settings.
    """
    settings = _read_back({"seed": run.seed, **asdict(run.sizes)})
    path = run.file(RUN_FILE)
    if path.is_file():
        # A setting added since the folder was made is compared at its default, which is what
        # the run had then.
        defaults = {f.name: f.default for f in fields(Sizes) if f.default is not MISSING}
        recorded = _flat({**_read_back(defaults), **json.loads(path.read_text("utf-8"))})
        now = _flat(settings)
        changed = [
            f"{key} {recorded.get(key)!r} (now {now.get(key)!r})"
            for key in sorted(recorded.keys() | now.keys())
            if recorded.get(key) != now.get(key)
        ]
        if changed:
            raise SettingsMismatchError(
                f"{run.out} holds a run started with other settings: {', '.join(changed)}; "
                "give another --out, or the options that run was started with"
            )
        return
    run.out.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def _database(run: Run) -> Any:
    from verisolve.db import create_engine

    return create_engine(f"sqlite:///{run.state / 'verisolve.db'}")


def _job(run: Run, name: str) -> Any | None:
    """The newest job of this name, or None."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from verisolve.tables import Job

    if not (run.state / "verisolve.db").is_file():
        return None
    engine = _database(run)
    try:
        with Session(engine) as session:
            query = sa.select(Job).where(Job.name == name).order_by(Job.id.desc()).limit(1)
            job = session.scalars(query).first()
            if job is not None:
                session.expunge(job)
            return job
    finally:
        engine.dispose()


def _finished_job(run: Run, name: str) -> Any:
    """The job of this name, which an earlier stage made; an error if it is missing."""
    job = _job(run, name)
    if job is None:
        raise ReproError(f"no job named {name!r} in {run.state}")
    return job


def _registered(run: Run, name: str) -> bool:
    from verisolve.modelstore.manifest import MANIFEST_FILE

    return (run.state / "models" / name / MANIFEST_FILE).is_file()


def stage_data(run: Run) -> None:
    """Synthetic training and test problems (a question is in one split only).

    The verifier's training problems come from the training split but are not among the
    generator's: sampled on problems it was fine-tuned on, the generator is right more often
    and wrong in other ways than on new problems, and the verifier would learn that
    distribution instead of the test set's. (The paper, with 7,473 problems in all, had to
    reuse them; synthetic data need not. `--smoke` does, see SMOKE.)
    """
    s = run.sizes
    common = ["--min-steps", str(s.min_steps), "--max-steps", str(s.max_steps),
              "--distractors", str(s.distractor_rate)]  # fmt: skip
    pool = run.file("train-pool.jsonl")
    if not run.file("verifier-train.jsonl").is_file() or (
        s.ver_base_problems and not run.file("verifier-base-train.jsonl").is_file()
    ):
        # One seeded stream: the generator's problems, the verifier's, then the verifier
        # base's new ones, so that each file is the same whichever sizes come after it.
        sampled = s.ver_problems if s.ver_unseen else 0
        extra = max(0, s.ver_base_problems - s.gen_problems)
        pooled = s.gen_problems + sampled + extra
        run.verisolve("data", "synth", "--n", str(pooled),
                      "--seed", str(run.seed), "-o", str(pool), *common)  # fmt: skip
        lines = pool.read_text(encoding="utf-8").splitlines()
        ends = s.gen_problems + sampled
        write_jsonl(run.file("train.jsonl"), (json.loads(x) for x in lines[: s.gen_problems]))
        kept = lines[s.gen_problems : ends] if s.ver_unseen else lines[: s.ver_problems]
        write_jsonl(run.file("verifier-train.jsonl"), (json.loads(x) for x in kept))
        if s.ver_base_problems:
            base = lines[: min(s.gen_problems, s.ver_base_problems)] + lines[ends:]
            write_jsonl(run.file("verifier-base-train.jsonl"), (json.loads(x) for x in base))
        pool.unlink()
    if not run.file("test.jsonl").is_file():
        run.verisolve("data", "synth", "--n", str(s.test_problems), "--seed", str(run.seed + 1),
                      "--split", "test", "-o", str(run.file("test.jsonl")), *common)  # fmt: skip


def _scratch(run: Run, folder: str, shape: ScratchShape) -> Path:
    """A Llama of this shape with a tokenizer trained on the generator's training problems
    (the same tokenizer whatever the shape: it depends on the texts and the vocabulary only)."""
    from verisolve.repro.scratch import build_scratch_model

    base = run.file(folder)
    if (base / "config.json").is_file():
        return base
    rows = [json.loads(x) for x in run.file("train.jsonl").read_text("utf-8").splitlines()]
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
    tmp = run.file(f"{folder}.partial")
    build_scratch_model(texts, tmp, shape, seed=run.seed)
    tmp.rename(base)
    return base


def stage_base(run: Run) -> None:
    """A Llama of the run's shape with a tokenizer trained on the training problems."""
    _scratch(run, "base", run.sizes.shape)


def _train_lm(run: Run, problems: str, name: str, base: Path, lr: float) -> None:
    if _registered(run, name):
        return
    s = run.sizes
    run.verisolve(
        "train", "generator", str(run.file(problems)), "--base", str(base),
        "--name", name, "--epochs", str(s.gen_epochs), "--learning-rate", str(lr),
        "--seed", str(run.seed), "--max-length", str(s.shape.max_positions),
        "--batch-tokens", str(s.batch_tokens), "--accumulation", str(s.accumulation),
    )  # fmt: skip


def stage_generator(run: Run) -> None:
    """`verisolve train generator` on the synthetic training set."""
    _train_lm(run, "train.jsonl", GENERATOR, run.file("base"), run.sizes.gen_lr)


def stage_verifier_base(run: Run) -> None:
    """The model the verifier starts from (see Sizes.ver_base_problems), trained as the
    generator is, on more problems, from a model of its own shape if it has one (see
    Sizes.ver_shape); none when the verifier starts from the generator."""
    s = run.sizes
    if not s.ver_base_problems or _registered(run, VERIFIER_BASE):
        return
    scratch = run.file("base")
    if s.ver_shape is not None:
        scratch = _scratch(run, "verifier-scratch", s.ver_shape)
    lr = s.gen_lr if s.ver_base_lr is None else s.ver_base_lr
    _train_lm(run, "verifier-base-train.jsonl", VERIFIER_BASE, scratch, lr)


def _solve(run: Run, problems: str, job: str, samples: int, verifier: str) -> None:
    found = _job(run, job)
    if found is not None and found.status == "done":
        return
    s = run.sizes
    strategy = ["--strategy", "verifier"] if verifier != "none" else []
    run.verisolve(
        "solve", str(run.file(problems)), "--generator", GENERATOR, "--verifier", verifier,
        "-n", str(samples), "--max-new-tokens", str(s.max_new_tokens),
        "--temperature", str(s.temperature), "--seed", str(run.seed), "--vote-k", str(s.vote_k),
        "--name", job, *strategy, "-o", str(run.file(f"{job}.answers.jsonl")),
    )  # fmt: skip


def stage_sample_train(run: Run) -> None:
    """Sample N solutions for each verifier-training problem."""
    _solve(run, "verifier-train.jsonl", TRAIN_JOB, run.sizes.train_samples, "none")


def stage_verifier(run: Run) -> None:
    """`verisolve train verifier` on the training job's labelled samples."""
    if _registered(run, VERIFIER):
        return
    job = _finished_job(run, TRAIN_JOB)
    _train_verifier(run, VERIFIER, ["--jobs", str(job.id)])


def _train_verifier(run: Run, name: str, data: Sequence[str]) -> None:
    s = run.sizes
    base = VERIFIER_BASE if s.ver_base_problems else GENERATOR
    # With the likelihood features, the LM loss learns right solutions only: an LM head that
    # also learns the generator's slips finds them less surprising (on the default run's
    # quarter-data pilot, within-problem AUROC 0.68 against 0.77).
    likelihood = [
        "--likelihood-features", "--lm-on", "right", "--no-value-head", "--value-weight", "0",
        "--likelihood-learning-rate", str(s.ver_likelihood_lr),
        *(["--likelihood-gradient"] if s.ver_likelihood_gradient else []),
    ] if s.ver_likelihood else []  # fmt: skip
    shared = ["--share-prompts"] if s.ver_share_prompts else []
    run.verisolve(
        "train", "verifier", *data, "--base", base, "--name", name,
        "--epochs", str(s.ver_epochs), "--learning-rate", str(s.ver_lr),
        "--rank-weight", str(s.ver_rank_weight), "--dropout", str(s.ver_dropout), *likelihood,
        *shared,
        "--seed", str(run.seed), "--max-length", str(s.shape.max_positions),
        "--batch-tokens", str(s.batch_tokens), "--accumulation", str(s.accumulation),
    )  # fmt: skip


def stage_test(run: Run) -> None:
    """Solve the test problems with N samples each, scored by the verifier."""
    _solve(run, "test.jsonl", TEST_JOB, run.sizes.test_samples, VERIFIER)


def stage_scaling(run: Run) -> None:
    """Verifiers trained on fewer training problems, each scoring the test job's samples."""
    from verisolve.repro.analysis import training_candidates

    job = _finished_job(run, TRAIN_JOB)
    test = _finished_job(run, TEST_JOB)
    rows = list(training_candidates(_database(run), job.id))
    problems = sorted({r["problem"] for r in rows})
    random.Random(run.seed).shuffle(problems)
    test_file = run.file("test-candidates.jsonl")
    if not test_file.is_file():
        write_jsonl(test_file, training_candidates(_database(run), test.id))
    for share in run.sizes.scaling:
        if share >= 1.0:
            continue
        name = f"{VERIFIER}-{round(share * 100)}"
        scored = run.file(f"test-scored-{name}.jsonl")
        if scored.is_file():
            continue
        if not _registered(run, name):
            keep = set(problems[: max(2, round(len(problems) * share))])
            subset = run.file(f"{name}.candidates.jsonl")
            write_jsonl(subset, (r for r in rows if r["problem"] in keep))
            _train_verifier(run, name, ["--candidates", str(subset)])
        run.verisolve("score", str(test_file), "--verifier", name, "-o", str(scored))


def stage_report(run: Run, started: float) -> dict[str, Any]:
    """The result: accuracy per strategy with intervals, curves, scaling; JSON and a plot."""
    from verisolve.repro.analysis import analyse

    test = _finished_job(run, TEST_JOB)
    train = _finished_job(run, TRAIN_JOB)
    run.verisolve("report", str(test.id), "--plot", str(run.file("report-curves.png")))
    result = analyse(run, test.id, train.id)
    result["sizes"] = asdict(run.sizes)
    result["seed"] = run.seed
    result["seconds_this_invocation"] = round(time.monotonic() - started, 1)
    result["command"] = " ".join(["verisolve", *sys.argv[1:]]) if sys.argv else ""
    (run.file("result.json")).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


STAGES: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("synthetic problems", stage_data),
    ("a Llama from scratch, with its own tokenizer", stage_base),
    ("train generator", stage_generator),
    ("train the verifier's starting model", stage_verifier_base),
    ("solve the training problems (samples for the verifier)", stage_sample_train),
    ("train verifier", stage_verifier),
    ("solve the test problems with the verifier", stage_test),
    ("verifiers on less data (scaling curve)", stage_scaling),
)


def run_mini(run: Run) -> dict[str, Any]:
    """Every stage in order, skipping those already done; the result."""
    started = time.monotonic()
    claim_folder(run)
    total = len(STAGES) + 1
    for number, (title, stage) in enumerate(STAGES, start=1):
        run.say(f"[{number}/{total}] {title}")
        begun = time.monotonic()
        stage(run)
        run.say(f"[{number}/{total}] {title}: {time.monotonic() - begun:.0f}s")
    run.say(f"[{total}/{total}] report")
    return stage_report(run, started)
