"""Multi-Prompts Sinkhorn Attention (MPSA, OTSeg Sec. 4.2 (b), Eqs. 11-14) and its decoder.

Cross-attention from K x N text queries (class k, prompt n) to M pixel tokens in which
softmax(QK^T / sqrt(d)) is replaced by MPS(QK^T) (Eq. 13): per class, the cosine scores of its N
prompt queries against the pixels become the cost 1 - S of one Sinkhorn problem (pixels to
prompts, uniform marginals), so the prompts of a class compete for pixels; prompts take the
place of attention heads. Prompt n of class k reads the values with its column of the plan,
rescaled to sum to 1 over the pixels (the plan's columns carry mass 1/N each). The same plan
gives the layer's mask logits, MPS(QK^T) = sum_n M N T* ⊙ S (Eq. 14 applies the sigmoid).

The decoder has ``num_layers`` (3 in OTSeg) post-norm layers of MPSA + FFN, each with residual
connections and LayerNorm, without self-attention (as the authors' TPN decoder layer).
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..optimal_transport import multi_prompt_sinkhorn

__all__ = ["MultiPromptSinkhornAttention", "MultiPromptSinkhornDecoderLayer", "MultiPromptSinkhornDecoder"]


class MultiPromptSinkhornAttention(nn.Module):
    """Eq. 13. ``forward(queries (B, K, N, C), memory (B, M, C)) -> (out (B, K, N, C), mask logits (B, K, M))``."""

    def __init__(self, dim: int, epsilon: float = 0.05, max_iter: int = 100, tol: float = 1e-6,
                 attn_drop: float = 0.0):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.epsilon, self.max_iter, self.tol = epsilon, max_iter, tol

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if queries.dim() != 4 or memory.dim() != 3 or queries.shape[0] != memory.shape[0]:
            raise ValueError(f"MPSA takes queries (B, K, N, C) and memory (B, M, C), got {tuple(queries.shape)} "
                             f"and {tuple(memory.shape)}")
        q = F.normalize(self.q_proj(queries), dim=-1)
        k = F.normalize(self.k_proj(memory), dim=-1)
        scores = torch.einsum("bknc,bmc->bkmn", q, k)  # cosine, (B, K, M, N)
        mps = multi_prompt_sinkhorn(scores, self.epsilon, self.max_iter, self.tol)
        weights = self.attn_drop(mps.plan * scores.shape[-1])  # each prompt's column sums to 1
        out = torch.einsum("bkmn,bmc->bknc", weights.to(memory.dtype), self.v_proj(memory))
        return self.out_proj(out), mps.refined.sum(dim=-1)


class MultiPromptSinkhornDecoderLayer(nn.Module):
    """MPSA then FFN, post-norm: ``x = LN(x + MPSA(x, memory))``, ``x = LN(x + FFN(x))``."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.1, **attention):
        super().__init__()
        self.attention = MultiPromptSinkhornAttention(dim, attn_drop=dropout, **attention)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        attended, mask_logits = self.attention(queries, memory)
        queries = self.norm1(queries + self.dropout1(attended))
        queries = self.norm2(queries + self.dropout2(self.ffn(queries)))
        return queries, mask_logits


class MultiPromptSinkhornDecoder(nn.Module):
    """``num_layers`` MPSA layers. ``forward(queries (B, K, N, C), memory (B, M, C))`` returns the
    final queries and every layer's mask logits [(B, K, M)]; the last is Eq. 14's (before sigmoid)."""

    def __init__(self, dim: int, num_layers: int = 3, ffn_dim: int = 0, dropout: float = 0.1, **attention):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"the MPSA decoder needs >= 1 layer, got {num_layers} (MODEL.OTSEG.DECODER.NUM_LAYERS)")
        self.layers = nn.ModuleList(
            MultiPromptSinkhornDecoderLayer(dim, ffn_dim or 4 * dim, dropout, **attention) for _ in range(num_layers))

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        mask_logits = []
        for layer in self.layers:
            queries, logits = layer(queries, memory)
            mask_logits.append(logits)
        return queries, mask_logits
