"""AlignZeg's CLIP semantic decoder (supplementary Sec. 1, following SAN, Xu et al. 2023).

The last ``DECODER_LAYERS`` blocks of the frozen CLIP ViT decode N copies of CLIP's [CLS] token,
one per mask proposal. In every decoder block the image tokens run through the block as in
CLIP (the image stream), while each [CLS] copy attends to its own key and to the patch tokens,
with a per-head **attention bias** added to the patch logits:

    softmax(Q^SD K^SD^T / sqrt(d) + [0, B]) V^SD,   B = Q''_m · MLP(Z'_f)^T   (per head),

Q^SD = Q_[CLS] W_Q, K^SD / V^SD from [the copy itself, Z_clip^SD] through the block's own
projections. Q''_m and Z'_f are the proposal decoder's final queries and refined features (the
same pair that gives the masks M = Q''_m · Z'_f^T); the bias map is resized to CLIP's grid. A
bias of -inf outside a region makes the copy see only that region, so its feature is the
feature of that region alone. The decoded copies go through ``ln_post`` and ``proj``: the
proposal features F (B, N, D) in CLIP's joint space, refined by φ_cls into F_cls (Sec. 3.2),
the class embeddings. φ_cls is a residual MLP whose last layer starts at zero, so training
starts from CLIP's own alignment.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..clip.region_attention import copies_to_embeddings, decode_cls_copies, image_stream
from ..clip.shared import frozen_clip
from ..clip.visual_towers import tower_kind
from .build import PROPOSAL_EMBEDDER_REGISTRY

__all__ = ["CLIPSemanticDecoder"]


@PROPOSAL_EMBEDDER_REGISTRY.register()
class CLIPSemanticDecoder(nn.Module):
    """``forward(features, outputs) -> {"pred_embeddings", "proposal_features", "attn_bias"}``.

    ``features["clip_tokens"]`` (B, 1 + L, W) are the tokens entering the decoder blocks on the
    grid of ``features["clip"]`` (see :class:`~zsmask.modeling.backbone.CLIPSideAdapterBackbone`);
    ``outputs["query_features"]`` (B, N, C) and ``outputs["pixel_features"]`` (B, C, h, w) give
    the bias. ``attn_bias`` is (B, heads, N, L); the features are (B, N, D).
    """

    @configurable
    def __init__(self, *, visual: nn.Module, decoder_layers: int, query_dim: int, bias_dim: int):
        """
        Args:
            visual: the open_clip ViT tower; its last ``decoder_layers`` blocks, ``ln_post``
                and ``proj`` are kept, frozen.
            query_dim: channels of the proposal decoder's queries and pixel features.
            bias_dim: per-head channels of the attention-bias embeddings.
        """
        super().__init__()
        if tower_kind(visual) != "vit":
            raise ValueError("the CLIP semantic decoder needs a CLIP ViT (e.g. ViT-B-16); got a ResNet tower")
        blocks = visual.transformer.resblocks
        if not 1 <= decoder_layers < len(blocks):
            raise ValueError(f"MODEL.ALIGNZEG.CLIP.DECODER_LAYERS={decoder_layers} must be in [1, {len(blocks) - 1}]")
        self.blocks = nn.ModuleList(list(blocks)[-decoder_layers:])
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        for module in (self.blocks, self.ln_post):
            module.requires_grad_(False)
        if self.proj is not None:
            self.proj.requires_grad_(False)
        self.num_heads = self.blocks[0].attn.num_heads
        self.embed_dim = self.proj.shape[1] if self.proj is not None else visual.transformer.width
        self.bias_query = nn.Linear(query_dim, self.num_heads * bias_dim)
        self.bias_pixel = nn.Sequential(nn.Conv2d(query_dim, query_dim, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(query_dim, self.num_heads * bias_dim, 1))
        self.refine = nn.Sequential(nn.Linear(self.embed_dim, self.embed_dim), nn.ReLU(inplace=True),
                                    nn.Linear(self.embed_dim, self.embed_dim))
        nn.init.zeros_(self.refine[2].weight)
        nn.init.zeros_(self.refine[2].bias)
        self.bias_dim = bias_dim

    @classmethod
    def from_config(cls, cfg, query_dim: int):
        az = cfg.MODEL.ALIGNZEG
        return {
            "visual": frozen_clip(cfg).visual,
            "decoder_layers": az.CLIP.DECODER_LAYERS,
            "query_dim": query_dim,
            "bias_dim": az.SEMANTIC_DECODER.BIAS_DIM,
        }

    def train(self, mode: bool = True):
        """The frozen CLIP parts stay in eval mode."""
        super().train(mode)
        self.blocks.eval()
        self.ln_post.eval()
        return self

    def attention_bias(self, query_features: torch.Tensor, pixel_features: torch.Tensor,
                       grid: Tuple[int, int]) -> torch.Tensor:
        """B = Q''_m · MLP(Z'_f)^T per head: (B, N, C) and (B, C, h, w) -> (B, heads, N, h'w') on ``grid``."""
        batch, num_queries = query_features.shape[:2]
        pixel = self.bias_pixel(pixel_features)
        if pixel.shape[-2:] != tuple(grid):
            pixel = F.interpolate(pixel, size=tuple(grid), mode="bilinear", align_corners=False)
        pixel = pixel.view(batch, self.num_heads, self.bias_dim, -1)
        query = self.bias_query(query_features).view(batch, num_queries, self.num_heads, self.bias_dim)
        return torch.einsum("bnhc,bhcl->bhnl", query, pixel)

    def image_stream(self, tokens: torch.Tensor) -> List[torch.Tensor]:
        """The patch tokens (B, L, W) entering each decoder block; the image tokens (B, 1 + L, W)
        run through the blocks as in CLIP."""
        return [t[:, 1:] for t in image_stream(self.blocks, tokens, self.batch_first)]

    def decode_queries(self, queries: torch.Tensor, memories: Sequence[torch.Tensor],
                       bias: Optional[torch.Tensor]) -> torch.Tensor:
        """Queries (B, N, W) through the decoder blocks against ``memories`` (one (B, L, W) per
        block) with ``bias`` (B, heads, N, L) or None, then ``ln_post`` and ``proj``: (B, N, D)."""
        return copies_to_embeddings(self.ln_post, self.proj, decode_cls_copies(self.blocks, queries, memories, bias))

    def forward(self, features: Dict[str, torch.Tensor], outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        tokens = features["clip_tokens"]
        grid = features["clip"].shape[-2:]
        query_features = outputs["query_features"]
        bias = self.attention_bias(query_features, outputs["pixel_features"], grid)
        cls_copies = tokens[:, :1].expand(-1, query_features.shape[1], -1)
        proposal_features = self.decode_queries(cls_copies, self.image_stream(tokens), bias)
        return {
            "proposal_features": proposal_features,
            "pred_embeddings": proposal_features + self.refine(proposal_features),
            "attn_bias": bias,
        }

    def extra_repr(self) -> str:
        return f"decoder_layers={len(self.blocks)}, num_heads={self.num_heads}, bias_dim={self.bias_dim}"
