"""A small Llama built from scratch: a byte-level BPE tokenizer trained on a corpus, random weights.

Digits are split one by one before BPE merges, so every number is spelled the same way in the
question, the worked answer and the calculator's forced result; byte-level decoding gives the
text back exactly, which the calculator and answer parsing depend on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EOS_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class ScratchShape:
    """The size of the model and of its vocabulary."""

    layers: int = 4
    hidden: int = 256
    heads: int = 4
    vocab: int = 512
    max_positions: int = 512


def train_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int) -> Any:
    """A fast tokenizer trained on `texts`, saved as a Hugging Face tokenizer in `out_dir`."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    fast_tokenizer: Any = transformers.PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = fast_tokenizer(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    fast.save_pretrained(str(out_dir))
    return fast


def build_scratch_model(
    texts: Iterable[str], out_dir: Path, shape: ScratchShape, *, seed: int = 0
) -> Path:
    """A randomly initialised LlamaForCausalLM with its own tokenizer, as a Hugging Face folder."""
    import torch
    import transformers

    llama_config: Any = transformers.LlamaConfig
    llama: Any = transformers.LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, out_dir, shape.vocab)
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    config = llama_config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(seed)
    model = llama(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.save_pretrained(str(out_dir))
    return out_dir
