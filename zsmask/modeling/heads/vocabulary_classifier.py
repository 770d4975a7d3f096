"""Open-vocabulary query classifier: cosine similarity with CLIP text embeddings.

As ZegFormer / FC-CLIP, a query's class logits are ``tau * cos(e_q, t_k) + b`` for each class
text embedding ``t_k`` of the current vocabulary, plus a learnable "no object" (background)
class last; ``tau`` is a learned inverse temperature (stored as its log, clamped at
``logit_scale_max`` like CLIP's) and ``b`` a learned bias shared by all classes, with sigmoid
scores only (it sets their prior; in a softmax it would cancel). Nothing here depends on the number of
classes, so the vocabulary can change between calls and unseen classes exist only as text.

The background logit comes from M learned prototypes g_m (AlignZeg's Background Diversity,
Sec. 3.2): p_mg = tau * cos(e_q, g_m) and p_g = sum(softmax(p_mg) * p_mg); with M = 1 it is
the single "no object" embedding's logit.

Methods that classify against more than text (Split Matching's joint embedding
E = cat(A_s, C_u)) pass per-image extra class embeddings to :meth:`joint_logits`.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VocabularyClassifier", "CLASS_SCORES", "PADDING_LOGIT"]

CLASS_SCORES = ("softmax", "sigmoid")
# Logit of padded class columns: softmax and sigmoid give them exactly zero probability and
# zero gradient, in fp32 and fp16.
PADDING_LOGIT = -1e4


class VocabularyClassifier(nn.Module):
    """``forward(embeddings (..., D), text_embeddings (K, D)) -> logits (..., K + 1)``."""

    def __init__(self, embed_dim: int, logit_scale_init: float, logit_scale_max: float = 100.0,
                 logit_bias_init: float = 0.0, class_score: str = "softmax", num_background_prototypes: int = 1):
        super().__init__()
        if logit_scale_init <= 0 or logit_scale_init > logit_scale_max:
            raise ValueError(f"MODEL.ZSMASK.LOGIT_SCALE_INIT must be in (0, LOGIT_SCALE_MAX={logit_scale_max}], "
                             f"got {logit_scale_init}")
        if class_score not in CLASS_SCORES:
            raise ValueError(f"MODEL.ZSMASK.CLASS_SCORE must be one of {CLASS_SCORES}, got {class_score!r}")
        if num_background_prototypes < 1:
            raise ValueError(f"the number of background prototypes must be >= 1, got {num_background_prototypes}")
        if num_background_prototypes > 1 and class_score != "softmax":
            raise ValueError("background prototypes (AlignZeg's BDS) need MODEL.ZSMASK.CLASS_SCORE='softmax'")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        # A bias shared by all classes cancels in a softmax: it is a parameter with sigmoid scores only.
        self.logit_bias = (nn.Parameter(torch.tensor(float(logit_bias_init))) if class_score == "sigmoid"
                           else None)
        self.logit_scale_max = logit_scale_max
        # (M, D) background prototypes. Sigmoid scores need no "no object" class: its column is
        # then a constant PADDING_LOGIT and there is no parameter that would never get a gradient.
        self.void_embedding = (
            nn.Parameter(torch.randn(num_background_prototypes, embed_dim) / math.sqrt(embed_dim))
            if class_score == "softmax" else None)
        self.embed_dim = embed_dim
        self.class_score = class_score
        self._register_load_state_dict_pre_hook(self._single_void_embedding_to_2d)

    @staticmethod
    def _single_void_embedding_to_2d(state_dict, prefix, *args, **kwargs):
        """Checkpoints written before background prototypes stored one (D,) "no object" embedding."""
        key = prefix + "void_embedding"
        if key in state_dict and state_dict[key].dim() == 1:
            state_dict[key] = state_dict[key][None]

    def upgrade_checkpoint(self, state_dict: dict, prefix: str) -> None:
        """Older layouts, converted before detectron2's checkpointer compares shapes (see
        :func:`zsmask.engine.checkpoint.upgrade_checkpoint_state`)."""
        self._single_void_embedding_to_2d(state_dict, prefix)

    @property
    def background_prototypes(self) -> Optional[torch.Tensor]:
        """(M, D) background prototypes G (None with sigmoid scores)."""
        return self.void_embedding

    def _check_text(self, text_embeddings: torch.Tensor) -> None:
        if text_embeddings.dim() != 2 or text_embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"text embeddings must be (K, {self.embed_dim}), got {tuple(text_embeddings.shape)}")

    def _scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    def scaled_cosine(self, embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """``tau * cos + b`` of ``embeddings`` (B, N, D) against per-image ``class_embeddings``
        (B, C, D) -> (B, N, C)."""
        cosine = F.normalize(embeddings, dim=-1) @ F.normalize(class_embeddings.to(embeddings.dtype), dim=-1).transpose(1, 2)
        return self._scale() * cosine + self._bias()

    def background_logit(self, embeddings: torch.Tensor) -> torch.Tensor:
        """p_g (..., 1) of ``embeddings`` (..., D): the softmax-weighted mean of the prototype
        logits p_mg = tau * cos(e, g_m) (AlignZeg Sec. 3.2)."""
        prototypes = F.normalize(self.void_embedding.to(embeddings.dtype), dim=-1)
        logits = self._scale() * F.normalize(embeddings, dim=-1) @ prototypes.t()  # (..., M)
        return (logits.softmax(dim=-1) * logits).sum(dim=-1, keepdim=True)

    def forward(self, embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        self._check_text(text_embeddings)
        normed = F.normalize(embeddings, dim=-1)
        if self.void_embedding is None:
            logits = self._scale() * normed @ text_embeddings.to(embeddings.dtype).t()
            return F.pad(logits + self.logit_bias, (0, 1), value=PADDING_LOGIT)
        text = F.normalize(text_embeddings.to(embeddings.dtype), dim=-1)
        return torch.cat((self._scale() * normed @ text.t(), self.background_logit(embeddings)), dim=-1)

    def _bias(self):
        return 0.0 if self.logit_bias is None else self.logit_bias

    def rescale_cosine(self, logits: torch.Tensor, factor: float) -> torch.Tensor:
        """Class logits ``tau * cos + b`` (..., K + 1) as if every cosine were ``factor`` times
        larger: ``tau * factor * cos + b``; the last ("no object") column is kept."""
        bias = self._bias()
        return torch.cat(((logits[..., :-1] - bias) * factor + bias, logits[..., -1:]), dim=-1)

    def joint_logits(self, embeddings: torch.Tensor, text_embeddings: torch.Tensor,
                     extra_class_embeddings: Optional[torch.Tensor] = None,
                     extra_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits of ``embeddings`` (B, N, D) against the text classes and, optionally, per-image
        extra classes: ``extra_class_embeddings`` (B, U, D) with ``extra_valid`` (B, U) bool.

        Returns (B, N, K + 1) without extras, else (B, N, K + U + 1): the extra classes of image
        b in columns K .. K + U - 1, invalid (padding) ones at :data:`PADDING_LOGIT`, "no object"
        last.
        """
        logits = self(embeddings, text_embeddings)
        if extra_class_embeddings is None or extra_class_embeddings.shape[1] == 0:
            return logits
        extra = self.scaled_cosine(embeddings, extra_class_embeddings)
        extra = extra.masked_fill(~extra_valid[:, None, :].to(extra.device), PADDING_LOGIT)
        return torch.cat((logits[..., :-1], extra, logits[..., -1:]), dim=-1)

    def scores(self, logits: torch.Tensor, with_background: bool = True) -> torch.Tensor:
        """Class probabilities (..., K) from logits (..., K + 1): a softmax with "no object"
        dropped afterwards (``with_background``) or over the K classes alone (AlignZeg's
        inference), or a per-class sigmoid (the "no object" column is unused)."""
        if self.class_score == "sigmoid":
            return logits[..., :-1].sigmoid()
        if not with_background:
            return F.softmax(logits[..., :-1], dim=-1)
        return F.softmax(logits, dim=-1)[..., :-1]

    def extra_repr(self) -> str:
        prototypes = 0 if self.void_embedding is None else self.void_embedding.shape[0]
        return f"embed_dim={self.embed_dim}, class_score={self.class_score!r}, background_prototypes={prototypes}"
