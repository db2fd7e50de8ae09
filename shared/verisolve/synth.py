"""Synthetic grade-school word problems in GSM8K's format, written from templates of our own.

Each problem follows one person and one kind of object through a chain of 2 to 5 arithmetic
steps (containers, daily rates, buying, giving away, keeping a fraction, sharing out, prices,
weights), sometimes with a sentence whose number plays no part. The worked answer has one line
per step with a `<<expr=result>>` calculator annotation and ends in `#### N`; every result is an
integer. A question belongs to the training or the test split by a hash of its text, so a
training file and a test file never share a question, whatever their seeds.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Split = Literal["train", "test"]

# One question in TEST_BUCKETS of every BUCKETS belongs to the test split.
BUCKETS = 5
TEST_BUCKETS = 1
MAX_STEPS = 5
# Attempts per wanted problem before giving up (only reachable with a tiny question space).
MAX_ATTEMPTS_PER_PROBLEM = 200

PEOPLE = (
    ("Amara", "she"), ("Bruno", "he"), ("Chen", "he"), ("Dalia", "she"), ("Emeka", "he"),
    ("Freya", "she"), ("Gus", "he"), ("Hana", "she"), ("Ivo", "he"), ("Jade", "she"),
    ("Kofi", "he"), ("Lena", "she"), ("Mateo", "he"), ("Nora", "she"), ("Omar", "he"),
    ("Priya", "she"), ("Quinn", "he"), ("Rosa", "she"), ("Sami", "he"), ("Tess", "she"),
)  # fmt: skip
FRIENDS = ("a neighbour", "a cousin", "a classmate", "a friend", "the teacher", "a brother")
# (thing, things, container, containers, grams each, dollars each)
OBJECTS = (
    ("apple", "apples", "basket", "baskets", 150, 2),
    ("marble", "marbles", "jar", "jars", 5, 1),
    ("pencil", "pencils", "box", "boxes", 10, 2),
    ("egg", "eggs", "carton", "cartons", 60, 1),
    ("cookie", "cookies", "tin", "tins", 20, 3),
    ("sticker", "stickers", "sheet", "sheets", 1, 1),
    ("book", "books", "shelf", "shelves", 400, 8),
    ("shell", "shells", "bucket", "buckets", 12, 1),
    ("card", "cards", "pack", "packs", 2, 1),
    ("lemon", "lemons", "crate", "crates", 100, 1),
)  # fmt: skip
RATE_VERBS = ("collects", "picks", "makes", "finds", "buys")
FRACTIONS = ((1, 2, "half"), (1, 3, "a third"), (2, 3, "two thirds"), (1, 4, "a quarter"),
             (3, 4, "three quarters"))  # fmt: skip
DISTRACTORS = (
    "{friend_cap} has {x} {other}.",
    "{name} is {x} years old.",
    "The shop is {x} minutes from {name}'s house.",
    "Last year {name} had {x} {other}.",
)


@dataclass(frozen=True)
class SynthProblem:
    """One generated problem: question, worked answer, and the number it ends on."""

    question: str
    answer: str
    result: int
    steps: int

    def split(self) -> Split:
        """The split this question belongs to, fixed by its text."""
        digest = hashlib.sha256(self.question.encode("utf-8")).digest()
        return "test" if digest[0] % BUCKETS < TEST_BUCKETS else "train"


@dataclass
class _Story:
    """The state of a problem while its steps are drawn."""

    rng: random.Random
    name: str
    pronoun: str
    thing: str
    things: str
    container: str
    containers: str
    grams: int
    price: int
    question: str
    value: int = 0
    sentences: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def step(self, sentence: str, line: str, expr: str, result: int) -> None:
        """Record a step: its sentence in the question, its annotated line in the answer."""
        self.sentences.append(sentence)
        self.lines.append(line.format(calc=f"{expr} = <<{expr}={result}>>{result}"))
        self.value = result

    @property
    def they(self) -> str:
        return self.pronoun.capitalize()


def _start(s: _Story) -> None:
    """The first step: a count built by multiplying containers or days."""
    a, b = s.rng.randint(2, 9), s.rng.randint(2, 12)
    if s.rng.random() < 0.5:
        sentence = f"{s.name} has {a} {s.containers} with {b} {s.things} in each."
        line = f"{s.name} has {{calc}} {s.things}."
    else:
        verb = s.rng.choice(RATE_VERBS)
        sentence = f"{s.name} {verb} {b} {s.things} every day for {a} days."
        line = f"In {a} days {s.name} gets {{calc}} {s.things}."
    s.step(sentence, line, f"{a}*{b}", a * b)


def _add(s: _Story) -> bool:
    c = s.rng.randint(2, 30)
    verb = s.rng.choice(("buys", "finds", "is given"))
    s.step(
        f"Then {s.pronoun} {verb} {c} more {s.things}.",
        f"With {c} more, {s.pronoun} has {{calc}} {s.things}.",
        f"{s.value}+{c}",
        s.value + c,
    )
    return True


def _give(s: _Story) -> bool:
    if s.value < 4:
        return False
    c = s.rng.randint(1, s.value - 2)
    friend = s.rng.choice(FRIENDS)
    s.step(
        f"{s.they} gives {c} {s.things} to {friend}.",
        f"After giving {c} away, {s.pronoun} has {{calc}} {s.things}.",
        f"{s.value}-{c}",
        s.value - c,
    )
    return True


def _keep_fraction(s: _Story) -> bool:
    options = [f for f in FRACTIONS if s.value % f[1] == 0]
    if not options:
        return False
    num, den, words = s.rng.choice(options)
    s.step(
        f"{s.they} keeps {words} of them and gives the rest away.",
        f"{s.they} keeps {{calc}} {s.things}.",
        f"{s.value}*{num}/{den}",
        s.value * num // den,
    )
    return True


def _double(s: _Story) -> bool:
    if s.value > 200:
        return False
    s.step(
        f"Then {s.pronoun} doubles the number of {s.things} {s.pronoun} has.",
        f"Doubled, that is {{calc}} {s.things}.",
        f"{s.value}*2",
        s.value * 2,
    )
    return True


def _share(s: _Story) -> bool:
    ways = [k for k in range(2, 10) if s.value % k == 0 and s.value // k >= 2]
    if not ways:
        return False
    k = s.rng.choice(ways)
    s.step(
        f"{s.they} puts all of them equally into {k} {s.containers}.",
        f"Each {s.container} gets {{calc}} {s.things}.",
        f"{s.value}/{k}",
        s.value // k,
    )
    s.question = f"How many {s.things} are in each {s.container}?"
    return True


def _sell(s: _Story) -> bool:
    s.step(
        f"{s.they} sells all of them for ${s.price} each.",
        f"{s.they} earns {{calc}} dollars.",
        f"{s.value}*{s.price}",
        s.value * s.price,
    )
    s.question = f"How many dollars does {s.name} earn?"
    return True


def _weigh(s: _Story) -> bool:
    s.step(
        f"Each {s.thing} weighs {s.grams} grams.",
        "Together they weigh {calc} grams.",
        f"{s.value}*{s.grams}",
        s.value * s.grams,
    )
    s.question = f"How many grams do {s.name}'s {s.things} weigh in all?"
    return True


MIDDLE: tuple[Callable[[_Story], bool], ...] = (_add, _give, _keep_fraction, _double)
LAST: tuple[Callable[[_Story], bool], ...] = (*MIDDLE, _share, _sell, _weigh)


def make_problem(rng: random.Random, steps: int, distractor_rate: float) -> SynthProblem | None:
    """One problem of exactly `steps` steps, or None when this draw cannot reach that many."""
    name, pronoun = rng.choice(PEOPLE)
    thing, things, container, containers, grams, price = rng.choice(OBJECTS)
    question = f"How many {things} does {name} have now?"
    s = _Story(rng, name, pronoun, thing, things, container, containers, grams, price, question)
    _start(s)
    for index in range(1, steps):
        pool = LAST if index == steps - 1 else MIDDLE
        if not rng.choice(pool)(s):
            return None
    if rng.random() < distractor_rate:
        _add_distractor(s, rng, things)
    question = " ".join([*s.sentences, s.question])
    answer = "\n".join([*s.lines, f"#### {s.value}"])
    return SynthProblem(question=question, answer=answer, result=s.value, steps=steps)


def _add_distractor(s: _Story, rng: random.Random, things: str) -> None:
    """A sentence with a number that the answer does not use, placed among the others."""
    other = rng.choice([o[1] for o in OBJECTS if o[1] != things])
    text = rng.choice(DISTRACTORS).format(
        friend_cap=rng.choice(FRIENDS).capitalize(), x=rng.randint(2, 40), other=other, name=s.name
    )
    s.sentences.insert(rng.randint(1, len(s.sentences)), text)


def synthesize(
    n: int,
    *,
    seed: int = 0,
    split: Split = "train",
    min_steps: int = 2,
    max_steps: int = 4,
    distractor_rate: float = 0.3,
) -> Iterator[SynthProblem]:
    """`n` distinct problems of the split, the same for the same arguments."""
    if not 2 <= min_steps <= max_steps <= MAX_STEPS:
        raise ValueError(f"steps must satisfy 2 <= min <= max <= {MAX_STEPS}")
    if not 0.0 <= distractor_rate <= 1.0:
        raise ValueError("distractor rate must be in [0, 1]")
    rng = random.Random(f"verisolve-synth/{seed}")
    seen: set[str] = set()
    attempts = 0
    while len(seen) < n:
        attempts += 1
        if attempts > MAX_ATTEMPTS_PER_PROBLEM * max(n, 1):
            raise ValueError(f"could not find {n} distinct {split} problems; ask for fewer")
        problem = make_problem(rng, rng.randint(min_steps, max_steps), distractor_rate)
        if problem is None or problem.split() != split or problem.question in seen:
            continue
        seen.add(problem.question)
        yield problem
