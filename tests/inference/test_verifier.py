"""Verifier scoring on ONNX Runtime against the PyTorch model it was exported from."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from verisolve.inference.providers import ProviderUnavailableError, create_session
from verisolve.inference.verifier import Verifier, plan_batches, sigmoid, verifier_text
from verisolve.modelstore.export import ExportError, hash_onnx_files
from verisolve.modelstore.manifest import Manifest, PromptSpec
from verisolve.modelstore.tiny import sample_texts
from verisolve.modelstore.verifier_export import ScoreForm, export_verifier

FORMS: tuple[ScoreForm, ...] = ("sequence", "token")
QUESTION = "She buys 3 bags of 12 apples and gives 5 away. How many apples are left?"
COMPLETIONS = [
    "3*12 = <<3*12=36>>36 apples.\n36-5 = <<36-5=31>>31 left.\n#### 31",
    "#### 31",
    "she has 36 apples then 31",
    "12+3 = <<12+3=15>>15.\n#### 10",
    "they sold many boxes of pens and books each day for a week " * 4 + "\n#### 7",
]
CUDA_PRESENT = "CUDAExecutionProvider" in ort.get_available_providers()


def _texts() -> list[str]:
    """Texts of many different token lengths."""
    return [verifier_text(PromptSpec(), QUESTION, c) for c in COMPLETIONS] + sample_texts(7)


def _hf_ids(hf_dir: Path, texts: list[str]) -> list[list[int]]:
    """Token ids from the transformers tokenizer (independent of our tokenizers path)."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(str(hf_dir))
    return [tokenizer(text)["input_ids"] for text in texts]


