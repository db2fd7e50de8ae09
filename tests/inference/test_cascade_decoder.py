"""The cascade graph against optimum's graph, and the batch engine against the per-problem one."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from verisolve.inference.batching import BatchGenerator, BatchItem, load_batch_generator
from verisolve.inference.cascade_decoder import CascadeDecoder, OutdatedCascadeGraphError
from verisolve.inference.device_sampling import host_logits
from verisolve.inference.engine import Generator
from verisolve.inference.onnx_decoder import OnnxDecoder
from verisolve.inference.prompt_split import shared_prefix_ids
from verisolve.inference.sampling import SamplingParams
from verisolve.inference.tokenizer import TextTokenizer
from verisolve.modelstore.manifest import PromptSpec
from verisolve.modelstore.prefix_export import SUPPORTED_ARCHITECTURES

# fp32 on both sides: the graphs differ only in the order of additions.
ATOL = 1e-4
# float16 keys and values: a relative rounding of 2**-11 on each.
HALF_ATOL = 1e-3
CUDA_ATOL = 1e-3
PROMPT = PromptSpec(
    exemplars=[
        {
            "question": "Tom has 3 apples and buys 4 more. How many?",
            "solution": "3+4 = <<3+4=7>>7\n#### 7",
        },
        {
            "question": "A box holds 6 pens. How many in 2 boxes?",
            "solution": "2*6 = <<2*6=12>>12\n#### 12",
        },
    ]
)
QUESTIONS = [
    "She sells 5 books each day. How many in a week?",
    "How much do 3 bags cost at 12 dollars each?",
    "He had 40 miles left and drove 15. How many are left?",
    "7 friends share 21 apples. How many each?",
    "If each student has 4 pens, how many pens do 9 students have?",
]


@pytest.fixture(scope="module", params=SUPPORTED_ARCHITECTURES)
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model of one architecture, with the cascade graph its export adds."""
    pytest.importorskip("optimum.exporters.onnx")
    from verisolve.modelstore.export import export_generator
    from verisolve.modelstore.tiny import build_tiny_model

    arch: str = request.param
    root = tmp_path_factory.mktemp(f"cascade-{arch}")
    hf = build_tiny_model(root / "hf", arch=arch, seed=3, heads=6, kv_heads=2, hidden_size=48)
    out = root / "generator"
    manifest = export_generator(hf, out, name=f"tiny-{arch}", prompt=PROMPT, stop=["\n\n"])
    assert manifest.graphs["decoder_cascade"] == "decoder_cascade.onnx"
    return out


@pytest.fixture(scope="module")
def half_cache_graph(model_dir: Path) -> Path:
    """The same model's cascade graph with float16 own caches."""
    from verisolve.modelstore.cascade_export import export_cascade_decoder

    out = model_dir.parent / "cascade-float16.onnx"
    # Blocks of 4 positions: rows span many blocks, and take new ones as they decode.
    hf = model_dir.parent / "hf"
    return export_cascade_decoder(hf, out, cache_dtype="float16", block_size=4)


def cache_dtype(buffer: np.ndarray | ort.OrtValue) -> np.dtype:
    return buffer.numpy().dtype if isinstance(buffer, ort.OrtValue) else buffer.dtype


@pytest.mark.parametrize(
    ("caches", "prefix_chunk", "bind"),
    [
        ("float32", 128, False),
        ("float32", 5, False),
        ("float16", 7, False),
        ("float32", 5, True),
        ("float16", 128, True),
    ],
)
def test_logits_match_rows_of_many_problems(
    model_dir: Path,
    half_cache_graph: Path,
    monkeypatch: pytest.MonkeyPatch,
    caches: str,
    prefix_chunk: int,
    bind: bool,
) -> None:
    # The shared prefix (23 tokens) is fed in one piece or in chunks that attend to the ones
    # before; float16 caches round keys and values, so their logits are only close. Bound, the
    # caches are OrtValues updated by the device-side cache ops (the CUDA path, here on CPU).
    monkeypatch.setattr("verisolve.inference.cascade_decoder.PREFIX_CHUNK", prefix_chunk)
    standard = OnnxDecoder.load(model_dir / "model.onnx", threads=1)
    graph = model_dir / "decoder_cascade.onnx" if caches == "float32" else half_cache_graph
    cascade = CascadeDecoder.load(graph, threads=1, bind=bind)
    assert cascade.own_dtype == np.dtype(caches)
    tolerance = ATOL if caches == "float32" else HALF_ATOL
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 500, 23).tolist()
    batch = cascade.open(shared)
    histories: list[list[int]] = []
    pending = None
    for step in range(12):
        if step in (0, 3, 7):  # problems join with questions of different lengths
            question = rng.integers(0, 500, 4 + 3 * step).tolist()
            first, cache = batch.prefill(question)
            expected, _ = standard.prefill(shared + question)
            np.testing.assert_allclose(first, expected, atol=tolerance, rtol=0)
            count = 2 + step % 3
            batch.admit(cache, count)
            histories += [shared + question for _ in range(count)]
            pending = rng.integers(0, 500, len(histories))
        assert pending is not None
        logits = batch.step(pending)
        for row, token in zip(histories, pending.tolist(), strict=True):
            row.append(token)
        for i, row in enumerate(histories):
            np.testing.assert_allclose(logits[i], standard.prefill(row)[0], atol=tolerance, rtol=0)
        assert all(cache_dtype(buffer) == cascade.own_dtype for buffer in batch.pools)
        if step in (2, 8):  # rows finish and leave, as the engine's compaction orders them
            kept = np.array([len(histories) - 1, *range(1, len(histories) - 2)])
            batch.keep(kept)
            histories = [histories[i] for i in kept.tolist()]
        pending = rng.integers(0, 500, len(histories))


