"""Forward passes through open_clip visual towers at any input size, for dense features.

open_clip's towers assume their training resolution; these helpers interpolate positional
embeddings to the input's grid and expose the intermediate maps zsmask needs (ViT patch tokens,
ModifiedResNet stages, MaskCLIP-style dense embeddings). Supported towers: open_clip
``VisionTransformer`` (class-token or average pooling, no attentional pooler) and
``ModifiedResNet``. Patch dropout is never applied (dense outputs need every patch).
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn

__all__ = [
    "VIT_DENSE_ROUTES",
    "tower_kind",
    "tower_stride",
    "resize_grid_embedding",
    "vit_embed",
    "vit_forward_tokens",
    "run_block",
    "run_blocks",
    "vit_patch_embeddings",
    "vit_pool",
    "vit_dense_embeddings",
    "vit_last_block_dense",
    "resnet_stages",
    "resnet_attnpool",
    "resnet_dense_embeddings",
]

# "maskclip": last block with its attention replaced by the value path (v-proj -> out-proj),
#   keeping the block's residual and MLP, as MaskCLIP's released ViT code (Zhou et al., 2022).
# "value_only": the value path alone (v-proj -> out-proj), no residual and no MLP.
VIT_DENSE_ROUTES = ("maskclip", "value_only")


def tower_kind(visual: nn.Module) -> str:
    """ "vit" or "resnet"; ValueError for towers zsmask cannot take dense features from."""
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, VisionTransformer):
        if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
            raise ValueError(
                "CLIP ViT towers with an attentional pooler or pool_type 'none' (CoCa-style) are "
                "not supported for dense features; use a CLIP with class-token or average pooling"
            )
        return "vit"
    raise ValueError(
        f"Unsupported CLIP visual tower {type(visual).__name__}; zsmask supports open_clip "
        "VisionTransformer and ModifiedResNet towers (e.g. ViT-B-16, RN50)"
    )


def tower_stride(visual: nn.Module) -> int:
    """Input pixels per dense-feature cell: the patch size (ViT) or 32 (ModifiedResNet)."""
    if tower_kind(visual) == "vit":
        ph, pw = visual.patch_size
        if ph != pw:
            raise ValueError(f"Non-square ViT patches {visual.patch_size} are not supported")
        return ph
    return 32


def resize_grid_embedding(pos: torch.Tensor, src_grid: Tuple[int, int], dst_grid: Tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a positional table ``(1 + gh*gw, C)`` (prefix token first) to ``dst_grid``.

    Returns ``(1 + h*w, C)``; the prefix (class) row is kept as is. Same grid: returned unchanged.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos
    prefix, grid = pos[:1], pos[1:]
    gh, gw = src_grid
    grid = grid.reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(dst_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(dst_grid[0] * dst_grid[1], -1).to(pos.dtype)
    return torch.cat([prefix, grid], dim=0)


# ------------------------------------------------------------------------------------ ViT
def vit_forward_tokens(
    visual: VisionTransformer, x: torch.Tensor, skip_last_block: bool = False
) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Embed normalised images ``(B, 3, H, W)`` and run the transformer blocks.

    H and W must be multiples of the patch size. Returns tokens ``(B, 1 + h*w, width)``
    (class token first, before ``ln_post``) and the grid ``(h, w)``. With ``skip_last_block``
    the tokens are the input of the last block.
    """
    x, grid = vit_embed(visual, x)
    blocks = visual.transformer.resblocks
    if skip_last_block:
        blocks = blocks[:-1]
    x, _ = run_blocks(blocks, x, getattr(visual.transformer, "batch_first", True))
    return x, grid


