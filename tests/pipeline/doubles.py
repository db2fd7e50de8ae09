"""Test doubles for the model boundary: a scripted generator and a scripted scorer."""

from __future__ import annotations

from collections.abc import Sequence

from verisolve.inference.verifier import VerifierScore
from verisolve.pipeline.stages import GeneratedCandidate, SamplingRequest


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