@pytest.mark.parametrize("caches", ["float32", "float16"])
def test_a_rows_logits_are_the_same_bits_whatever_rows_share_its_batch(
    model_dir: Path, half_cache_graph: Path, caches: str
) -> None:
    # A candidate depends only on its problem, seed and sample index: its row's logits may not
    # move by a bit with the rows beside it, or a sampled token flips now and then (in int8
    # builds, whose row quantisation rounds such differences into whole steps, often). One row
    # alone against the same row among others that join, decode and leave, over 6 and more of
    # its blocks (4 positions each in the float16 graph, 32 in the float32 one).
    graph = model_dir / "decoder_cascade.onnx" if caches == "float32" else half_cache_graph
    cascade = CascadeDecoder.load(graph, threads=2)
    rng = np.random.default_rng(5)
    shared = rng.integers(0, 500, 21).tolist()
    question, other = rng.integers(0, 500, 6).tolist(), rng.integers(0, 500, 11).tolist()
    steps = 6 * cascade.block_size
    tokens = rng.integers(0, 500, steps)

    def row_logits(company: bool) -> np.ndarray:
        batch = cascade.open(shared)
        if company:
            batch.admit(batch.prefill(other)[1], 3)
        batch.admit(batch.prefill(question)[1], 1)
        row = batch.rows - 1
        out = []
        for step in range(steps):
            if company and step == 2:
                batch.admit(batch.prefill(other[:4])[1], 5)
            if company and step == steps // 2:  # some leave; the row moves to the front
                batch.keep(np.array([row, *range(4, batch.rows)]))
                row = 0
            fed = rng.integers(0, 500, batch.rows)
            fed[row] = tokens[step]
            out.append(batch.step(fed)[row])
        return np.array(out)

    np.testing.assert_array_equal(row_logits(company=True), row_logits(company=False))


