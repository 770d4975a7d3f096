"""OTSeg's two per-pixel paths as a pixel score head (``MultiPromptSinkhornHead``), with ZegOT's
deep feature alignment and learnable prompts as options.

Inputs (from :class:`~zsmask.modeling.backbone.CLIPVisualBackbone` with
``MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS``): ``clip_layer<i>`` (B, D, h, w), the patch tokens of
CLIP block i in the joint space, and ``clip_global`` (B, D), CLIP's image embedding.

1. Text: N prompts per class through the frozen text encoder, h_txt (K, N, D)
   (:class:`~zsmask.modeling.clip.MultiPromptText`: hand-crafted and cached, or learnable).
2. Relationship descriptor (OTSeg Appendix C; ZegOT's global text alignment):
   h~_txt = Linear(cat[h_img ⊙ h_txt, h_txt]) with h_img the image's global embedding: (B, K, N, D).
   With ``PROJECTION_INIT "identity"`` it starts as h_txt and the pixel projections below as I,
   so the scores start as CLIP's pixel-text cosines; "random" starts both at random.
3. MPS path (OTSeg Eqs. 8-10, 16): per embedding layer i, pixels h_i = LN(Linear(clip_layer<i>))
   and S_i = h_i h~_txt^T (both L2-normalised; (B, K, M, N)), refined by MPS to M N T*_i ⊙ S_i;
   the layers are fused by ZegOT Eq. 8 (:func:`fuse_layer_maps`; one layer: OTSeg) and summed
   over prompts: the score map Y~ (B, K, h, w) logits.
4. Decoder path (Eqs. 13-15): h~_txt as K x N queries over the deepest layer's pixels through
   the MPSA decoder; its last layer's MPS map is Y (B, K, h, w) logits.
5. Ensemble (Eq. 17): sigmoid(lambda Y + (1 - lambda) Y~), lambda = ``DECODER_WEIGHT``
   (OTSeg 0.5; ZegOT's Eq. 11 weighs the score map by 0.8: lambda = 0.2).
6. Losses (Eq. 18, Appendix B): focal + dice + CE on Y and on Y~ (weights 20, 1, 1; gamma 2),
   at the input's resolution (or on every ``LOSS.STRIDE``-th pixel).
"""
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from ..clip import CLIPTextImageEncoder, MultiPromptText
from ..optimal_transport import fuse_layer_maps, multi_prompt_sinkhorn
from .build import PIXEL_SCORE_HEAD_REGISTRY
from .losses import dense_segmentation_losses
from .sinkhorn_attention import MultiPromptSinkhornDecoder

__all__ = ["MultiPromptSinkhornHead", "RelationshipDescriptor"]


PROJECTION_INITS = ("identity", "random")