def vit_embed(visual: VisionTransformer, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """The tokens entering the first block: patch embedding of normalised images ``(B, 3, H, W)``
    (H, W multiples of the patch size), class token first, positional embedding resized to the
    grid, ``ln_pre``. Returns ``(B, 1 + h*w, width)`` and the grid ``(h, w)``."""
    x = visual.conv1(x)  # (B, width, h, w)
    grid = (x.shape[-2], x.shape[-1])
    x = x.flatten(2).transpose(1, 2)  # (B, h*w, width)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + resize_grid_embedding(visual.positional_embedding, visual.grid_size, grid).to(x.dtype)
    return visual.ln_pre(x), grid


def run_block(block: nn.Module, x: torch.Tensor, batch_first: bool = True) -> torch.Tensor:
    """One open_clip residual block on batch-first tokens ``(B, L, width)``, whatever the
    transformer's own layout (``batch_first``)."""
    if not batch_first:
        return block(x.transpose(0, 1)).transpose(0, 1)
    return block(x)


def run_blocks(blocks, tokens: torch.Tensor, batch_first: bool = True, deep_prompts: Optional[torch.Tensor] = None,
               taps: Sequence[int] = ()) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
    """Run ``blocks`` in order on batch-first tokens ``(B, L, width)``.

    ``deep_prompts`` (len(blocks), P, width), if given, are VPT-deep prompts (Jia et al., 2022):
    block i's prompts are appended to the tokens before it and dropped after it. Returns the
    final tokens ``(B, L, width)`` and ``{i: tokens after block i}`` for the 1-based ``taps``.
    """
    if deep_prompts is not None and deep_prompts.shape[0] != len(blocks):
        raise ValueError(f"{deep_prompts.shape[0]} sets of deep prompts for {len(blocks)} blocks")
    num_tokens, tapped = tokens.shape[1], {}
    for i, block in enumerate(blocks):
        if deep_prompts is not None:
            prompts = deep_prompts[i].to(tokens.dtype).expand(tokens.shape[0], -1, -1)
            tokens = run_block(block, torch.cat((tokens, prompts), dim=1), batch_first)[:, :num_tokens]
        else:
            tokens = run_block(block, tokens, batch_first)
        if i + 1 in taps:
            tapped[i + 1] = tokens
    return tokens, tapped


def vit_patch_embeddings(visual: VisionTransformer, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Patch tokens ``(B, 1 + h*w, width)`` of any block mapped to CLIP's joint space as the
    final block's are (``ln_post`` then ``proj``, ZegCLIP / ZegOT): ``(B, D, h, w)``, unnormalised."""
    patches = visual.ln_post(tokens[:, 1:])
    if visual.proj is not None:
        patches = patches @ visual.proj
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])


