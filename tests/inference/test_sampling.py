"""Sampling on numpy logits: greedy, temperature, top-k, top-p, and the per-row streams."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from numpy.typing import NDArray

from verisolve.inference.sampling import (
    SamplingParams,
    block_sums,
    draw_uniforms,
    inverse_cdf,
    row_streams,
    sample,
    stable_hash,
)


def reference_sample(
    logits: NDArray[np.float32], u: float, temperature: float, top_k: int, top_p: float
) -> int:
    """One row, the textbook way (float64): a nucleus is sorted by probability, else token order."""
    x = logits.astype(np.float64) / temperature
    order = np.argsort(-x, kind="stable")
    if top_k:
        order = order[:top_k]
    if top_p == 1.0:
        order = np.sort(order)
    p = np.exp(x[order] - x[order].max())
    p /= p.sum()
    before = np.cumsum(p) - p
    p = np.where(before < top_p, p, 0.0)
    cumulative = np.cumsum(p)
    return int(order[np.searchsorted(cumulative, u * cumulative[-1], side="right")])


def test_temperature_zero_is_argmax() -> None:
    logits = np.random.default_rng(0).normal(size=(5, 100)).astype(np.float32)
    got = sample(logits, np.full(5, 0.99), temperature=0.0)
    np.testing.assert_array_equal(got, logits.argmax(axis=1))


@pytest.mark.parametrize("temperature", [0.3, 1.0, 5.0])
def test_top_k_one_is_argmax_at_any_temperature(temperature: float) -> None:
    logits = np.random.default_rng(1).normal(size=(4, 50)).astype(np.float32)
    uniforms = np.array([0.0, 0.3, 0.7, 0.999])
    got = sample(logits, uniforms, temperature=temperature, top_k=1)
    np.testing.assert_array_equal(got, logits.argmax(axis=1))


@pytest.mark.parametrize(
    ("uniform", "expected"),
    [(0.0, 0), (0.49, 0), (0.51, 1), (0.79, 1), (0.81, 2), (0.999, 2)],
)
def test_inverse_cdf_maps_uniforms_to_intervals(uniform: float, expected: int) -> None:
    probs = np.array([[0.5, 0.3, 0.2, 0.0]], dtype=np.float32)
    assert inverse_cdf(probs, np.array([uniform]))[0] == expected


def test_zero_probability_tail_is_never_picked() -> None:
    probs = np.array([[0.25, 0.75, 0.0, 0.0]], dtype=np.float32)
    assert inverse_cdf(probs, np.array([1.0]))[0] == 1


@pytest.mark.parametrize(
    ("top_p", "allowed"),
    [(0.4, {0}), (0.5, {0}), (0.7, {0, 1}), (0.9, {0, 1, 2}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p: float, allowed: set[int]) -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float32))
    picked = {
        int(sample(logits, np.array([u]), temperature=1.0, top_p=top_p)[0])
        for u in np.linspace(0, 0.9999, 200)
    }
    assert picked == allowed


def test_top_k_restricts_to_the_k_best() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 1000)).astype(np.float32)
    best = set(np.argsort(-logits[0])[:5].tolist())
    picked = {
        int(sample(logits, np.array([u]), temperature=3.0, top_k=5)[0])
        for u in np.linspace(0, 0.9999, 500)
    }
    assert picked == best


def test_temperature_sharpens_and_flattens() -> None:
    logits = np.array([[2.0, 1.0, 0.0]], dtype=np.float32)
    uniforms = np.linspace(0, 0.9999, 1000)
    rows = np.repeat(logits, len(uniforms), axis=0)
    cold = (sample(rows, uniforms, temperature=0.2) == 0).mean()
    warm = (sample(rows, uniforms, temperature=1.0) == 0).mean()
    hot = (sample(rows, uniforms, temperature=10.0) == 0).mean()
    expected = np.exp(2.0) / np.exp([2.0, 1.0, 0.0]).sum()
    assert cold > 0.99
    assert warm == pytest.approx(expected, abs=0.01)
    assert 0.33 < hot < 0.4


@pytest.mark.parametrize(
    ("vocab", "temperature", "top_k", "top_p", "scale"),
    [
        (50, 1.0, 0, 1.0, 3.0),
        (300, 0.7, 0, 0.95, 3.0),
        (300, 0.7, 40, 0.9, 3.0),
        (5000, 1.0, 0, 0.9, 0.1),  # flat: the nucleus is wider than the first passes
        (5000, 0.5, 100, 0.8, 2.0),
        (5000, 1.3, 0, 0.5, 4.0),
    ],
)
def test_vectorised_sampling_matches_a_row_by_row_reference(
    vocab: int, temperature: float, top_k: int, top_p: float, scale: float
) -> None:
    rng = np.random.default_rng(vocab + top_k)
    logits = (rng.normal(size=(32, vocab)) * scale).astype(np.float32)
    uniforms = rng.random(32)
    got = sample(logits, uniforms, temperature=temperature, top_k=top_k, top_p=top_p)
    expected = [
        reference_sample(logits[i], uniforms[i], temperature, top_k, top_p) for i in range(32)
    ]
    assert got.tolist() == expected


def test_streams_depend_on_seed_key_and_index_only() -> None:
    first = draw_uniforms(row_streams(7, "problem-1", [0, 1, 2]))
    again = draw_uniforms(row_streams(7, "problem-1", [0, 1, 2]))
    shifted = draw_uniforms(row_streams(7, "problem-1", [1, 2]))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[1:], shifted)
    assert len(set(first.tolist())) == 3
    assert draw_uniforms(row_streams(8, "problem-1", [0]))[0] != first[0]
    assert draw_uniforms(row_streams(7, "problem-2", [0]))[0] != first[0]


def test_stable_hash_is_sha256_based() -> None:
    digest = hashlib.sha256(b"gsm8k/17").digest()
    assert stable_hash("gsm8k/17") == int.from_bytes(digest[:8], "big")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n", 0, "n must be"),
        ("temperature", -0.1, "temperature"),
        ("top_p", 0.0, "top_p"),
        ("top_p", 1.5, "top_p"),
        ("top_k", -1, "top_k"),
        ("max_new_tokens", 0, "max_new_tokens"),
    ],
)
def test_params_are_validated(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("width", [100, 256, 300, 49152])
def test_block_sums_are_reduceat_over_blocks_of_256(width: int) -> None:
    # Whole blocks and a short last one alike, in float64.
    probs = np.random.default_rng(width).random((3, width)).astype(np.float32)
    expected = np.add.reduceat(probs, np.arange(0, width, 256), axis=1, dtype=np.float64)
    got = block_sums(probs)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
