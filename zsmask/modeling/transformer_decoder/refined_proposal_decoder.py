"""AlignZeg's proposal decoder: Mutually-Refined Proposal Extraction (MRPE, Ge et al., Sec. 3.1).

On one fused feature level Z_f (B, C, h, w) (:class:`~zsmask.modeling.pixel_decoder.CLIPFusionPixelDecoder`),
with learnable mask queries Q_m (N, C):

1. query refinement, Eq. 1: Q'_m = MLP(Q_m + softmax(Q_m W_Q (Z_f W_K)^T / sqrt(D)) Z_f W_V);
2. image refinement, the same with queries from Z_f and keys / values from Q'_m: Z'_f;
3. final queries Q''_m from Q'_m attending to Z'_f (Eq. 1 again);

and the mask proposals M = Q''_m · Z'_f^T. Each step is a :class:`RefinementBlock` (cross-attention
and an MLP, each with a residual and LayerNorm); ``num_rounds`` > 1 repeats steps 1-2.

With ``mutual_refinement=False`` it is the ablation baseline of Table 4 ("a straightforward
transformer decoder, akin to MaskFormer"): ``dec_layers`` layers of cross-attention to Z_f,
self-attention and FFN, Z_f left unchanged, and M = Q · Z_f^T.

Outputs: ``pred_masks`` (B, N, h, w), ``query_features`` Q''_m (B, N, hidden), ``pixel_features``
Z'_f (B, hidden, h, w) (the CLIP semantic decoder derives its attention bias from these two)
and, when ``class_embed_dim`` > 0, ``pred_embeddings`` (B, N, class_embed_dim). No auxiliary
predictions (``MODEL.MASK_FORMER.DEEP_SUPERVISION: False``).
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from torch import nn

from ..layers import MLP, SinePositionEncoding
from .build import TRANSFORMER_DECODER_REGISTRY
from .masked_attention_decoder import DecoderLayer

__all__ = ["MutuallyRefinedProposalDecoder", "RefinementBlock"]


class RefinementBlock(nn.Module):
    """``x`` attends to ``context`` (Eq. 1), then an MLP; residual + LayerNorm after each.

    ``x`` (B, L, C), ``context`` (B, L', C) -> (B, L, C).
    """

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, dim_feedforward), nn.ReLU(inplace=True), nn.Linear(dim_feedforward, dim))
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm_attn(x + self.attn(x, context, context, need_weights=False)[0])
        return self.norm_mlp(x + self.mlp(x))


@TRANSFORMER_DECODER_REGISTRY.register()
class MutuallyRefinedProposalDecoder(nn.Module):
    """``forward([Z_f], mask_features) -> outputs`` (see the module docstring); ``mask_features``
    is Z_f itself (the pixel decoder returns it as both)."""

    @configurable
    def __init__(self, *, in_channels: int, mask_dim: int, class_embed_dim: int, hidden_dim: int, num_queries: int,
                 nheads: int, dim_feedforward: int, mutual_refinement: bool = True, num_rounds: int = 1,
                 dec_layers: int = 6, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        if hidden_dim % nheads:
            raise ValueError(f"MODEL.MASK_FORMER.HIDDEN_DIM={hidden_dim} must be divisible by NHEADS={nheads}")
        if mutual_refinement and num_rounds < 1:
            raise ValueError(f"MODEL.ALIGNZEG.MRPE.NUM_ROUNDS must be >= 1, got {num_rounds}")
        if not mutual_refinement and dec_layers < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {dec_layers}")
        self.num_queries = num_queries
        self.mutual_refinement = mutual_refinement
        self.input_proj = nn.Identity() if in_channels == hidden_dim else nn.Conv2d(in_channels, hidden_dim, 1)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        if mutual_refinement:
            self.query_refinement = nn.ModuleList(
                RefinementBlock(hidden_dim, nheads, dim_feedforward, dropout) for _ in range(num_rounds))
            self.image_refinement = nn.ModuleList(
                RefinementBlock(hidden_dim, nheads, dim_feedforward, dropout) for _ in range(num_rounds))
            self.final_refinement = RefinementBlock(hidden_dim, nheads, dim_feedforward, dropout)
        else:
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
            self.position_encoding = SinePositionEncoding(hidden_dim // 2, normalize=True)
            self.layers = nn.ModuleList(
                DecoderLayer(hidden_dim, nheads, dim_feedforward, dropout, pre_norm) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.pixel_proj = nn.Identity() if mask_dim == hidden_dim else nn.Conv2d(hidden_dim, mask_dim, 1)
        self.class_embed = nn.Linear(hidden_dim, class_embed_dim) if class_embed_dim > 0 else None

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_dim: int, class_embed_dim: int):
        mf, mrpe = cfg.MODEL.MASK_FORMER, cfg.MODEL.ALIGNZEG.MRPE
        return {
            "in_channels": in_channels,
            "mask_dim": mask_dim,
            "class_embed_dim": class_embed_dim,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "mutual_refinement": mrpe.ENABLED,
            "num_rounds": mrpe.NUM_ROUNDS,
            "dec_layers": mf.DEC_LAYERS,
            "dropout": mf.DROPOUT,
            "pre_norm": mf.PRE_NORM,
        }

    def forward(self, multi_scale_features: List[torch.Tensor], mask_features: Optional[torch.Tensor] = None,
                query_feat: Optional[torch.Tensor] = None, query_embed: Optional[torch.Tensor] = None) -> Dict:
        """``multi_scale_features``: [Z_f (B, C, h, w)]; ``query_feat`` (N', hidden) optionally
        replaces the learned queries, and ``query_embed`` (N', hidden) their positional part
        (baseline decoder only; MRPE's queries have none)."""
        if len(multi_scale_features) != 1:
            raise ValueError(f"MutuallyRefinedProposalDecoder takes one fused feature level, got "
                             f"{len(multi_scale_features)} (use MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME: CLIPFusionPixelDecoder)")
        fused = self.input_proj(multi_scale_features[0])
        batch, channels, height, width = fused.shape
        pixels = fused.flatten(2).transpose(1, 2)  # (B, hw, C)
        queries = (self.query_feat.weight if query_feat is None else query_feat)[None].expand(batch, -1, -1)
        if self.mutual_refinement:
            for query_block, image_block in zip(self.query_refinement, self.image_refinement):
                queries = query_block(queries, pixels)
                pixels = image_block(pixels, queries)
            queries = self.final_refinement(queries, pixels)
        else:
            memory_pos = self.position_encoding(fused).flatten(2).permute(2, 0, 1)
            query_embed = self.query_embed.weight if query_embed is None else query_embed
            if query_embed.shape[0] != queries.shape[1]:
                raise ValueError(f"{queries.shape[1]} queries but {query_embed.shape[0]} positional embeddings")
            query_pos = query_embed[:, None].expand(-1, batch, -1)
            output, memory = queries.transpose(0, 1), pixels.transpose(0, 1)
            for layer in self.layers:
                output = layer(output, query_pos, memory, memory_pos, None)
            queries = output.transpose(0, 1)
        query_features = self.decoder_norm(queries)
        pixel_features = pixels.transpose(1, 2).reshape(batch, channels, height, width)
        pred_masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(query_features), self.pixel_proj(pixel_features))
        outputs = {"pred_masks": pred_masks, "query_features": query_features, "pixel_features": pixel_features}
        if self.class_embed is not None:
            outputs["pred_embeddings"] = self.class_embed(query_features)
        return outputs
