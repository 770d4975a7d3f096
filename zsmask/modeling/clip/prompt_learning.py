"""Several text prompts per class for CLIP's frozen text encoder (OTSeg Sec. 4.1, ZegOT Sec. 4.1).

Two kinds, both giving ``(K, N, D)`` L2-normalised embeddings h_txt for K class names and N prompts:

- **hand-crafted**: N templates (``"a photo of a {}."`` ...), encoded once per vocabulary and
  cached by :meth:`CLIPTextImageEncoder.encode_vocabulary` (``per_template=True``);
- **learnable context** (CoOp, Zhou et al. 2022; ZegOT): N prompts of ``l`` context vectors
  each, shared by all classes, put in front of the class name's word embeddings:
  ``[SOT] ctx_1 .. ctx_l name . [EOT]``. The text encoder stays frozen; gradients reach the
  context vectors through it. Embeddings are recomputed while they can change (training with
  gradients) and cached per vocabulary otherwise.

Class names with synonyms ("a, b") average their synonyms' normalised embeddings, as
:meth:`CLIPTextImageEncoder.encode_vocabulary` does.
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from .clip_model import CLIPTextImageEncoder, check_class_names, mean_over_synonyms, split_synonyms
from .templates import validate_templates

__all__ = ["MultiPromptText", "LearnableContextPrompts", "HandCraftedPrompts"]

_PLACEHOLDER = "X"


class HandCraftedPrompts(nn.Module):
    """N fixed templates; nothing learnable, so the embeddings are cached by the CLIP module."""

    def __init__(self, templates: Sequence[str]):
        super().__init__()
        self.templates = validate_templates(templates)

    @property
    def num_prompts(self) -> int:
        return len(self.templates)

    def forward(self, clip: CLIPTextImageEncoder, class_names: Sequence[str]) -> torch.Tensor:
        """``(K, N, D)`` L2-normalised embeddings (shared with the cache: do not modify in place)."""
        return clip.encode_vocabulary(class_names, self.templates, per_template=True)


class LearnableContextPrompts(nn.Module):
    """N prompts of ``context_length`` learnable vectors, shared across classes (see module docstring)."""

    def __init__(self, num_prompts: int, context_length: int, token_width: int, init_std: float = 0.02):
        super().__init__()
        if num_prompts < 1 or context_length < 1:
            raise ValueError(f"learnable prompts need num_prompts >= 1 and context_length >= 1, got "
                             f"{num_prompts} and {context_length} (MODEL.OTSEG.PROMPTS.NUM_LEARNABLE / CONTEXT_LENGTH)")
        self.context = nn.Parameter(torch.randn(num_prompts, context_length, token_width) * init_std)
        self._cache: Dict[tuple, torch.Tensor] = {}

    @property
    def num_prompts(self) -> int:
        return self.context.shape[0]

    def forward(self, clip: CLIPTextImageEncoder, class_names: Sequence[str]) -> torch.Tensor:
        """``(K, N, D)`` L2-normalised embeddings; differentiable w.r.t. the context vectors."""
        names = check_class_names(class_names)
        cacheable = not (torch.is_grad_enabled() and self.context.requires_grad)
        key = (names, str(self.context.device), self.context.dtype, self.context._version, self.context.data_ptr())
        if cacheable and key in self._cache:
            return self._cache[key]
        synonyms = [split_synonyms(n) if clip.average_synonyms else (n.strip(),) for n in names]
        flat = [s for group in synonyms for s in group]
        embeddings = mean_over_synonyms(self.encode(clip, flat), synonyms)  # (K, N, D)
        if cacheable:
            self._cache = {key: embeddings}  # one vocabulary at a time: train and test alternate rarely
        return embeddings

    def encode(self, clip: CLIPTextImageEncoder, names: Sequence[str]) -> torch.Tensor:
        """Run CLIP's text encoder on ``[SOT] ctx name . [EOT]`` for every name and prompt: ``(S, N, D)``."""
        model = clip.model
        if not hasattr(model, "token_embedding"):
            raise ValueError(f"learnable text prompts need an open_clip CLIP with its own text tower "
                             f"(token_embedding); {type(model).__name__} has none")
        num_prompts, length, width = self.context.shape
        if model.token_embedding.embedding_dim != width:
            raise ValueError(f"context vectors of width {width} for a text encoder of width "
                             f"{model.token_embedding.embedding_dim}")
        prefix = " ".join([_PLACEHOLDER] * length)
        tokens = clip._tokenize([f"{prefix} {name}." for name in names])  # (S, L)
        if length + 3 > tokens.shape[1]:  # [SOT], a name token and [EOT] must still fit
            raise ValueError(f"MODEL.OTSEG.PROMPTS.CONTEXT_LENGTH={length} leaves no room for the class name in "
                             f"the text encoder's {tokens.shape[1]} tokens")
        cast_dtype = model.transformer.get_cast_dtype()
        embedded = model.token_embedding(tokens).to(cast_dtype)  # (S, L, width)
        count = len(names)
        context = self.context.to(cast_dtype)[None].expand(count, -1, -1, -1)  # (S, N, l, width)
        embedded = embedded[:, None].expand(-1, num_prompts, -1, -1)
        x = torch.cat((embedded[:, :, :1], context, embedded[:, :, 1 + length:]), dim=2).flatten(0, 1)
        x = x + model.positional_embedding.to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        tokens = tokens.repeat_interleave(num_prompts, dim=0)
        x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is not None:
            x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
        return F.normalize(x.float(), dim=-1).view(count, num_prompts, -1)


class MultiPromptText(nn.Module):
    """The configured prompts (``MODEL.OTSEG.PROMPTS``): learnable when ``num_learnable > 0``,
    else the hand-crafted ``templates``. ``forward(clip, class_names) -> (K, N, D)``."""

    def __init__(self, templates: Sequence[str], num_learnable: int = 0, context_length: int = 8,
                 token_width: int = 0):
        super().__init__()
        if num_learnable > 0:
            self.prompts = LearnableContextPrompts(num_learnable, context_length, token_width)
        else:
            if not templates:
                raise ValueError("MODEL.OTSEG.PROMPTS.TEMPLATES is empty and NUM_LEARNABLE is 0: give hand-crafted "
                                 "templates (each with one '{}') or a number of learnable prompts")
            self.prompts = HandCraftedPrompts(templates)

    @property
    def num_prompts(self) -> int:
        return self.prompts.num_prompts

    @property
    def learnable(self) -> bool:
        return isinstance(self.prompts, LearnableContextPrompts)

    def forward(self, clip: CLIPTextImageEncoder, class_names: Sequence[str]) -> torch.Tensor:
        return self.prompts(clip, class_names)

