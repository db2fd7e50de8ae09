"""Test doubles for the model boundary: a scripted generator and a scripted scorer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from verisolve.inference.verifier import VerifierScore
from verisolve.pipeline.stages import GeneratedCandidate, K, SamplingRequest


class ScriptedGenerator:
    """Writes, for each sample, `#### <answer>` from a per-question list (cycled)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[SamplingRequest] = []

    def generate(self, request: SamplingRequest) -> Sequence[GeneratedCandidate]:
        self.calls.append(request)
        options = self.answers[request.question]
        return [
            GeneratedCandidate(
                sample_index=i,
                text=f"Work.\n#### {options[i % len(options)]}",
                n_tokens=5,
                finish_reason="answer",
            )
            for i in range(request.sampling.n)
        ]


class ScriptedScorer:
    """Scores a completion by the answer it names (default 0.5)."""

    def __init__(self, by_answer: dict[str, float]) -> None:
        self.by_answer = by_answer
        self.calls = 0

    def score(self, question: str, completions: Sequence[str]) -> list[VerifierScore]:
        self.calls += 1
        return [
            VerifierScore(score=self.by_answer.get(c.rsplit(" ", 1)[-1], 0.5), n_tokens=5)
            for c in completions
        ]


class BatchingGenerator(ScriptedGenerator):
    """Hands problems back in reverse order of arrival, checking the store between them."""

    def __init__(
        self, answers: dict[str, list[str]], between: Callable[[object], None] | None = None
    ) -> None:
        super().__init__(answers)
        self.between = between
        self.batches: list[list[str]] = []

    def generate_many(
        self, requests: Iterable[tuple[K, SamplingRequest]]
    ) -> Iterator[tuple[K, Sequence[GeneratedCandidate]]]:
        taken = list(requests)
        self.batches.append([r.key for _, r in taken])
        for tag, request in reversed(taken):
            yield tag, self.generate(request)
            if self.between is not None:
                self.between(tag)