def test_a_graph_exported_before_sums_in_order_runs_with_a_warning(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    onnx = pytest.importorskip("onnx")
    from verisolve.modelstore.cascade_export import IN_ORDER_KEY

    current = model_dir / "decoder_cascade.onnx"
    with caplog.at_level(logging.WARNING, logger="verisolve.inference.cascade_decoder"):
        assert CascadeDecoder.load(current, threads=1).in_order
    assert not caplog.records
    graph = onnx.load(str(current))
    kept = [p for p in graph.metadata_props if p.key != IN_ORDER_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    older = tmp_path / "decoder_cascade.onnx"
    onnx.save(graph, str(older))
    with caplog.at_level(logging.WARNING, logger="verisolve.inference.cascade_decoder"):
        decoder = CascadeDecoder.load(older, threads=1)
    assert not decoder.in_order
    assert "install-default --force" in caplog.text
    logits, _ = decoder.open([1, 2, 3]).prefill([4, 5])  # it still runs
    assert np.isfinite(logits).all()


def engines(
    model_dir: Path, max_rows: int, bind: bool | None = None, sample_on_device: bool | None = None
) -> tuple[Generator, BatchGenerator]:
    """The per-problem engine on optimum's graph and the batch engine, ending rows at ids % 9."""
    tokenizer = TextTokenizer.from_file(model_dir / "tokenizer.json")
    eos = list(range(0, tokenizer.vocab_size, 9))
    per_problem = Generator(
        OnnxDecoder.load(model_dir / "model.onnx", threads=1),
        tokenizer,
        eos_token_ids=eos,
        stop=["\n\n"],
    )
    batch = load_batch_generator(
        model_dir, threads=1, max_rows=max_rows, bind=bind, sample_on_device=sample_on_device
    )
    assert batch is not None
    batch.eos_token_ids = per_problem.eos_token_ids
    return per_problem, batch


@pytest.mark.parametrize(
    ("temperature", "bind", "sample_on_device"),
    [(0.0, False, False), (1.0, False, False), (1.0, True, False), (1.0, True, True)],
)
def test_engine_candidates_equal_the_per_problem_engine(
    model_dir: Path, temperature: float, bind: bool, sample_on_device: bool
) -> None:
    # Bound: the caches' device path (here on the CPU); sampling on the device: the steps'
    # logits stay there and the sampling graph draws each row's token from its own uniform.
    per_problem, batch = engines(model_dir, 5, bind=bind, sample_on_device=sample_on_device)
    assert batch.shared_ids, "the exemplars should split off as the shared prefix"
    params = SamplingParams(temperature=temperature, max_new_tokens=20, seed=7)
    # N = 5 and 6 fill the batch: their last rows mix with the next problem's first ones.
    assert_same_candidates(per_problem, batch, [replace(params, n=2 + i) for i in range(5)])


@pytest.mark.parametrize("sample_on_device", [False, True])
def test_rows_with_their_own_sampling_settings_share_a_batch(
    model_dir: Path, sample_on_device: bool
) -> None:
    # Greedy, sampled, top-k and nucleus problems side by side: on the device, steps whose rows
    # include a top-k or nucleus problem are sampled on the host; every candidate is still the
    # per-problem engine's.
    per_problem, batch = engines(model_dir, 6, bind=True, sample_on_device=sample_on_device)
    base = SamplingParams(n=3, max_new_tokens=20, seed=11)
    settings = [
        replace(base, temperature=0.0),
        replace(base, temperature=0.7),
        replace(base, temperature=1.0, top_k=5),
        replace(base, temperature=1.3, top_p=0.8),
        replace(base, temperature=1.3),
    ]
    assert_same_candidates(per_problem, batch, settings)


def assert_same_candidates(
    per_problem: Generator, batch: BatchGenerator, settings: list[SamplingParams]
) -> None:
    """The batch engine's candidates for QUESTIONS (problem i with settings[i]) are the
    per-problem engine's, token for token."""
    items = [
        BatchItem(i, PROMPT.render(q), params, key=f"q{i}")
        for i, (q, params) in enumerate(zip(QUESTIONS, settings, strict=True))
    ]
    got = dict(batch.stream(items))
    for item in items:
        expected = per_problem.generate(item.prompt, item.params, key=item.key)
        assert [c.token_ids for c in got[item.tag]] == [c.token_ids for c in expected]
        assert [c.text for c in got[item.tag]] == [c.text for c in expected]


def test_without_a_shared_prefix_every_prompt_is_its_own(model_dir: Path) -> None:
    per_problem, batch = engines(model_dir, max_rows=4)
    batch.shared_ids = []
    params = SamplingParams(n=3, temperature=0, max_new_tokens=12)
    items = [
        BatchItem(i, PROMPT.render(q), params, key=f"q{i}") for i, q in enumerate(QUESTIONS[:3])
    ]
    for tag, completions in batch.stream(items):
        expected = per_problem.generate(items[tag].prompt, params, key=items[tag].key)
        assert [c.token_ids for c in completions] == [c.token_ids for c in expected]


def test_the_exemplars_are_a_stable_token_prefix(model_dir: Path) -> None:
    tokenizer = TextTokenizer.from_file(model_dir / "tokenizer.json")
    shared = shared_prefix_ids(tokenizer, PROMPT)
    assert tokenizer.decode(shared).endswith("#### 12\n\nQuestion:")
    for question in [*QUESTIONS, "  spaced  ", "12 apples", "'quoted'?", "Über 5"]:
        ids = tokenizer.encode(PROMPT.render(question))
        assert ids[: len(shared)] == shared


def test_a_model_without_the_cascade_graph_gets_no_batch_engine(
    model_dir: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for path in model_dir.iterdir():
        (old / path.name).symlink_to(path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["graphs"]["decoder_cascade"]
    (old / "manifest.json").unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert load_batch_generator(old) is None


def one_token_graph(path: Path) -> Path:
    """A graph with the cascade graph's inputs as they were before prefills (T fixed at 1) and
    before paged caches (an own-cache bias, own caches padded to the longest row)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def tensor(name: str, elem: int, shape: list[object]) -> object:
        return helper.make_tensor_value_info(name, elem, shape)

    caches = {"prefix": [1, 2, "prompt", 8], "own": ["rows", 2, "own", 8]}
    inputs = [
        tensor("input_ids", TensorProto.INT64, ["rows", 1]),
        tensor("position_ids", TensorProto.INT64, ["rows", 1]),
        tensor("own_bias", TensorProto.FLOAT, ["rows", "own"]),
        *(
            tensor(f"{kind}_{part}.0", TensorProto.FLOAT, shape)
            for kind, shape in caches.items()
            for part in ("key", "value")
        ),
    ]
    outputs = ["logits", "new_key.0", "new_value.0"]
    nodes = [helper.make_node("Identity", ["own_bias"], [name]) for name in outputs]
    graph = helper.make_graph(
        nodes, "old", inputs, [tensor(n, TensorProto.FLOAT, None) for n in outputs]
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_cascade_graph_of_an_earlier_format_gets_no_batch_engine(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for path in model_dir.iterdir():
        if path.name != "decoder_cascade.onnx":
            (old / path.name).symlink_to(path)
    graph = one_token_graph(old / "decoder_cascade.onnx")
    with pytest.raises(OutdatedCascadeGraphError, match="re-export"):
        CascadeDecoder.load(graph, threads=1)
    # The per-problem engine serves such a model, and the log says why.
    assert load_batch_generator(old) is None
    assert "no continuous batching" in caplog.text


def test_the_pool_is_compacted_when_its_long_rows_leave(half_cache_graph: Path) -> None:
    # Plain and bound (the device-side pool ops, here on CPU) alike: the long question's blocks
    # are freed when its rows leave, the next step moves the rest to the front of a smaller pool
    # (a step reads every block), and the rows that stay read their own caches as before.
    plain = CascadeDecoder.load(half_cache_graph, threads=1)
    bound = CascadeDecoder.load(half_cache_graph, threads=1, bind=True)
    assert plain.block_size == 4
    rng = np.random.default_rng(4)
    shared = rng.integers(0, 500, 10).tolist()
    batches = [plain.open(shared), bound.open(shared)]
    for question in (rng.integers(0, 500, 90).tolist(), rng.integers(0, 500, 5).tolist()):
        for batch in batches:
            batch.admit(batch.prefill(question)[1], 2)
    tokens = rng.integers(0, 500, 4)
    for batch in batches:
        batch.step(tokens)
        batch.keep(np.array([3, 2]))  # the long question's rows leave
        assert batch.capacity - len(batch.free) == 2 * 2  # 6 positions each, in 2 blocks
    tokens = rng.integers(0, 500, 2)
    logits = batches[0].step(tokens)
    np.testing.assert_allclose(batches[1].step(tokens), logits, atol=ATOL, rtol=0)
    for batch in batches:
        assert batch.capacity == 2 * 2
        assert not batch.free
        assert sorted(batch.table.ravel().tolist()) == [0, 1, 2, 3]  # and no columns to spare
    # Compacted, the rows read their own caches as a batch that never held the long question.
    rng = np.random.default_rng(4)
    fresh = plain.open(rng.integers(0, 500, 10).tolist())
    rng.integers(0, 500, 90)
    fresh.admit(fresh.prefill(rng.integers(0, 500, 5).tolist())[1], 2)
    fresh.step(rng.integers(0, 500, 4)[[3, 2]])
    np.testing.assert_allclose(fresh.step(tokens), logits, atol=ATOL, rtol=0)


def test_no_reduction_or_product_reads_an_empty_axis(model_dir: Path) -> None:
    # ONNX Runtime's CUDA reductions refuse to reduce an axis of length 0 (and some versions'
    # CUDA MatMul mishandles an inner dimension of 0): the shared prefix, empty before its first
    # chunk is fed, is read after a sentinel position so that it never is. Every reduction's
    # input and every product's first factor are made outputs and measured on that first chunk.
    import onnx
    from onnx import numpy_helper

    from verisolve.inference.cascade_decoder import no_blocks

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_dir / "decoder_cascade.onnx")))
    graph = model.graph
    typed = {v.name: v for v in [*graph.value_info, *graph.input, *graph.output]}
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    checks: list[tuple[str, str, list[int]]] = []  # node, tensor, axes that must not be empty
    for node in graph.node:
        if node.op_type.startswith("Reduce"):
            attribute = [list(a.ints) for a in node.attribute if a.name == "axes"]
            axes = attribute[0] if attribute else constants[node.input[1]].tolist()
            checks.append((node.name, node.input[0], axes))
        elif node.op_type == "MatMul":
            checks.append((node.name, node.input[0], [-1]))  # the inner dimension
    wanted = sorted({tensor for _, tensor, _ in checks} - {o.name for o in graph.output})
    graph.output.extend(typed[name] for name in wanted)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    decoder = CascadeDecoder(session)
    assert decoder.sentinel
    ids = [5, 9, 2, 7]  # the first chunk of a shared prefix: nothing before it
    feeds = {
        "input_ids": np.asarray([ids], dtype=np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None],
        **no_blocks(1, decoder.block_size),
        **dict(zip(decoder.prefix_names, decoder.prefix_start(), strict=True)),
        **{name: decoder.empty_pool() for name in decoder.own_names},
    }
    values = dict(zip(wanted, session.run(wanted, feeds), strict=True))
    empty = [
        (node, values[tensor].shape)
        for node, tensor, axes in checks
        if tensor in values and any(values[tensor].shape[axis] == 0 for axis in axes)
    ]
    assert not empty
    assert sum(node.startswith("/layers.0/") for node, _, _ in checks) >= 5


def test_a_graph_without_the_sentinel_runs_on_cpu_and_is_refused_on_cuda(model_dir: Path) -> None:
    # Graphs exported before the sentinel position read the shared prefix as it is: the CPU
    # provider reduces its empty axis (to -inf and 0), the CUDA provider refuses to.
    from types import SimpleNamespace

    real = CascadeDecoder.load(model_dir / "decoder_cascade.onnx", threads=1)
    width = real.head_dim
    inputs = [
        SimpleNamespace(name=i.name, type=i.type, shape=[*i.shape[:3], width])
        if i.name.startswith("prefix_key")
        else i
        for i in real.session.get_inputs()
    ]

    def session(provider: str) -> SimpleNamespace:
        return SimpleNamespace(
            get_inputs=lambda: inputs,
            get_providers=lambda: [provider, "CPUExecutionProvider"],
            get_provider_options=lambda: {provider: {"device_id": "0"}},
            get_modelmeta=lambda: SimpleNamespace(custom_metadata_map={}),
        )

    old = CascadeDecoder(session("CPUExecutionProvider"))  # type: ignore[arg-type]
    assert not old.sentinel
    assert [a.shape for a in old.prefix_start()[:2]] == [(1, 2, 0, width)] * 2
    with pytest.raises(OutdatedCascadeGraphError, match="CUDA reductions"):
        CascadeDecoder(session("CUDAExecutionProvider"))  # type: ignore[arg-type]
    assert real.sentinel
    key, value = real.prefix_start()[:2]
    assert (key.shape, value.shape) == ((1, 2, 1, width + 1), (1, 2, 1, width))
    assert key[..., -1].max() < -1e29
    assert not key[..., :-1].any()
    assert not value.any()


def test_the_batch_engine_on_cuda_matches_the_cpu(model_dir: Path) -> None:
    # Runs where onnxruntime-gpu finds a GPU, and skips elsewhere: the device path end to end,
    # from the shared prefix's first chunk (CUDA's reductions refuse an empty axis) through
    # prefills, admissions and steps with rows leaving, against the same graph on the CPU.
    from verisolve.inference.providers import ProviderUnavailableError

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime build has no CUDA provider")
    graph = model_dir / "decoder_cascade.onnx"
    try:
        cuda = CascadeDecoder.load(graph, provider="cuda")
    except ProviderUnavailableError as exc:
        pytest.skip(str(exc))
    assert cuda.bind
    assert cuda.sample_on_device
    # CUDA's float32 products may run in TF32 (ONNX Runtime's default on Ampere and later): on
    # 2026-11-30 an H200 gave the padded graph's logits within 2.2e-4 of the CPU's.
    cpu = CascadeDecoder.load(graph, threads=1)
    rng = np.random.default_rng(6)
    shared = rng.integers(0, 500, 150).tolist()  # more than one chunk of the shared prefix
    batches = [cpu.open(shared), cuda.open(shared)]
    for question in (rng.integers(0, 500, 40).tolist(), rng.integers(0, 500, 7).tolist()):
        first, second = (batch.prefill(question) for batch in batches)
        np.testing.assert_allclose(second[0], first[0], atol=CUDA_ATOL, rtol=0)
        for batch, (_, cache) in zip(batches, (first, second), strict=True):
            batch.admit(cache, 3)
    for keep in (None, np.array([0, 2, 3, 5]), None):
        tokens = rng.integers(0, 500, batches[0].rows)
        on_cpu, on_cuda = (host_logits(batch.step(tokens)) for batch in batches)
        np.testing.assert_allclose(on_cuda, on_cpu, atol=CUDA_ATOL, rtol=0)
        if keep is not None:
            for batch in batches:
                batch.keep(keep)
