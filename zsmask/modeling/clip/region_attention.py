"""Many region embeddings from one CLIP ViT forward: [CLS] copies with a region bias, and
region token sequences packed with block-diagonal attention.

In the last blocks of a CLIP ViT, each of N copies of the [CLS] token attends to its own key
and to the image's patch tokens, with a per-region **attention bias** added to the patch
logits; the patch tokens themselves run through the blocks as in plain CLIP (the image
stream), unaffected by the copies:

    copy' = copy + Attn(softmax(q_copy [k_copy, K_patches]^T / sqrt(d) + [0, b]) [v_copy, V_patches])
    copy'' = copy' + MLP(copy')                      (CLIP's own pre-norm block, its weights)

With ``b = 0`` on a region's cells and ``-inf`` elsewhere a copy sees only that region, so its
output (``ln_post``, ``proj``) is the region's embedding; with ``b = 0`` everywhere and the
copies starting at block 0 it is plain CLIP's [CLS]. SAN (Xu et al., 2023) and AlignZeg's
semantic decoder learn ``b`` from mask proposals; Split Matching's ``cls_attention`` region
embedding (:func:`region_attention_bias`) sets it from a mask: ``log`` of the fraction of each
patch cell the mask covers (0 inside, ``-inf`` outside, ``log f`` on a border cell a mask
covers by ``f``, so a border cell's weight is scaled by its covered area).

**Region tokens** (:func:`region_token_embeddings`) instead run CLIP on each region's own
cells: the [CLS] token and the patch tokens of the cells a mask touches, each cell embedded
from its pixels with those outside the mask set to CLIP's mean pixel (zero once normalised,
as in the masked image), cells the mask does not touch left out (as patch dropout leaves
tokens out). All regions of an image form one sequence in which a token attends only to the
tokens of its own region, so the sequence costs about one forward over the cells the masks
cover, and each region's [CLS] is what CLIP would give on that region alone.

Shapes: copies ``(B, N, W)``, patch memories ``(B, L, W)`` (L = h * w), biases ``(B, heads, N,
L)`` or ``(B, 1, N, L)`` (shared by the heads). Towers: open_clip ViTs whose blocks use
``nn.MultiheadAttention`` with one in-projection (standard CLIP ViTs).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn

from .region_views import cell_fractions
from .visual_towers import resize_grid_embedding, run_block

__all__ = [
    "biased_cls_attention",
    "check_region_attention_tower",
    "first_region_block",
    "decode_cls_copies",
    "image_stream",
    "region_attention_bias",
    "region_token_embeddings",
    "copies_to_embeddings",
]


def check_region_attention_tower(visual: nn.Module, what: str) -> None:
    """ValueError naming ``what`` unless ``visual`` is a class-token open_clip ViT whose blocks
    use ``nn.MultiheadAttention`` with a packed in-projection."""
    if not isinstance(visual, VisionTransformer):
        raise ValueError(f"{what} needs a CLIP ViT (e.g. ViT-B-16); got a {type(visual).__name__} tower")
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise ValueError(f"{what} needs a CLIP ViT pooled by its class token; this one pools by "
                         f"{'an attentional pooler' if visual.attn_pool is not None else repr(visual.pool_type)}")
    _check_packed_attention(visual.transformer.resblocks[0].attn, what)


def _check_packed_attention(attn: nn.Module, what: str) -> None:
    """ValueError naming ``what`` unless ``attn`` is ``nn.MultiheadAttention`` with one in-projection."""
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise ValueError(f"{what} needs open_clip blocks with nn.MultiheadAttention (standard CLIP ViTs); "
                         "this tower uses a custom attention")


def first_region_block(visual: nn.Module, region_layers: int, what: str) -> int:
    """Index of the first of ``visual``'s last ``region_layers`` blocks; ValueError naming
    ``what`` when the tower cannot decode [CLS] copies or ``region_layers`` is out of range."""
    check_region_attention_tower(visual, what)
    depth = len(visual.transformer.resblocks)
    if not 1 <= region_layers <= depth:
        raise ValueError(f"{what}: {region_layers} region-attention blocks, but this CLIP ViT has {depth} "
                         f"(use 1 to {depth})")
    return depth - region_layers


def biased_cls_attention(block: nn.Module, queries: torch.Tensor, memory: torch.Tensor,
                         bias: Optional[torch.Tensor]) -> torch.Tensor:
    """One CLIP residual block with ``queries`` (B, N, W) attending to [themselves, ``memory``
    (B, L, W)] (each query to its own key only, not to the other queries) and ``bias``
    (B, heads or 1, N, L) added to the memory logits (None: no bias). Returns (B, N, W)."""
    attn: nn.MultiheadAttention = block.attn
    _check_packed_attention(attn, "[CLS] copies with a region bias")
    batch, num_queries, width = queries.shape
    heads = attn.num_heads
    head_dim = width // heads
    w_q, w_k, w_v = attn.in_proj_weight.split(width)
    b_q, b_k, b_v = attn.in_proj_bias.split(width) if attn.in_proj_bias is not None else (None, None, None)
    x_q, x_m = block.ln_1(queries), block.ln_1(memory)

    def heads_first(x):  # (B, L, W) -> (B, heads, L, d)
        return x.view(batch, -1, heads, head_dim).transpose(1, 2)

    q = heads_first(F.linear(x_q, w_q, b_q)) * head_dim ** -0.5
    k_self, v_self = heads_first(F.linear(x_q, w_k, b_k)), heads_first(F.linear(x_q, w_v, b_v))
    k_mem, v_mem = heads_first(F.linear(x_m, w_k, b_k)), heads_first(F.linear(x_m, w_v, b_v))
    logits_self = (q * k_self).sum(-1, keepdim=True)  # (B, h, N, 1)
    logits_mem = q @ k_mem.transpose(-1, -2)  # (B, h, N, L)
    if bias is not None:
        logits_mem = logits_mem + bias.to(logits_mem.dtype)
    weights = torch.cat((logits_self, logits_mem), dim=-1).softmax(dim=-1)
    out = weights[..., :1] * v_self + weights[..., 1:] @ v_mem  # (B, h, N, d)
    out = attn.out_proj(out.transpose(1, 2).reshape(batch, num_queries, width))
    queries = queries + block.ls_1(out)
    return queries + block.ls_2(block.mlp(block.ln_2(queries)))


def image_stream(blocks: Sequence[nn.Module], tokens: torch.Tensor, batch_first: bool = True) -> List[torch.Tensor]:
    """The tokens (B, 1 + L, W) entering each of ``blocks``, the image run through them as in
    CLIP from ``tokens`` (the input of the first); the last block itself is not run."""
    inputs = []
    for i, block in enumerate(blocks):
        inputs.append(tokens)
        if i + 1 < len(blocks):
            tokens = run_block(block, tokens, batch_first)
    return inputs


def decode_cls_copies(blocks: Sequence[nn.Module], copies: torch.Tensor, memories: Sequence[torch.Tensor],
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``copies`` (B, N, W) through ``blocks`` against ``memories`` (the patch tokens (B, L, W)
    entering each block) with ``bias`` (B, heads or 1, N, L) or None: (B, N, W), before ``ln_post``."""
    if len(memories) != len(blocks):
        raise ValueError(f"{len(memories)} patch memories for {len(blocks)} blocks")
    for block, memory in zip(blocks, memories):
        copies = biased_cls_attention(block, copies, memory, bias)
    return copies