def vit_pool(visual: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's pooled image embedding ``(B, D)`` from last-block tokens ``(B, 1 + h*w, width)``."""
    if visual.final_ln_after_pool:
        pooled = tokens[:, 0] if visual.pool_type == "tok" else tokens[:, 1:].mean(dim=1)
        pooled = visual.ln_post(pooled)
    else:
        normed = visual.ln_post(tokens)
        pooled = normed[:, 0] if visual.pool_type == "tok" else normed[:, 1:].mean(dim=1)
    return pooled @ visual.proj if visual.proj is not None else pooled


def _value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's attention without query-key mixing: out_proj(v_proj(ln_1(x))), (B, L, C)."""
    attn = block.attn
    y = block.ln_1(x)
    width = y.shape[-1]
    weight = attn.in_proj_weight[2 * width:]
    bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    v = F.linear(y, weight, bias)
    head_scale = getattr(attn, "head_scale", None)
    if head_scale is not None:
        b, n, _ = v.shape
        v = (v.view(b, n, attn.num_heads, -1) * head_scale.view(1, 1, attn.num_heads, 1)).view(b, n, width)
    ln_inner = getattr(attn, "ln_inner", None)
    if ln_inner is not None:
        v = ln_inner(v)
    out = attn.out_proj(v)
    ln_attn = getattr(block, "ln_attn", None)
    if ln_attn is not None:
        out = ln_attn(out)
    return block.ls_1(out)


def vit_dense_embeddings(
    visual: VisionTransformer, x: torch.Tensor, route: str = "maskclip"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dense patch embeddings and the pooled embedding for normalised images ``(B, 3, H, W)``.

    Returns ``(dense (B, D, h, w), pooled (B, D))``, both unnormalised. ``pooled`` is CLIP's own
    image embedding (the last block run normally); ``dense`` runs the last block on the same
    input with the value path of ``route`` (see ``VIT_DENSE_ROUTES``), then ``ln_post`` and ``proj``.
    """
    penultimate, grid = vit_forward_tokens(visual, x, skip_last_block=True)
    return vit_last_block_dense(visual, penultimate, grid, route)


def vit_last_block_dense(visual: VisionTransformer, penultimate: torch.Tensor, grid: Tuple[int, int],
                         route: str = "maskclip") -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`vit_dense_embeddings` from the tokens ``(B, 1 + h*w, width)`` entering the last
    block: ``(dense (B, D, h, w), pooled (B, D))``."""
    if route not in VIT_DENSE_ROUTES:
        raise ValueError(f"Unknown ViT dense route {route!r}; valid: {VIT_DENSE_ROUTES}")
    h, w = grid
    last = visual.transformer.resblocks[-1]
    batch_first = getattr(visual.transformer, "batch_first", True)
    pooled = vit_pool(visual, run_block(last, penultimate, batch_first))

    dense = _value_path(last, penultimate)
    if route == "maskclip":
        dense = penultimate + dense
        dense = dense + last.ls_2(last.mlp(last.ln_2(dense)))
    dense = visual.ln_post(dense[:, 1:])
    if visual.proj is not None:
        dense = dense @ visual.proj
    dense = dense.transpose(1, 2).reshape(dense.shape[0], -1, h, w)
    return dense, pooled


# ------------------------------------------------------------------------------------ ResNet
def resnet_stages(visual: ModifiedResNet, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """ModifiedResNet stages for normalised images: res2..res5 at strides 4, 8, 16, 32."""
    x = visual.layer1(visual.stem(x))
    out = {"res2": x}
    for name, layer in (("res3", visual.layer2), ("res4", visual.layer3), ("res5", visual.layer4)):
        x = layer(x)
        out[name] = x
    return out


def _attnpool_positional(attnpool: nn.Module, grid: Tuple[int, int]) -> torch.Tensor:
    side = int(round((attnpool.positional_embedding.shape[0] - 1) ** 0.5))
    return resize_grid_embedding(attnpool.positional_embedding, (side, side), grid)


def resnet_attnpool(attnpool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLIP's attention pooling of res5 ``(B, C, h, w)`` at any ``(h, w)``: ``(B, D)``."""
    b, c, h, w = x.shape
    tokens = x.reshape(b, c, h * w).permute(2, 0, 1)  # (hw, B, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    tokens = tokens + _attnpool_positional(attnpool, (h, w))[:, None, :].to(tokens.dtype)
    pooled, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens,
        embed_dim_to_check=c,
        num_heads=attnpool.num_heads,
        q_proj_weight=attnpool.q_proj.weight,
        k_proj_weight=attnpool.k_proj.weight,
        v_proj_weight=attnpool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([attnpool.q_proj.bias, attnpool.k_proj.bias, attnpool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=attnpool.c_proj.weight,
        out_proj_bias=attnpool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return pooled[0]


def resnet_dense_embeddings(attnpool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP dense embeddings of res5 ``(B, C, h, w)``: c_proj(v_proj(x)) per location.

    As MaskCLIP, query and key are dropped and v_proj / c_proj act as 1x1 convolutions (no
    positional embedding). Returns ``(B, D, h, w)``, unnormalised.
    """
    tokens = x.flatten(2).transpose(1, 2)  # (B, hw, C)
    dense = attnpool.c_proj(attnpool.v_proj(tokens))
    return dense.transpose(1, 2).reshape(x.shape[0], -1, x.shape[-2], x.shape[-1])
