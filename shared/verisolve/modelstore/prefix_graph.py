"""The prefix-shared decode step as torch modules over a Llama-family model's own submodules.

One step feeds one token per row. Each head attends over the prompt's keys and values, held once
at batch 1, and the row's own generated ones, with one softmax over both (Hydragen's shared-prefix
decomposition, Juravsky et al. 2024). The prompt's scores for all rows are one matrix product per
KV head, [kv_heads, rows * group, dim] @ [kv_heads, dim, P]: the prompt's cache is read once per
step, and grouped query heads are never expanded into copies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def rotate_half(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Llama's rotate-half of heads of size `dim` (a constant: no shape arithmetic in the graph)."""
    half = dim // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PrefixLayer(nn.Module):
    """One decoder layer; its submodules are the model's own, so node names keep their scopes."""

    def __init__(self, layer: Any, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.input_layernorm = layer.input_layernorm
        self.self_attn = layer.self_attn
        self.post_attention_layernorm = layer.post_attention_layernorm
        # int8 export quantises the modules named `/mlp/down_proj/` blockwise (see quantize_int8).
        self.mlp = layer.mlp
        self.heads = heads
        self.kv_heads = kv_heads
        self.head_dim = int(layer.self_attn.head_dim)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        prefix: tuple[torch.Tensor, torch.Tensor],
        suffix: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's output [rows, 1, hidden] and the suffix key and value with the new token."""
        attended, key, value = self.attend(self.input_layernorm(hidden), rope, prefix, suffix)
        hidden = hidden + attended
        hidden = hidden + self.mlp(self.post_attention_layernorm(hidden))
        return hidden, key, value

    def attend(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        prefix: tuple[torch.Tensor, torch.Tensor],
        suffix: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention of one new token per row over the shared prefix and the row's own tokens."""
        attn = self.self_attn
        rows, kvh, dim = x.shape[0], self.kv_heads, self.head_dim
        group = self.heads // kvh
        q = attn.q_proj(x).view(rows, 1, self.heads, dim).transpose(1, 2)
        k = attn.k_proj(x).view(rows, 1, kvh, dim).transpose(1, 2)
        v = attn.v_proj(x).view(rows, 1, kvh, dim).transpose(1, 2)
        cos, sin = rope
        q = q * cos + rotate_half(q, dim) * sin
        k = k * cos + rotate_half(k, dim) * sin
        key = torch.cat((suffix[0], k), dim=2)
        value = torch.cat((suffix[1], v), dim=2)
        # Query heads are ordered KV-head-major: head h reads KV head h // group.
        q = q.reshape(rows, kvh, group, dim) * attn.scaling
        shared = q.permute(1, 0, 2, 3).reshape(kvh, rows * group, dim)
        prefix_scores = torch.matmul(shared, prefix[0][0].transpose(1, 2))
        prefix_len = prefix_scores.shape[-1]
        prefix_scores = prefix_scores.reshape(kvh, rows, group, prefix_len).permute(1, 0, 2, 3)
        own_scores = torch.matmul(q, key.transpose(2, 3))
        scores = torch.cat((prefix_scores, own_scores), dim=-1)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        prefix_probs = probs[..., :prefix_len].permute(1, 0, 2, 3)
        prefix_probs = prefix_probs.reshape(kvh, rows * group, prefix_len)
        out = torch.matmul(prefix_probs, prefix[1][0]).reshape(kvh, rows, group, dim)
        out = out.permute(1, 0, 2, 3) + torch.matmul(probs[..., prefix_len:], value)
        out = out.reshape(rows, 1, self.heads * dim)
        return attn.o_proj(out), key, value


class LinearHead(nn.Module):
    """The LM head as one Gemm(transB) over its weight, so a tied embedding is stored once.

    A plain linear exports as MatMul over a constant-folded transposed copy of the weight; with
    a (zero) bias it is a Gemm that reads the weight as it is. Its node is `/lm_head/Gemm`.
    """

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [rows, vocab] of hidden states [rows, hidden]."""
        weight = self.head.weight
        bias = self.head.bias
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
        return nn.functional.linear(hidden, weight, bias)


class PrefixDecodeStep(nn.Module):
    """One decode step: (ids, positions, prefix caches, suffix caches) -> logits and suffixes."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        config = model.config
        heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
        base = model.model
        self.embed_tokens = base.embed_tokens
        self.rotary_emb = base.rotary_emb
        self.layers = nn.ModuleList(PrefixLayer(layer, heads, kv_heads) for layer in base.layers)
        self.norm = base.norm
        self.lm_head = LinearHead(model.lm_head)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, *caches: Any) -> Any:
        """Inputs as `prefix_input_names` orders them; outputs as `prefix_output_names`."""
        n = len(self.layers)
        prefix, suffix = caches[: 2 * n], caches[2 * n :]
        hidden = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(hidden, position_ids)
        rope = (cos.unsqueeze(1), sin.unsqueeze(1))
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            pair = slice(2 * i, 2 * i + 2)
            hidden, key, value = layer(hidden, rope, prefix[pair], suffix[pair])
            presents += [key, value]
        return (self.lm_head(self.norm(hidden)[:, 0, :]), *presents)