def copies_to_embeddings(ln_post: nn.Module, proj: Optional[torch.Tensor], copies: torch.Tensor) -> torch.Tensor:
    """Decoded copies (B, N, W) in CLIP's joint space as its [CLS] is: the tower's ``ln_post``
    then its ``proj`` (W, D) when it has one: (B, N, D), unnormalised."""
    features = ln_post(copies)
    return features @ proj if proj is not None else features


def region_attention_bias(masks: torch.Tensor, grid: Tuple[int, int], stride: int) -> torch.Tensor:
    """The bias of ``masks`` (B, N, H, W) on the patch grid ``(h, w)`` of cells ``stride``
    pixels wide (the image zero-padded at the bottom / right to the grid): ``log`` of the
    fraction of each cell a mask covers, ``-inf`` where it covers none: (B, 1, N, h * w)."""
    batch, count = masks.shape[:2]
    fractions = cell_fractions(masks.flatten(0, 1), grid, stride).view(batch, 1, count, -1)
    return fractions.log()  # log(0) = -inf


def _run_block_masked(block: nn.Module, tokens: torch.Tensor, attn_mask: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """One open_clip block on batch-first ``tokens`` (1, T, W) with a float ``attn_mask`` (T, T)."""
    if not batch_first:
        return block(tokens.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return block(tokens, attn_mask=attn_mask)


def region_token_embeddings(visual: VisionTransformer, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[CLS] embeddings (U, D), unnormalised, of one CLIP-normalised ``image`` (3, H, W) (H, W
    multiples of the patch size) restricted to each of ``masks`` (U, H, W) bool, U >= 1 and
    no mask empty: one packed forward (see the module docstring)."""
    check_region_attention_tower(visual, "region-token embeddings")
    stride = visual.patch_size[0]
    height, width = image.shape[-2:]
    grid = (height // stride, width // stride)
    conv = visual.conv1
    if conv.kernel_size != conv.stride or conv.padding not in ((0, 0), "valid"):
        raise ValueError("region-token embeddings need a ViT whose patch embedding is one non-overlapping "
                         "patch per cell")
    # every cell's pixels (L, 3 * p * p) in the order of conv1's weight; a masked cell embeds
    # as that weight times its pixels with the outside ones zeroed (the mean pixel, normalised)
    pixels = F.unfold(image[None], stride, stride=stride)[0].T  # (L, 3 p p)
    keep = F.unfold(masks[:, None].to(image.dtype), stride, stride=stride)  # (U, p p, L)
    touched = keep.amax(dim=1) > 0  # (U, L)
    region, cell = torch.nonzero(touched, as_tuple=True)  # the cells of every region, region by region
    cell_pixels = pixels[cell] * keep[region, :, cell].repeat(1, 3)  # (T_cells, 3 p p), channel-major
    weight = conv.weight.reshape(conv.weight.shape[0], -1)
    patches = F.linear(cell_pixels, weight, conv.bias)
    position = resize_grid_embedding(visual.positional_embedding, visual.grid_size, grid).to(patches.dtype)
    patches = patches + position[1 + cell]
    count = masks.shape[0]
    cls = (visual.class_embedding.to(patches.dtype) + position[0]).expand(count, -1)
    # one sequence: region r's [CLS] then its cells; a token sees the tokens of its own region only
    owner = torch.cat((torch.arange(count, device=region.device), region))
    order = torch.argsort(owner, stable=True)
    tokens = visual.ln_pre(torch.cat((cls, patches))[order])[None]  # (1, T, W)
    owner = owner[order]
    attn_mask = torch.zeros(owner.numel(), owner.numel(), dtype=tokens.dtype, device=tokens.device)
    attn_mask.masked_fill_(owner[:, None] != owner[None, :], float("-inf"))
    batch_first = getattr(visual.transformer, "batch_first", True)
    for block in visual.transformer.resblocks:
        tokens = _run_block_masked(block, tokens, attn_mask, batch_first)
    cls_rows = torch.nonzero(torch.cat((owner.new_ones(1, dtype=torch.bool), owner[1:] != owner[:-1])),
                             as_tuple=True)[0]  # the first token of each region is its [CLS]
    return copies_to_embeddings(visual.ln_post, visual.proj, tokens[0, cls_rows])
