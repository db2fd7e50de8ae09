"""Tiny random models built from scratch, for tests and demos (no hub, no download).

The tokenizer is a byte-level BPE trained on text we generate here, so every string encodes.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any, Literal

Head = Literal["causal-lm", "sequence-classification", "token-classification"]

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [EOS, PAD]
VOCAB_SIZE = 512

_WORDS = [
    "Question",
    "Answer",
    "The",
    "answer",
    "is",
    "how",
    "many",
    "much",
    "each",
    "every",
    "total",
    "cost",
    "costs",
    "has",
    "had",
    "have",
    "buys",
    "sold",
    "sells",
    "left",
    "more",
    "less",
    "than",
    "times",
    "per",
    "day",
    "week",
    "hour",
    "apples",
    "books",
    "pens",
    "dollars",
    "cents",
    "miles",
    "friends",
    "students",
    "boxes",
    "bags",
    "of",
    "in",
    "on",
    "for",
    "and",
    "the",
    "a",
    "an",
    "he",
    "she",
    "they",
    "it",
    "her",
    "his",
    "their",
    "if",
    "then",
    "so",
    "after",
    "before",
    "gives",
    "gave",
    "takes",
    "took",
    "makes",
    "made",
    "spends",
    "spent",
    "earns",
    "earned",
]


def _corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    """Synthetic GSM8K-shaped lines: words, numbers and calculator annotations."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        a, b = rng.randint(0, 999), rng.randint(1, 99)
        op = rng.choice("+-*/")
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        out.append(f"{words} {a}{op}{b} = <<{a}{op}{b}={a + b}>>{a + b}.\n#### {a * b}\n")
    return out


def build_tiny_tokenizer(out_dir: Path) -> Path:
    """Train the tiny byte-level BPE tokenizer and save it with its transformers config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    tok.save(str(path))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "bos_token": EOS,
        "pad_token": PAD,
        "unk_token": EOS,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": EOS, "bos_token": EOS, "pad_token": PAD, "unk_token": EOS})
    )
    return path


_ARCH_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", {"use_sliding_window": False}),
}


def build_tiny_model(
    out_dir: Path,
    *,
    arch: str = "llama",
    head: Head = "causal-lm",
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
) -> Path:
    """A tiny random transformers model (grouped-query attention) with our tokenizer."""
    import torch
    import transformers

    config_name, extra = _ARCH_CONFIGS[arch]
    build_tiny_tokenizer(out_dir)
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out_dir))
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        num_labels=1,
        **extra,
    )
    auto = {
        "causal-lm": transformers.AutoModelForCausalLM,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "token-classification": transformers.AutoModelForTokenClassification,
    }[head]
    torch.manual_seed(seed)
    model = auto.from_config(config)  # type: ignore[no-untyped-call]
    model.eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if head == "causal-lm":
        gen = transformers.GenerationConfig(  # type: ignore[no-untyped-call]
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
        gen.save_pretrained(str(out_dir))
    return out_dir


def sample_texts(n: int, seed: int = 1) -> list[str]:
    """A few lines in the tiny tokenizer's domain, for prompts in tests."""
    return list(itertools.islice(_corpus(seed, n), n))
