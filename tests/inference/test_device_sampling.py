"""The sampling graph (run here on the CPU provider) draws what the host's `sample` draws."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from verisolve.inference.device_sampling import DeviceLogits, DeviceSampler, on_device
from verisolve.inference.sampling import SamplingParams, sample


@pytest.fixture(scope="module")
def sampler() -> DeviceSampler:
    return DeviceSampler()


def device(array: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def logits_like_a_model(rng: np.random.Generator, rows: int, vocab: int) -> np.ndarray:
    """Rows from flat to peaked, as a language model's are."""
    return (rng.standard_normal((rows, vocab)) * rng.uniform(0.5, 8.0, (rows, 1))).astype(
        np.float32
    )


@pytest.mark.parametrize("vocab", [7, 1000, 49152])
@pytest.mark.parametrize("temperature", [0.0, 0.3, 0.7, 1.0, 1.5])
def test_the_graph_draws_the_hosts_tokens(
    sampler: DeviceSampler, vocab: int, temperature: float
) -> None:
    rng = np.random.default_rng(vocab + int(temperature * 10))
    logits = logits_like_a_model(rng, 64, vocab)
    logits[0, : vocab // 2] = -np.inf  # masked tokens weigh 0
    uniforms = rng.random(64)
    uniforms[1] = 0.0
    expected = sample(logits, uniforms, temperature=temperature)
    got = sampler(device(logits), uniforms, np.full(64, temperature))
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64


def test_each_row_has_its_own_temperature(sampler: DeviceSampler) -> None:
    rng = np.random.default_rng(3)
    logits = logits_like_a_model(rng, 40, 500)
    uniforms = rng.random(40)
    temperatures = np.tile([0.0, 0.5, 1.0, 2.0], 10)
    expected = [
        sample(logits[i : i + 1], uniforms[i : i + 1], temperature=t)[0]
        for i, t in enumerate(temperatures)
    ]
    np.testing.assert_array_equal(sampler(device(logits), uniforms, temperatures), expected)


def test_never_a_token_of_zero_weight(sampler: DeviceSampler) -> None:
    # A threshold at the row's total (a uniform of 1 here; on a GPU, a parallel scan's rounding
    # can put a cumulative sum after the last token of weight below the total) stops at the
    # last token of positive weight, not past it; a uniform of 0 takes the first one.
    logits = np.full((3, 300), -np.inf, dtype=np.float32)
    logits[:, [5, 40, 200]] = [1.0, 2.0, 0.5]
    uniforms = np.array([1.0, 0.0, 0.5])
    expected = sample(logits, uniforms, temperature=1.0)
    got = sampler(device(logits), uniforms, np.ones(3))
    np.testing.assert_array_equal(got, expected)
    assert got[:2].tolist() == [200, 5]


def test_rows_that_need_the_hosts_sorts_are_left_to_the_host(sampler: DeviceSampler) -> None:
    vocab = 50
    logits = DeviceLogits(device(np.zeros((2, vocab))), sampler)
    assert logits.shape == (2, vocab)
    uniforms = np.array([0.25, 0.75])
    plain = SamplingParams(temperature=1.0)
    assert logits.sample(uniforms, [plain, plain]).tolist() == [12, 37]
    # top-k at or beyond the vocabulary cuts nothing; below it, and any nucleus, need the host.
    assert on_device(SamplingParams(top_k=vocab), vocab)
    assert logits.sample(uniforms, [plain, SamplingParams(top_k=10)]) is None
    assert logits.sample(uniforms, [SamplingParams(top_p=0.9), plain]) is None
    np.testing.assert_array_equal(logits.numpy(), np.zeros((2, vocab), dtype=np.float32))


def test_a_row_count_that_does_not_match_is_refused(sampler: DeviceSampler) -> None:
    with pytest.raises(ValueError, match="3 rows of logits, 2 uniforms"):
        sampler(device(np.zeros((3, 10))), np.zeros(2), np.ones(3))


def test_on_cuda_the_graph_draws_the_hosts_tokens() -> None:
    # Runs where onnxruntime-gpu finds a GPU, and skips elsewhere: the logits uploaded once,
    # only the tokens back; the same draws as the host's on the same logits.
    from verisolve.inference.providers import ProviderUnavailableError, check_provider_available

    try:
        check_provider_available("cuda")
    except ProviderUnavailableError as exc:
        pytest.skip(str(exc))
    cuda = DeviceSampler(["CUDAExecutionProvider", "CPUExecutionProvider"])
    rng = np.random.default_rng(9)
    for temperature in (0.0, 0.7, 1.0):
        logits = logits_like_a_model(rng, 256, 49152)
        uniforms = rng.random(256)
        on_gpu = ort.OrtValue.ortvalue_from_numpy(logits, "cuda", 0)
        got = cuda(on_gpu, uniforms, np.full(256, temperature))
        np.testing.assert_array_equal(got, sample(logits, uniforms, temperature=temperature))