def _torch_values(hf_dir: Path, form: ScoreForm, rows: list[list[int]]) -> list[Any]:
    """sigmoid of the PyTorch model's logits, each row run alone (no padding at all)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    auto = {
        "sequence": transformers.AutoModelForSequenceClassification,
        "token": transformers.AutoModelForTokenClassification,
    }[form]
    model = auto.from_pretrained(str(hf_dir)).eval()
    out = []
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row])).logits.double().numpy()
            out.append(sigmoid(logits[0, :1] if form == "sequence" else logits[0, :, 0]))
    return out


@pytest.fixture(scope="module")
def torch_reference(tiny_verifier_hf: dict[ScoreForm, Path]) -> dict[ScoreForm, list[Any]]:
    """The PyTorch values for _texts(), per score form."""
    return {
        form: _torch_values(hf_dir, form, _hf_ids(hf_dir, _texts()))
        for form, hf_dir in tiny_verifier_hf.items()
    }


@pytest.mark.parametrize("form", FORMS)
def test_onnx_scores_match_pytorch_at_the_last_real_token(
    form: ScoreForm, tiny_verifier_onnx: dict[ScoreForm, Path], torch_reference: dict[str, Any]
) -> None:
    verifier = Verifier.load(tiny_verifier_onnx[form], max_batch_size=4)
    texts = _texts()
    scores = verifier.score_texts(texts)
    assert len({s.n_tokens for s in scores}) > 5, "the texts must differ in length"
    for got, want in zip(scores, torch_reference[form], strict=True):
        assert got.score == pytest.approx(float(want[-1]), abs=1e-4)
        if form == "token":
            assert got.token_values is not None
            assert len(got.token_values) == got.n_tokens == len(want)
            np.testing.assert_allclose(got.token_values, want, atol=1e-4)
        else:
            assert got.token_values is None


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("max_batch_size", "max_batch_tokens"),
    [(1, 1_000_000), (3, 1_000_000), (64, 1_000_000), (64, 80), (2, 1)],
)
def test_batching_and_grouping_change_no_score(
    form: ScoreForm,
    max_batch_size: int,
    max_batch_tokens: int,
    tiny_verifier_onnx: dict[ScoreForm, Path],
    torch_reference: dict[str, Any],
) -> None:
    verifier = Verifier.load(
        tiny_verifier_onnx[form], max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens
    )
    texts = _texts()
    order = list(reversed(range(len(texts))))
    scores = verifier.score_texts([texts[i] for i in order])
    for position, index in enumerate(order):
        assert scores[position].score == pytest.approx(
            float(torch_reference[form][index][-1]), abs=1e-4
        )


@pytest.mark.parametrize("form", FORMS)
def test_score_joins_question_and_completion(
    form: ScoreForm, tiny_verifier_onnx: dict[ScoreForm, Path]
) -> None:
    verifier = Verifier.load(tiny_verifier_onnx[form])
    scores = verifier.score(QUESTION, COMPLETIONS)
    texts = [verifier_text(verifier.manifest.prompt, QUESTION, c) for c in COMPLETIONS]
    assert scores == verifier.score_texts(texts)
    assert all(0.0 <= s.score <= 1.0 for s in scores)
    assert all(0.0 <= v <= 1.0 for s in scores for v in (s.token_values or ()))
    assert verifier.score(QUESTION, []) == []


@pytest.mark.parametrize(
    ("template", "completion", "expected"),
    [
        ("Q: {question}\nA:", "#### 4", "Q: What?\nA: #### 4"),
        ("Q: {question}\nA:", "  #### 4", "Q: What?\nA: #### 4"),
        ("Q: {question}\nA:\n", "#### 4", "Q: What?\nA:\n#### 4"),
        ("Q: {question}\nA: ", " #### 4", "Q: What?\nA: #### 4"),
    ],
)
def test_verifier_text_format(template: str, completion: str, expected: str) -> None:
    prompt = PromptSpec(template="{exemplars}" + template)
    assert verifier_text(prompt, "  What? ", completion) == expected


@pytest.mark.parametrize(
    ("lengths", "max_batch_size", "max_batch_tokens", "expected"),
    [
        ([], 4, 100, []),
        ([5, 9, 7], 4, 100, [[1, 2, 0]]),
        ([5, 9, 7], 2, 100, [[1, 2], [0]]),
        ([5, 9, 7, 9], 8, 20, [[1, 3], [2, 0]]),
        ([50, 3], 8, 10, [[0], [1]]),
        ([4, 4, 4, 4], 3, 100, [[0, 1, 2], [3]]),
    ],
)
def test_plan_batches(
    lengths: list[int], max_batch_size: int, max_batch_tokens: int, expected: list[list[int]]
) -> None:
    assert plan_batches(lengths, max_batch_size, max_batch_tokens) == expected


def test_sigmoid_is_a_probability_without_overflow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(
            sigmoid(np.array([-1e4, -2.0, 0.0, 2.0, 1e4], dtype=np.float32)),
            [0.0, 1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-2.0)), 1.0],
        )


def test_sequence_graph_reads_the_last_token_that_is_not_the_pad_id(
    tiny_verifier_onnx: dict[ScoreForm, Path], tiny_verifier_hf: dict[ScoreForm, Path]
) -> None:
    """What the Verifier relies on: the graph finds each row's end from the pad id, not the mask."""
    model_dir = tiny_verifier_onnx["sequence"]
    manifest = Manifest.load(model_dir)
    config = json.loads((tiny_verifier_hf["sequence"] / "config.json").read_text())
    assert manifest.pad_token_id is not None
    assert manifest.pad_token_id == config["pad_token_id"]
    session = create_session(model_dir / manifest.graphs["classifier"])
    ids = [7, 30, 41, 99, 120, 6]

    def logit(pad_with: int | None, mask_pads: bool) -> float:
        tail = [] if pad_with is None else [pad_with] * 3
        row = np.array([[*ids, *tail]], dtype=np.int64)
        mask = np.ones_like(row)
        mask[0, len(ids) :] = 0 if mask_pads else 1
        return float(session.run(None, {"input_ids": row, "attention_mask": mask})[0][0, 0])

    alone = logit(None, mask_pads=False)
    assert logit(manifest.pad_token_id, mask_pads=True) == pytest.approx(alone, abs=1e-5)
    assert logit(manifest.pad_token_id, mask_pads=False) == pytest.approx(alone, abs=1e-5)
    assert abs(logit(ids[0], mask_pads=True) - alone) > 1e-6


@pytest.mark.parametrize("form", FORMS)
def test_long_texts_lose_tokens_from_the_left(
    form: ScoreForm, tiny_verifier_onnx: dict[ScoreForm, Path], tiny_verifier_hf: dict[str, Path]
) -> None:
    (ids,) = _hf_ids(tiny_verifier_hf[form], [_texts()[4]])
    keep = 12
    assert len(ids) > keep
    verifier = Verifier.load(tiny_verifier_onnx[form], max_length=keep)
    short, cut = verifier.score_texts(["#### 4", _texts()[4]])
    assert (cut.n_tokens, cut.truncated, short.truncated) == (keep, True, False)
    (want,) = _torch_values(tiny_verifier_hf[form], form, [ids[-keep:]])
    assert cut.score == pytest.approx(float(want[-1]), abs=1e-4)
    if form == "token":
        np.testing.assert_allclose(cut.token_values or (), want, atol=1e-4)


