"""The cascade decode step: rows of many problems share one prefix and keep ragged caches.

A decode step feeds one token per row; a prefill feeds a problem's question (T tokens, one row)
and, with nothing shared yet, the shared prefix itself. Each head attends, with one softmax,
over three parts: the shared prefix (the model's few-shot exemplars, held once at batch 1 for
every row of every problem), the row's own cache (its problem's question and its generated
tokens, padded to the longest row and masked by an additive bias), and the fed tokens
themselves (causally). The prefix scores of all rows are one matrix product per KV head, as in
`prefix_graph.py`. The graph returns only the fed tokens' keys and values (in the own caches'
dtype), so the caller writes them where the row's cache ends and may hold the caches in growing
buffers; the logits are the last fed token's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from verisolve.modelstore.prefix_graph import LinearHead, PrefixLayer, rotate_half


class CascadeLayer(PrefixLayer):
    """One decoder layer attending over shared prefix, own (masked) cache and the new token."""

    def forward(  # type: ignore[override]
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        prefix: tuple[torch.Tensor, torch.Tensor],
        own: tuple[torch.Tensor, torch.Tensor],
        bias: torch.Tensor,
        causal: torch.Tensor,
        prefix_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's output [rows, T, hidden] and the fed tokens' keys and values."""
        attended, key, value = self.attend_cascade(
            self.input_layernorm(hidden), rope, prefix, own, bias, causal, prefix_len
        )
        hidden = hidden + attended
        hidden = hidden + self.mlp(self.post_attention_layernorm(hidden))
        return hidden, key, value

    def attend_cascade(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        prefix: tuple[torch.Tensor, torch.Tensor],
        own: tuple[torch.Tensor, torch.Tensor],
        bias: torch.Tensor,
        causal: torch.Tensor,
        prefix_len: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention of T tokens per row; bias [rows, S] is 0 on a row's cache, -inf past it.

        `causal` [rows, T, T] is 0 where a fed token may see another fed token, -inf where not;
        `prefix_len` is the shared prefix's length (P, read once for every layer).
        """
        attn = self.self_attn
        # Sizes read off the inputs every layer shares, not off each layer's own tensors: the
        # shape arithmetic is then the same nodes in every layer and ONNX Runtime keeps one copy
        # (nodes to run are most of what a step of few rows costs: 12.6 -> 11.3 ms at 1 row).
        rows, width, kvh, dim = causal.shape[0], causal.shape[1], self.kv_heads, self.head_dim
        own_len = bias.shape[1]
        group = self.heads // kvh
        q = attn.q_proj(x).view(rows, width, self.heads, dim).transpose(1, 2)
        k = attn.k_proj(x).view(rows, width, kvh, dim).transpose(1, 2)
        v = attn.v_proj(x).view(rows, width, kvh, dim).transpose(1, 2)
        cos, sin = rope
        q = q * cos + rotate_half(q, dim) * sin
        k = k * cos + rotate_half(k, dim) * sin
        # Query heads are ordered KV-head-major: head h reads KV head h // group. A KV head's
        # queries are its group's heads at every fed position: [rows, kvh, group * T, dim].
        q = q.reshape(rows, kvh, -1, dim) * attn.scaling
        shared = q.permute(1, 0, 2, 3).reshape(kvh, -1, dim)
        prefix_scores = torch.matmul(shared, prefix[0][0].transpose(1, 2))
        # -1, not prefix_len: ONNX's Reshape reads a 0 as "keep this dimension", and the shared
        # prefix may be empty.
        queries = group * width
        prefix_scores = prefix_scores.reshape(kvh, rows, queries, -1).permute(1, 0, 2, 3)
        # The own caches may be held in float16 (half the bytes a step reads, the step's main
        # cost at many rows); they are read in the compute dtype.
        own_key, own_value = own[0].to(q.dtype), own[1].to(q.dtype)
        own_scores = torch.matmul(q, own_key.transpose(2, 3)).float() + bias[:, None, None, :]
        self_scores = torch.matmul(q, k.transpose(2, 3)).float()
        self_scores = self_scores.view(rows, kvh, group, width, width) + causal[:, None, None]
        scores = torch.cat(
            (prefix_scores.float(), own_scores, self_scores.view(rows, kvh, -1, width)), dim=-1
        )
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        prefix_probs = probs[..., :prefix_len].permute(1, 0, 2, 3).reshape(kvh, rows * queries, -1)
        out = torch.matmul(prefix_probs, prefix[1][0]).reshape(kvh, rows, queries, dim)
        out = out.permute(1, 0, 2, 3)
        out = out + torch.matmul(probs[..., prefix_len : prefix_len + own_len], own_value)
        out = out + torch.matmul(probs[..., prefix_len + own_len :], v)
        out = out.reshape(rows, self.heads, width, dim).transpose(1, 2)
        cached = own[0].dtype
        out = attn.o_proj(out.reshape(rows, width, self.heads * dim))
        return out, k.to(cached), v.to(cached)


class CascadeDecodeStep(nn.Module):
    """(ids, positions, own bias, prefix caches, own caches) -> logits and the new keys/values."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        config = model.config
        heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
        base = model.model
        self.embed_tokens = base.embed_tokens
        self.rotary_emb = base.rotary_emb
        self.layers = nn.ModuleList(CascadeLayer(layer, heads, kv_heads) for layer in base.layers)
        self.norm = base.norm
        self.lm_head = LinearHead(model.lm_head)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        own_bias: torch.Tensor,
        *caches: Any,
    ) -> Any:
        """Inputs as `cascade_input_names` orders them; outputs as `cascade_output_names`."""
        n = len(self.layers)
        prefix, own = caches[: 2 * n], caches[2 * n :]
        hidden = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(hidden, position_ids)
        rope = (cos.unsqueeze(1), sin.unsqueeze(1))
        # A fed token sees the fed tokens at its position and before (positions ascend by one).
        ahead = position_ids[:, None, :] > position_ids[:, :, None]
        causal = torch.where(ahead, float("-inf"), 0.0).to(torch.float32)
        prefix_len = prefix[0].shape[2]
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            pair = slice(2 * i, 2 * i + 2)
            hidden, key, value = layer(
                hidden, rope, prefix[pair], own[pair], own_bias, causal, prefix_len
            )
            presents += [key, value]
        return (self.lm_head(self.norm(hidden)[:, -1, :]), *presents)
