"""Open-vocabulary query classifier: cosine similarity with CLIP text embeddings.

As ZegFormer / FC-CLIP, a query's class logits are ``tau * cos(e_q, t_k)`` for each class
text embedding ``t_k`` of the current vocabulary, plus a learnable "no object" embedding as
the last class; ``tau`` is a learned inverse temperature (stored as its log, clamped at
``logit_scale_max`` like CLIP's). Nothing here depends on the number of classes, so the
vocabulary can change between calls and unseen classes exist only as text.
"""
import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VocabularyClassifier"]


class VocabularyClassifier(nn.Module):
    """``forward(embeddings (..., D), text_embeddings (K, D)) -> logits (..., K + 1)``."""

    def __init__(self, embed_dim: int, logit_scale_init: float, logit_scale_max: float = 100.0):
        super().__init__()
        if logit_scale_init <= 0 or logit_scale_init > logit_scale_max:
            raise ValueError(f"MODEL.ZSMASK.LOGIT_SCALE_INIT must be in (0, LOGIT_SCALE_MAX={logit_scale_max}], "
                             f"got {logit_scale_init}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        self.logit_scale_max = logit_scale_max
        self.void_embedding = nn.Parameter(torch.randn(embed_dim) / math.sqrt(embed_dim))
        self.embed_dim = embed_dim

    def class_weights(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """(K, D) text embeddings -> (K + 1, D) L2-normalised rows, "no object" last."""
        if text_embeddings.dim() != 2 or text_embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"text embeddings must be (K, {self.embed_dim}), got {tuple(text_embeddings.shape)}")
        void = self.void_embedding.to(text_embeddings.dtype)[None]
        return F.normalize(torch.cat((text_embeddings, void), 0), dim=-1)

    def forward(self, embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        weights = self.class_weights(text_embeddings).to(embeddings.dtype)
        scale = self.logit_scale.exp().clamp(max=self.logit_scale_max)
        return scale * F.normalize(embeddings, dim=-1) @ weights.t()

    def attach_logits(self, outputs: Dict, text_embeddings: torch.Tensor) -> Dict:
        """Add ``pred_logits`` (B, Q, K + 1) to ``outputs`` and each of its ``aux_outputs``."""
        for prediction in [outputs] + list(outputs.get("aux_outputs", [])):
            prediction["pred_logits"] = self(prediction["pred_embeddings"], text_embeddings)
        return outputs
