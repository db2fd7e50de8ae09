"""The cascade decode step: rows of many problems share one prefix and keep paged caches.

A decode step feeds one token per row; a prefill feeds a problem's question (T tokens, one row)
and, with nothing shared yet, the shared prefix itself. Each head attends over three parts with
one softmax, assembled from per-part statistics: the shared prefix (the model's few-shot
exemplars, held once at batch 1 for every row of every problem), the row's own cache (its
problem's question and its generated tokens), and the fed tokens themselves (causally). The
prefix scores of all rows are one matrix product per KV head, as in `prefix_graph.py`. Own
caches live in a pool of fixed-size blocks that the caller keeps (as vLLM's paged attention
does): every block of the pool is attended by the queries of the row that holds it, with its own
maximum and sum (as flash-decoding splits a sequence), and each row merges its blocks'
statistics through a small table; so a step reads each row's cache only to its length, never
the padding to the longest row in flight. The graph returns only the fed tokens' keys and values
(in the pool's dtype), which the caller writes into the row's blocks; the logits are the last
fed token's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from verisolve.modelstore.cascade_export import NO_SCORE, SENTINEL_FEATURE
from verisolve.modelstore.prefix_graph import LinearHead, PrefixLayer, rotate_half


def sum_blocks(parts: torch.Tensor) -> torch.Tensor:
    """The sum over axis 1 (a row's blocks), added in block order whatever the batch's shape.

    ONNX Runtime's ReduceSum adds along a middle axis in an order that depends on the tensor's
    shape (one by one for a single row, in groups of four for several), so a row's sum of five
    or more blocks, and its logits, moved with the number of rows beside it. CumSum adds one
    block after the other; its last entry is the sum (the padding's zeros add nothing).
    """
    return torch.cumsum(parts, dim=1)[:, -1]


class CascadeLayer(PrefixLayer):
    """One decoder layer attending over shared prefix, own cache blocks and the fed tokens."""

    def forward(  # type: ignore[override]
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        prefix: tuple[torch.Tensor, torch.Tensor],
        own: tuple[torch.Tensor, torch.Tensor],
        blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        causal: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's output [rows, T, hidden] and the fed tokens' keys and values."""
        attended, key, value = self.attend_cascade(
            self.input_layernorm(hidden), rope, prefix, own, blocks, causal
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
        blocks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        causal: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention of T tokens per row over the prefix, the row's blocks and the fed tokens.

        `own` is the block pool [B, kvh, S, dim]; `blocks` = (block_rows [B]: each block's row,
        block_bias [B, S]: 0 on a block's filled positions, -inf past them, row_blocks [rows, M]:
        each row's blocks, padded with B). `causal` [rows, T, T] is 0 where a fed token may see
        another fed token, -inf where not.
        """
        block_rows, block_bias, row_blocks = blocks
        attn = self.self_attn
        # Sizes read off the inputs every layer shares, not off each layer's own tensors: the
        # shape arithmetic is then the same nodes in every layer and ONNX Runtime keeps one copy
        # (nodes to run are most of what a step of few rows costs: 12.6 -> 11.3 ms at 1 row).
        rows, width, kvh, dim = causal.shape[0], causal.shape[1], self.kv_heads, self.head_dim
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
        queries = group * width
        shared = q.permute(1, 0, 2, 3).reshape(kvh, -1, dim)
        # The prefix's keys have one feature more than the queries (`SENTINEL_FEATURE`): 0 at
        # every position but the first, a sentinel whose value is 0 and whose feature NO_SCORE
        # is its score for every query (the queries' feature is 1). So the prefix is never
        # empty, not even before the first exemplar token (ONNX Runtime's CUDA reductions refuse
        # an axis of length 0), and the sentinel weighs exp(NO_SCORE - max) = 0.
        shared = nn.functional.pad(shared, (0, SENTINEL_FEATURE), value=1.0)
        prefix_scores = torch.matmul(shared, prefix[0][0].transpose(1, 2))
        prefix_scores = prefix_scores.reshape(kvh, rows, queries, -1).permute(1, 0, 2, 3).float()
        self_scores = torch.matmul(q, k.transpose(2, 3)).float()
        self_scores = self_scores.view(rows, kvh, group, width, width) + causal[:, None, None]
        self_scores = self_scores.view(rows, kvh, queries, width)
        # Each block against its row's queries, with the block's own softmax statistics (as
        # flash-decoding splits a sequence): only the blocks rows hold are read, never padding
        # to the longest row. The pool may be float16 (half the bytes a step reads).
        block_key, block_value = own[0].to(q.dtype), own[1].to(q.dtype)
        block_queries = q[block_rows]
        block_scores = torch.matmul(block_queries, block_key.transpose(2, 3)).float()
        block_scores = block_scores + block_bias[:, None, None, :]
        block_max = block_scores.amax(dim=-1, keepdim=True)
        block_probs = torch.exp(block_scores - block_max)
        block_sum = block_probs.sum(dim=-1, keepdim=True)
        block_out = torch.matmul(block_probs.to(q.dtype), block_value).float()
        # Each row's blocks' statistics [rows, M, kvh, queries, 1 or dim]; slot B is no block.
        none = torch.zeros_like(q[:1, :, :, :1]).float()
        row_max = torch.cat((block_max, none + NO_SCORE))[row_blocks]
        row_sum = torch.cat((block_sum, none))[row_blocks]
        row_out = torch.cat((block_out, torch.zeros_like(q[:1]).float()))[row_blocks]
        top = torch.maximum(
            prefix_scores.amax(dim=-1, keepdim=True), self_scores.amax(dim=-1, keepdim=True)
        )
        top = torch.maximum(top, row_max.amax(dim=1))
        prefix_probs = torch.exp(prefix_scores - top)
        self_probs = torch.exp(self_scores - top)
        row_weights = torch.exp(row_max - top[:, None])
        total = prefix_probs.sum(dim=-1, keepdim=True) + self_probs.sum(dim=-1, keepdim=True)
        total = total + sum_blocks(row_weights * row_sum)
        prefix_probs = prefix_probs.to(q.dtype).permute(1, 0, 2, 3).reshape(kvh, rows * queries, -1)
        out = torch.matmul(prefix_probs, prefix[1][0]).reshape(kvh, rows, queries, dim)
        out = out.permute(1, 0, 2, 3).float()
        out = out + torch.matmul(self_probs.to(q.dtype), v).float()
        out = (out + sum_blocks(row_weights * row_out)) / total
        out = out.to(q.dtype).reshape(rows, self.heads, width, dim).transpose(1, 2)
        cached = own[0].dtype
        out = attn.o_proj(out.reshape(rows, width, self.heads * dim))
        return out, k.to(cached), v.to(cached)


class CascadeDecodeStep(nn.Module):
    """(ids, positions, block tables, prefix caches, own block pools) -> logits, new keys/values."""

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
        block_rows: torch.Tensor,
        block_bias: torch.Tensor,
        row_blocks: torch.Tensor,
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
        blocks = (block_rows, block_bias, row_blocks)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            pair = slice(2 * i, 2 * i + 2)
            hidden, key, value = layer(hidden, rope, prefix[pair], own[pair], blocks, causal)
            presents += [key, value]
        return (self.lm_head(self.norm(hidden)[:, -1, :]), *presents)
