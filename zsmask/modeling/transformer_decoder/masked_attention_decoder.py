"""Masked-attention transformer decoder (Mask2Former, Cheng et al. 2022, Sec. 3.2, Eq. 2).

Queries attend only inside the foreground of the mask predicted by the previous layer, one
feature scale per layer in round-robin (coarsest first). Every layer's prediction is returned
for deep supervision. Unlike Mask2Former, classes are not a fixed linear layer: each query gets
an embedding in CLIP's joint space (``class_embed_dim``), which the meta-architecture compares
with the text embeddings of whatever vocabulary is current.
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..layers import MLP, SinePositionEncoding
from .build import TRANSFORMER_DECODER_REGISTRY

__all__ = ["MultiScaleMaskedTransformerDecoder", "DecoderLayer"]


class DecoderLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each with residual + LayerNorm.

    Sequences are ``(length, B, C)`` (``nn.MultiheadAttention``'s default layout).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.ffn = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(dim_feedforward, d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(3))
        self.pre_norm = pre_norm
        for module in (self.cross_attn, self.self_attn, self.ffn):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def _residual(self, i: int, x: torch.Tensor, fn) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropouts[i](fn(self.norms[i](x)))
        return self.norms[i](x + self.dropouts[i](fn(x)))

    def forward(self, query, query_pos, memory, memory_pos, attn_mask: Optional[torch.Tensor]):
        """``query`` (Q, B, C); ``memory`` (HW, B, C); ``attn_mask`` (B*heads, Q, HW) bool, True = blocked."""
        query = self._residual(0, query, lambda q: self.cross_attn(
            q + query_pos, memory + memory_pos, memory, attn_mask=attn_mask, need_weights=False)[0])
        query = self._residual(1, query, lambda q: self.self_attn(
            q + query_pos, q + query_pos, q, need_weights=False)[0])
        return self._residual(2, query, self.ffn)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """``forward(multi_scale_features, mask_features) -> outputs``.

    ``multi_scale_features``: list of ``(B, in_channels, h_i, w_i)``, coarsest first (cycled
    over the layers); ``mask_features`` ``(B, mask_dim, H, W)``. ``outputs`` holds the last
    prediction and, in ``aux_outputs``, the ``dec_layers`` earlier ones (the first is made
    from the learnable queries before any layer), each a dict with:

    - ``pred_embeddings`` (B, Q, class_embed_dim): class embedding per query (not normalised),
    - ``pred_masks`` (B, Q, H, W): mask logits,
    - ``query_features`` (B, Q, hidden_dim): normalised decoder output (used by later heads).
    """

    @configurable
    def __init__(self, *, in_channels: int, mask_dim: int, class_embed_dim: int, hidden_dim: int,
                 num_queries: int, nheads: int, dim_feedforward: int, dec_layers: int, dropout: float,
                 pre_norm: bool, enforce_input_project: bool, num_feature_levels: int = 3):
        super().__init__()
        if hidden_dim % nheads:
            raise ValueError(f"MODEL.MASK_FORMER.HIDDEN_DIM={hidden_dim} must be divisible by NHEADS={nheads}")
        if dec_layers < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {dec_layers}")
        self.num_heads = nheads
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.position_encoding = SinePositionEncoding(hidden_dim // 2, normalize=True)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, nheads, dim_feedforward, dropout, pre_norm) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(proj.weight, a=1)
                nn.init.zeros_(proj.bias)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Identity())
        self.class_embed = nn.Linear(hidden_dim, class_embed_dim)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_dim: int, class_embed_dim: int):
        mf = cfg.MODEL.MASK_FORMER
        return {
            "in_channels": in_channels,
            "mask_dim": mask_dim,
            "class_embed_dim": class_embed_dim,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "dec_layers": mf.DEC_LAYERS,
            "dropout": mf.DROPOUT,
            "pre_norm": mf.PRE_NORM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
        }

    def forward(self, multi_scale_features: List[torch.Tensor], mask_features: torch.Tensor,
                query_feat: Optional[torch.Tensor] = None, query_embed: Optional[torch.Tensor] = None) -> Dict:
        """``query_feat``/``query_embed`` (Q', C) optionally replace the learned queries (e.g. extra
        random queries at inference); by default the ``num_queries`` learned ones are used."""
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(f"the decoder expects {self.num_feature_levels} feature levels, got {len(multi_scale_features)}")
        batch = mask_features.shape[0]
        memories, memory_pos, sizes = [], [], []
        for level, x in enumerate(multi_scale_features):
            sizes.append(x.shape[-2:])
            memory_pos.append(self.position_encoding(x).flatten(2).permute(2, 0, 1))
            projected = self.input_proj[level](x).flatten(2) + self.level_embed.weight[level][None, :, None]
            memories.append(projected.permute(2, 0, 1))

        query_feat = self.query_feat.weight if query_feat is None else query_feat
        query_embed = self.query_embed.weight if query_embed is None else query_embed
        output = query_feat.unsqueeze(1).repeat(1, batch, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, batch, 1)

        predictions = []
        prediction, attn_mask = self.predict(output, mask_features, sizes[0])
        predictions.append(prediction)
        for i, layer in enumerate(self.layers):
            level = i % self.num_feature_levels
            output = layer(output, query_pos, memories[level], memory_pos[level], attn_mask)
            prediction, attn_mask = self.predict(output, mask_features, sizes[(i + 1) % self.num_feature_levels])
            predictions.append(prediction)
        outputs = dict(predictions[-1])
        outputs["aux_outputs"] = predictions[:-1]
        return outputs

    def predict(self, output: torch.Tensor, mask_features: torch.Tensor, attn_size):
        """Heads on the queries ``output`` (Q, B, C) -> (prediction dict, attention mask for the
        next layer at ``attn_size``: (B*heads, Q, h*w) bool, True where the sigmoid mask < 0.5)."""
        query_features = self.decoder_norm(output).transpose(0, 1)
        pred_embeddings = self.class_embed(query_features)
        mask_embed = self.mask_embed(query_features)
        pred_masks = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        with torch.no_grad():
            attn_mask = F.interpolate(pred_masks, size=attn_size, mode="bilinear", align_corners=False)
            attn_mask = attn_mask.sigmoid().flatten(2) < 0.5
            # A query whose mask is empty at this scale attends everywhere (else softmax over nothing).
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            attn_mask = attn_mask.repeat_interleave(self.num_heads, dim=0)
        prediction = {"pred_embeddings": pred_embeddings, "pred_masks": pred_masks, "query_features": query_features}
        return prediction, attn_mask