def test_int8_export(
    tiny_verifier_hf: dict[ScoreForm, Path],
    tiny_verifier_onnx: dict[ScoreForm, Path],
    tmp_path: Path,
) -> None:
    onnx = pytest.importorskip("onnx")
    manifest = export_verifier(tiny_verifier_hf["sequence"], tmp_path / "v8", name="v8", int8=True)
    graph = tmp_path / "v8" / manifest.graphs["classifier"]
    assert manifest.int8
    assert manifest.files == hash_onnx_files(tmp_path / "v8")
    assert list(manifest.files) == [graph.name]
    ops = {node.op_type for node in onnx.load(str(graph)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    int8_scores = Verifier.load(tmp_path / "v8").score(QUESTION, COMPLETIONS)
    fp32_scores = Verifier.load(tiny_verifier_onnx["sequence"]).score(QUESTION, COMPLETIONS)
    for quantized, full in zip(int8_scores, fp32_scores, strict=True):
        assert 0.0 <= quantized.score <= 1.0
        assert quantized.score == pytest.approx(full.score, abs=0.02)


def test_manifest_records_what_scoring_needs(tiny_verifier_onnx: dict[ScoreForm, Path]) -> None:
    for form, model_dir in tiny_verifier_onnx.items():
        manifest = Manifest.load(model_dir)
        assert (manifest.kind, manifest.score_form, manifest.max_length) == ("verifier", form, 1024)
        assert manifest.files == hash_onnx_files(model_dir)
        assert (model_dir / manifest.tokenizer).is_file()


@pytest.mark.parametrize(
    ("form", "edit", "message"),
    [
        ("token", {"architectures": ["LlamaForSequenceClassification"]}, "ForTokenClassification"),
        ("sequence", {"architectures": ["LlamaForTokenClassification"]}, "ForSequence"),
        ("sequence", {"id2label": {"0": "no", "1": "yes"}}, "2 labels"),
        # A plain language model (two labels by default) is named for what it is.
        (
            "token",
            {"architectures": ["LlamaForCausalLM"], "id2label": {"0": "a", "1": "b"}},
            "needs a \\*ForTokenClassification checkpoint, but config.json names LlamaForCausalLM",
        ),
    ],
)
def test_export_refuses_a_head_that_does_not_fit(
    form: ScoreForm,
    edit: dict[str, Any],
    message: str,
    tiny_verifier_hf: dict[ScoreForm, Path],
    tmp_path: Path,
) -> None:
    hf_dir = tmp_path / "hf"
    shutil.copytree(tiny_verifier_hf["sequence"], hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ExportError, match=message):
        export_verifier(hf_dir, tmp_path / "out", name="bad", score_form=form)
    assert not (tmp_path / "out").exists()


def test_failed_export_leaves_the_old_model_in_place(
    tiny_verifier_hf: dict[ScoreForm, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    out = tmp_path / "v"
    export_verifier(tiny_verifier_hf["sequence"], out, name="first")
    before = sorted(p.name for p in tmp_path.iterdir())

    def broken(*_: object) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr("verisolve.modelstore.verifier_export.copy_tokenizer", broken)
    with pytest.raises(OSError, match="disk full"):
        export_verifier(tiny_verifier_hf["sequence"], out, name="second", overwrite=True)
    assert Manifest.load(out).name == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"kind": "generator"}, "not a verifier"),
        ({"score_form": "token"}, "rank 2"),
        ({"graphs": {}}, "classifier"),
        ({"pad_token_id": None}, "pad_token_id"),
        ({"prompt": {"chat": True}}, "chat"),
    ],
)
def test_load_refuses_a_manifest_it_cannot_score_with(
    edit: dict[str, Any], message: str, tiny_verifier_onnx: dict[ScoreForm, Path], tmp_path: Path
) -> None:
    model_dir = tmp_path / "v"
    shutil.copytree(tiny_verifier_onnx["sequence"], model_dir)
    data = json.loads((model_dir / "manifest.json").read_text())
    (model_dir / "manifest.json").write_text(json.dumps({**data, **edit}))
    with pytest.raises(ValueError, match=message):
        Verifier.load(model_dir)


@pytest.mark.skipif(CUDA_PRESENT, reason="this ONNX Runtime build has the CUDA provider")
def test_cuda_fails_clearly_without_the_cuda_provider(
    tiny_verifier_onnx: dict[ScoreForm, Path],
) -> None:
    with pytest.raises(ProviderUnavailableError, match=r"'cuda' asked for.*onnxruntime-gpu"):
        Verifier.load(tiny_verifier_onnx["sequence"], provider="cuda")


@pytest.mark.skipif(CUDA_PRESENT, reason="this ONNX Runtime build has the CUDA provider")
def test_a_silent_fallback_to_the_cpu_is_refused(
    tiny_verifier_onnx: dict[ScoreForm, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime, told CUDA exists when it cannot load it, runs on the CPU: we refuse."""
    available = [*ort.get_available_providers(), "CUDAExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    graph = tiny_verifier_onnx["sequence"] / "model.onnx"
    with pytest.raises(ProviderUnavailableError, match="failed to initialise"):
        create_session(graph, "cuda")


def test_unknown_provider_is_refused(tiny_verifier_onnx: dict[ScoreForm, Path]) -> None:
    with pytest.raises(ValueError, match="unknown provider 'tpu'"):
        Verifier.load(tiny_verifier_onnx["sequence"], provider="tpu")