class RelationshipDescriptor(nn.Module):
    """h~_txt = Linear(cat[h_img ⊙ h_txt, h_txt]) (OTSeg Appendix C): text (K, N, D) and image
    embeddings (B, D) -> (B, K, N, D). :meth:`init_identity` makes it return h_txt."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(2 * dim, dim)

    @torch.no_grad()
    def init_identity(self) -> None:
        """Weights [0 | I], bias 0: h~_txt = h_txt until training moves them."""
        dim = self.linear.out_features
        self.linear.weight.zero_()
        self.linear.weight[:, dim:].copy_(torch.eye(dim))
        self.linear.bias.zero_()

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        text = text[None].expand(image.shape[0], -1, -1, -1)
        return self.linear(torch.cat((image[:, None, None, :] * text, text), dim=-1))


@PIXEL_SCORE_HEAD_REGISTRY.register()
class MultiPromptSinkhornHead(nn.Module):
    """OTSeg / ZegOT pixel score paths (module docstring). ``forward(features, clip, class_names)``
    returns ``score_map`` (Y~) and ``decoder_map`` (Y), (B, K, h, w) logits, with
    ``decoder_layer_maps`` (every MPSA layer's logits) and ``prompt_scores`` (B, K, M, N), the
    deepest layer's S before MPS."""

    @configurable
    def __init__(self, *, prompts: MultiPromptText, embed_dim: int, embedding_layers: Sequence[int],
                 decoder: MultiPromptSinkhornDecoder, epsilon: float = 0.05, max_iter: int = 100,
                 tol: float = 1e-6, decoder_weight: float = 0.5, focal_weight: float = 20.0,
                 dice_weight: float = 1.0, ce_weight: float = 1.0, focal_gamma: float = 2.0, loss_stride: int = 1,
                 projection_init: str = "identity", focal_normalization: str = "mean"):
        super().__init__()
        if not embedding_layers:
            raise ValueError("MultiPromptSinkhornHead needs CLIP embeddings of at least one block: set "
                             "MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS (e.g. [12] for OTSeg, [9, 10, 11, 12] for ZegOT)")
        if not 0.0 <= decoder_weight <= 1.0:
            raise ValueError(f"MODEL.OTSEG.DECODER_WEIGHT must be in [0, 1], got {decoder_weight}")
        self.prompts = prompts
        self.embedding_layers = sorted(int(i) for i in embedding_layers)
        self.relationship = RelationshipDescriptor(embed_dim)
        self.pixel_proj = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in self.embedding_layers)
        self.pixel_norm = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in self.embedding_layers)
        self.decoder = decoder
        self.epsilon, self.max_iter, self.tol = epsilon, max_iter, tol
        self.decoder_weight = decoder_weight
        if loss_stride < 1:
            raise ValueError(f"MODEL.OTSEG.LOSS.STRIDE must be >= 1, got {loss_stride}")
        self.focal_gamma = focal_gamma
        self.loss_stride = loss_stride
        self._loss_weights = {"focal": focal_weight, "dice": dice_weight, "ce": ce_weight}
        if projection_init not in PROJECTION_INITS:
            raise ValueError(f"MODEL.OTSEG.PROJECTION_INIT must be one of {PROJECTION_INITS}, got {projection_init!r}")
        self.focal_normalization = focal_normalization
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        if projection_init == "identity":  # pixel-text scores start as CLIP's own (up to LN's centring)
            self.relationship.init_identity()
            with torch.no_grad():
                for proj in self.pixel_proj:
                    proj.weight.copy_(torch.eye(embed_dim))

    @classmethod
    def from_config(cls, cfg, clip: CLIPTextImageEncoder):
        ot = cfg.MODEL.OTSEG
        token_width = clip.model.token_embedding.embedding_dim if hasattr(clip.model, "token_embedding") else 0
        prompts = MultiPromptText(list(ot.PROMPTS.TEMPLATES), ot.PROMPTS.NUM_LEARNABLE, ot.PROMPTS.CONTEXT_LENGTH,
                                  token_width)
        sinkhorn = {"epsilon": ot.SINKHORN.EPSILON, "max_iter": ot.SINKHORN.MAX_ITER, "tol": ot.SINKHORN.TOL or None}
        decoder = MultiPromptSinkhornDecoder(clip.embed_dim, ot.DECODER.NUM_LAYERS, ot.DECODER.FFN_DIM,
                                             ot.DECODER.DROPOUT, **sinkhorn)
        return {
            "prompts": prompts,
            "embed_dim": clip.embed_dim,
            "embedding_layers": list(cfg.MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS),
            "decoder": decoder,
            **sinkhorn,
            "decoder_weight": ot.DECODER_WEIGHT,
            "focal_weight": ot.LOSS.FOCAL_WEIGHT,
            "dice_weight": ot.LOSS.DICE_WEIGHT,
            "ce_weight": ot.LOSS.CE_WEIGHT,
            "focal_gamma": ot.LOSS.FOCAL_GAMMA,
            "loss_stride": ot.LOSS.STRIDE,
            "projection_init": ot.PROJECTION_INIT,
            "focal_normalization": ot.LOSS.FOCAL_NORMALIZATION,
        }

    @property
    def weight_dict(self) -> Dict[str, float]:
        return {f"loss_pixel_{path}_{name}": weight for path in ("decoder", "score")
                for name, weight in self._loss_weights.items()}

    def pixel_embeddings(self, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Per embedding layer, shallow to deep: LN(Linear(clip_layer<i>)) as (B, M, D)."""
        missing = [f"clip_layer{i}" for i in self.embedding_layers if f"clip_layer{i}" not in features]
        if missing or "clip_global" not in features:
            raise ValueError(f"the backbone returned no {missing or ['clip_global']}: the pixel score head needs "
                             "MODEL.BACKBONE.NAME CLIPVisualBackbone with MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS "
                             f"{self.embedding_layers}")
        return [norm(proj(features[f"clip_layer{i}"].flatten(2).transpose(1, 2)))
                for i, proj, norm in zip(self.embedding_layers, self.pixel_proj, self.pixel_norm)]

    def forward(self, features: Dict[str, torch.Tensor], clip: CLIPTextImageEncoder,
                class_names: Sequence[str]) -> Dict[str, torch.Tensor]:
        batch, _, height, width = features[f"clip_layer{self.embedding_layers[-1]}"].shape
        pixels = self.pixel_embeddings(features)
        text = self.prompts(clip, class_names).to(pixels[-1])  # (K, N, D)
        image = F.normalize(features["clip_global"].to(pixels[-1]), dim=-1)
        queries = self.relationship(text, image)  # (B, K, N, D)
        normalized_queries = F.normalize(queries, dim=-1)
        refined, scores = [], None
        for layer_pixels in pixels:
            scores = torch.einsum("bmd,bknd->bkmn", F.normalize(layer_pixels, dim=-1), normalized_queries)
            refined.append(multi_prompt_sinkhorn(scores, self.epsilon, self.max_iter, self.tol).refined)
        score_map = fuse_layer_maps(refined).sum(dim=-1)  # (B, K, M)
        _, layer_maps = self.decoder(queries, pixels[-1])
        grid = (batch, -1, height, width)
        return {
            "score_map": score_map.view(grid),
            "decoder_map": layer_maps[-1].view(grid),
            "decoder_layer_maps": [m.view(grid) for m in layer_maps],
            "prompt_scores": scores,
        }

    def ensemble_logits(self, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 17: lambda Y + (1 - lambda) Y~, (B, K, h, w)."""
        return self.decoder_weight * outputs["decoder_map"] + (1.0 - self.decoder_weight) * outputs["score_map"]

    def probabilities(self, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-class probabilities (B, K, h, w) of the ensemble."""
        return self.ensemble_logits(outputs).sigmoid()

    def losses(self, outputs: Dict[str, torch.Tensor], targets: torch.Tensor, valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Eq. 18: the dense losses on Y (``decoder``) and Y~ (``score``), unweighted, on every
        ``loss_stride``-th pixel of ``targets`` (B, K, H, W) and ``valid`` (B, H, W)."""
        if self.loss_stride > 1:
            start = self.loss_stride // 2
            targets = targets[..., start::self.loss_stride, start::self.loss_stride]
            valid = valid[..., start::self.loss_stride, start::self.loss_stride]
        losses = {}
        for path, key in (("decoder", "decoder_map"), ("score", "score_map")):
            for name, value in dense_segmentation_losses(outputs[key], targets, valid, self.focal_gamma,
                                                         self.focal_normalization).items():
                losses[f"loss_pixel_{path}_{name}"] = value
        return losses
