"""Multi-scale deformable attention (MSDeformAttn) of Deformable DETR (Zhu et al., ICLR 2021).

For query q with reference point p_q, head m, level l and point k, Eq. 2/3 of "Deformable DETR"
read

    MSDeformAttn(z_q, p_q, {x^l}) = sum_m W_m [ sum_l sum_k A_mlqk * W'_m x^l(phi_l(p_q) + dp_mlqk) ]

where x^l(.) samples level l bilinearly at a fractional location. This file holds the core
``sum_l sum_k A * x^l(.)`` (``ms_deform_attn_pytorch`` and the own CUDA kernel behind
``ms_deform_attn``) and the full module ``MSDeformAttn`` with its projections.

PyTorch path: each sampling point touches four pixels, so the whole sum is a weighted sum of
``L*P*4`` rows of the value table per (batch, query, head). The row indices and the weights
(attention weight x bilinear weight x in-bounds flag) are computed in closed form and the sum is
one ``embedding_bag`` call, with no per-level ``(N*M, D, Lq, P)`` intermediates. On CPU its
backward is two sparse products (a transposed sparse-dense product for the value gradient, a
sampled dense-dense product for the weight gradient). Without gradients (inference, and
tracing for export) it is the bare ``embedding_bag``, which TorchScript and ONNX-style
exporters know; tracing always takes this path, never the CUDA kernel.
"""
import logging
import math
import warnings
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMPL_AUTO",
    "IMPL_CUDA",
    "IMPL_PYTORCH",
    "MSDeformAttn",
    "KernelStatus",
    "cuda_kernel_status",
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
]

logger = logging.getLogger(__name__)

IMPL_AUTO = "auto"
IMPL_PYTORCH = "pytorch"
# The kernel's implementation name is the type of the device it runs on.
IMPL_CUDA = torch.device(0).type
IMPLS = (IMPL_AUTO, IMPL_CUDA, IMPL_PYTORCH)

def _level_geometry(spatial_shapes: torch.Tensor, device: torch.device):
    """``(L, 2)`` (H, W) -> heights ``(L,)``, widths ``(L,)``, level start offsets ``(L,)``."""
    shapes = spatial_shapes.to(device=device, dtype=torch.long)
    heights, widths = shapes[:, 0], shapes[:, 1]
    sizes = heights * widths
    starts = torch.cumsum(sizes, 0) - sizes
    return heights, widths, starts


def _corner_rows_and_weights(value_shape, spatial_shapes, sampling_locations, attention_weights):
    """Rows of the flattened value table and their weights for every bilinear corner.

    The value ``(N, S, M, D)`` is read as a table of ``N*S*M`` rows of ``D`` channels. For each
    (n, q, m) the result lists ``L*P*4`` rows and weights ``A_mlqk * bilinear * in_bounds``, so
    that output[n, q, m] = sum_j weight_j * table[row_j]. Locations use grid_sample's
    ``align_corners=False`` convention: pixel = loc * size - 0.5, computed as
    ``(2*loc - 1 + 1) * size/2 - 0.5`` to round exactly like grid_sample's CPU kernel.

    Returns rows ``(N*Lq*M, L*P*4)`` (int32 when the table is small enough, else int64) and
    weights ``(N*Lq*M, L*P*4)`` in the dtype of ``sampling_locations``.
    """
    N, S, M, _ = value_shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    bags = N * Lq * M
    device = sampling_locations.device
    heights, widths, starts = _level_geometry(spatial_shapes, device)
    index_dtype = torch.int32 if N * S * M < 2**31 else torch.long

    # Work on level-major planes (axis, level, bag, point): per-level constants then broadcast
    # over long contiguous runs instead of the innermost size-2 axis.
    locations = sampling_locations.reshape(bags, L, P, 2).permute(3, 1, 0, 2).contiguous()
    sizes_xy = torch.stack([widths, heights]).view(2, L, 1, 1)
    pixel = (locations * 2 - 1 + 1) * (sizes_xy.to(locations.dtype) / 2) - 0.5
    pixel_floor = pixel.floor()
    frac = pixel - pixel_floor
    # Integer corners on each axis; out-of-range corners are clamped (a valid row is read) and
    # get weight zero, which is grid_sample's zero padding.
    low = pixel_floor.to(index_dtype)
    high = low + 1
    max_coord = (sizes_xy - 1).to(index_dtype)
    low_c = torch.minimum(low.clamp_min(0), max_coord)
    high_c = torch.minimum(high.clamp_min(0), max_coord)
    w_low = (1 - frac) * (low_c == low)
    w_high = frac * (high_c == high)

    attn = attention_weights.reshape(bags, L, P).transpose(0, 1).to(frac.dtype)
    wy_low, wy_high = w_low[1] * attn, w_high[1] * attn
    weights = torch.stack([wy_low * w_low[0], wy_low * w_high[0], wy_high * w_low[0], wy_high * w_high[0]], 2)

    # Row of pixel (y, x) of level l for bag (n, q, m): (n*S + start_l + y*W_l + x) * M + m.
    bag = torch.arange(bags, device=device, dtype=index_dtype)
    bag_base = (bag // (Lq * M)) * (S * M) + bag % M  # n*S*M + m
    level_base = (starts * M).to(index_dtype).view(L, 1, 1) + bag_base.view(1, bags, 1)
    stride_y = (widths * M).to(index_dtype).view(L, 1, 1)
    y_low = low_c[1] * stride_y + level_base
    y_high = high_c[1] * stride_y + level_base
    x_low, x_high = low_c[0] * M, high_c[0] * M
    rows = torch.stack([y_low + x_low, y_low + x_high, y_high + x_low, y_high + x_high], 2)
    # (level, bag, corner, point) -> (bag, level * corner * point); the order within a bag is free.
    return rows.transpose(0, 1).reshape(bags, L * P * 4), weights.transpose(0, 1).reshape(bags, L * P * 4)


def _sparse_weights(rows: torch.Tensor, weights: torch.Tensor, num_table_rows: int, transpose: bool):
    """The sparse ``(B, R)`` matrix holding ``weights[b, j]`` at ``(b, rows[b, j])``: as CSR, or its
    ``(R, B)`` transpose as (uncoalesced) COO when ``transpose``."""
    bags, per_bag = rows.shape
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        if transpose:
            bag_ids = torch.arange(bags, device=rows.device).repeat_interleave(per_bag)
            indices = torch.stack([rows.reshape(-1).long(), bag_ids])
            return torch.sparse_coo_tensor(indices, weights.reshape(-1), (num_table_rows, bags),
                                           check_invariants=False)
        crow = torch.arange(0, bags * per_bag + 1, per_bag, device=rows.device, dtype=rows.dtype)
        return torch.sparse_csr_tensor(crow, rows.reshape(-1), weights.reshape(-1),
                                       (bags, num_table_rows), check_invariants=False)


class _WeightedRowSum(torch.autograd.Function):
    """``out[b] = sum_j weights[b, j] * table[rows[b, j]]`` with a sparse-product backward.

    Forward is ``embedding_bag``; backward computes grad_table = A^T grad_out (sparse COO times
    dense) and grad_weights[b, j] = <grad_out[b], table[rows[b, j]]> (``sampled_addmm``), which
    on CPU is several times faster than ``embedding_bag``'s own sort-based backward.
    """

    @staticmethod
    def forward(ctx, table, rows, weights):
        ctx.save_for_backward(table, rows, weights)
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        table, rows, weights = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.sparse.mm(_sparse_weights(rows, weights, table.shape[0], True), grad_out)
        if ctx.needs_input_grad[2]:
            pattern = _sparse_weights(rows, weights, table.shape[0], False)
            sampled = torch.sparse.sampled_addmm(pattern, grad_out, table.t(), beta=0.0)
            grad_weights = sampled.values().view_as(weights)
        return grad_table, None, grad_weights


def ms_deform_attn_pytorch(value: torch.Tensor, spatial_shapes: torch.Tensor,
                           sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Core of Eq. 2/3 of Deformable DETR in plain PyTorch (any device, differentiable).

    value ``(N, S, M, D)`` with S = sum_l H_l*W_l; spatial_shapes ``(L, 2)`` int64 (H_l, W_l);
    sampling_locations ``(N, Lq, M, L, P, 2)`` normalised (x, y) in [0, 1]; attention_weights
    ``(N, Lq, M, L, P)``. Bilinear sampling with zero padding and ``align_corners=False``, as
    ``F.grid_sample``. Returns ``(N, Lq, M*D)``.
    """
    _check_core_shapes(value, spatial_shapes, sampling_locations, attention_weights)
    N, S, M, D = value.shape
    Lq = sampling_locations.shape[1]
    rows, weights = _corner_rows_and_weights(value.shape, spatial_shapes, sampling_locations,
                                             attention_weights)
    table = value.reshape(N * S * M, D)
    weights = weights.to(value.dtype)
    needs_backward = torch.is_grad_enabled() and (table.requires_grad or weights.requires_grad)
    if torch.onnx.is_in_onnx_export():
        # ONNX has no EmbeddingBag (the exporter would emit a slow Loop): Gather, Mul, ReduceSum.
        out = (table[rows.long()] * weights.unsqueeze(-1)).sum(dim=1)
    elif value.device.type == "cpu" and needs_backward:
        out = _WeightedRowSum.apply(table, rows, weights)
    else:
        out = F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
    return out.view(N, Lq, M * D)


def _check_core_shapes(value, spatial_shapes, sampling_locations, attention_weights):
    """Clear errors for inconsistent shapes of the core op's inputs."""
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2) of (H, W), got shape {tuple(spatial_shapes.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError("sampling_locations must be (N, Lq, M, L, P, 2), got shape "
                         f"{tuple(sampling_locations.shape)}")
    N, S, M, _ = value.shape
    L = spatial_shapes.shape[0]
    expected = (N, sampling_locations.shape[1], M, L, sampling_locations.shape[4])
    if tuple(sampling_locations.shape[:5]) != expected:
        raise ValueError(f"sampling_locations shape {tuple(sampling_locations.shape)} does not match value "
                         f"{tuple(value.shape)} and spatial_shapes {tuple(spatial_shapes.shape)}: expected "
                         f"{expected + (2,)}")
    if tuple(attention_weights.shape) != expected:
        raise ValueError(f"attention_weights shape {tuple(attention_weights.shape)} does not match "
                         f"sampling_locations {tuple(sampling_locations.shape)}: expected {expected}")
    total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    if total != S:
        raise ValueError(f"value has S={S} positions but spatial_shapes {spatial_shapes.tolist()} sum to {total}")


class KernelStatus(NamedTuple):
    """Whether the own CUDA kernel is usable, and why (not)."""

    available: bool
    reason: str


_kernel_module = None
_kernel_status: Optional[KernelStatus] = None
_fallback_logged = set()


def cuda_kernel_status() -> KernelStatus:
    """Build (once, JIT, cached on disk) and load the own CUDA kernel; report the outcome."""
    global _kernel_module, _kernel_status
    if _kernel_status is None:
        if not torch.cuda.is_available():
            _kernel_status = KernelStatus(False, "no CUDA device is available to this torch")
        else:
            from .build import load_kernel

            _kernel_module, reason = load_kernel()
            _kernel_status = KernelStatus(_kernel_module is not None, reason)
    return _kernel_status


class _KernelFunction(torch.autograd.Function):
    """Autograd wrapper of the own CUDA kernel (forward and backward in ``src/``)."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                im2col_step):
        ctx.im2col_step = im2col_step
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return _kernel_module.forward(value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights, im2col_step)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = _kernel_module.backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            grad_output.contiguous(), ctx.im2col_step)
        return grad_value, None, None, grad_locations, grad_weights, None


def kernel_operands(value: torch.Tensor, sampling_locations: torch.Tensor, attention_weights: torch.Tensor):
    """The kernel's three floating inputs in one dtype, contiguous.

    The kernel reads one dtype for all three. Under CUDA autocast they differ: the value
    projection gives fp16, while the locations (fp32 reference points + offsets) and the softmax
    weights stay fp32. They are promoted to the widest dtype (fp32 there, as Mask2Former runs
    this op in fp32 under autocast); fp16 locations would cost 1e-3 of the normalised
    coordinate, a tenth of a pixel at the 1/8 level of a 1024-pixel image. Casts are autograd
    ops, so every gradient returns in its input's dtype.
    """
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    return tuple(t.to(dtype).contiguous() for t in (value, sampling_locations, attention_weights))


def _log_fallback_once(reason: str):
    if reason not in _fallback_logged:
        _fallback_logged.add(reason)
        logger.info("MSDeformAttn uses the PyTorch path: %s", reason)


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   im2col_step: int = 64, impl: str = IMPL_AUTO) -> torch.Tensor:
    """Dispatch the core of Eq. 2/3 (Deformable DETR) to the own CUDA kernel or the PyTorch path.

    Shapes as ``ms_deform_attn_pytorch``; level_start_index ``(L,)`` int64. ``impl``: "auto" (the
    kernel for CUDA tensors when it builds, else PyTorch, logged once with the reason), the
    kernel by name (``IMPL_CUDA``; RuntimeError when unusable) or "pytorch". Returns ``(N, Lq, M*D)``.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown MSDeformAttn impl {impl!r}; choose one of {IMPLS}")
    if impl == IMPL_PYTORCH or torch.jit.is_tracing():
        # Traced for export: plain aten ops (embedding_bag), which TorchScript serialises.
        return ms_deform_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
    if not value.is_cuda:
        reason = f"the tensors are on {value.device.type}, the kernel runs on {IMPL_CUDA} tensors only"
        status = KernelStatus(False, reason)
    else:
        status = cuda_kernel_status()
    if status.available:
        _check_core_shapes(value, spatial_shapes, sampling_locations, attention_weights)
        value, sampling_locations, attention_weights = kernel_operands(value, sampling_locations, attention_weights)
        return _KernelFunction.apply(value, spatial_shapes.contiguous(), level_start_index.contiguous(),
                                     sampling_locations, attention_weights, im2col_step)
    if impl == IMPL_CUDA:
        raise RuntimeError(
            f"MSDeformAttn impl={IMPL_CUDA!r} was requested but the kernel is unavailable: {status.reason}. "
            f"Fix: put the tensors on a GPU, install the CUDA toolkit matching torch.version.cuda "
            f"(nvcc on PATH or CUDA_HOME set) and pre-build with "
            f"`python -m zsmask.modeling.pixel_decoder.ops.build`; or use impl={IMPL_PYTORCH!r} / {IMPL_AUTO!r}."
        )
    _log_fallback_once(status.reason)
    return ms_deform_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Eq. 3 of Deformable DETR, Zhu et al. 2021).

    Each query predicts, per head, level and point, a sampling offset and an attention weight
    (softmax over the ``n_levels * n_points`` samples of a head) and attends to the bilinearly
    sampled projected values around its reference point.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 impl: str = IMPL_AUTO):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if impl not in IMPLS:
            raise ValueError(f"unknown MSDeformAttn impl {impl!r}; choose one of {IMPLS}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.impl = impl
        self.im2col_step = 64
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        """Deformable DETR's initialisation: head h's offsets point along direction 2*pi*h/M
        (scaled so the larger coordinate is 1), point k at distance k+1; uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        point_scale = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        ring = directions.view(self.n_heads, 1, 1, 2) * point_scale
        ring = ring.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, input_flatten: torch.Tensor,
                input_spatial_shapes: torch.Tensor, input_level_start_index: torch.Tensor,
                input_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query ``(N, Lq, C)``; reference_points ``(N, Lq, L, 2)`` normalised (x, y) in [0, 1]
        or ``(N, Lq, L, 4)`` boxes (cx, cy, w, h); input_flatten ``(N, S, C)``; input_spatial_shapes
        ``(L, 2)``; input_level_start_index ``(L,)``; input_padding_mask ``(N, S)`` bool, True at
        padding. Returns ``(N, Lq, C)``."""
        self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes, input_padding_mask)
        N, Lq, _ = query.shape
        S = input_flatten.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.d_model // M)
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1).view(N, Lq, M, L, P)

        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: normalise by (W_l, H_l).
            sizes_xy = input_spatial_shapes.flip(-1).to(offsets.dtype)
            locations = reference_points[:, :, None, :, None, :] + offsets / sizes_xy[None, None, None, :, None, :]
        else:
            # Offsets are relative to half the box size, spread over the points.
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5)
        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights,
                                self.im2col_step, self.impl)
        return self.output_proj(output)

    def _check_inputs(self, query, reference_points, input_flatten, input_spatial_shapes, input_padding_mask):
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"query must be (N, Lq, {self.d_model}), got shape {tuple(query.shape)}")
        if input_flatten.dim() != 3 or input_flatten.shape[-1] != self.d_model:
            raise ValueError(f"input_flatten must be (N, S, {self.d_model}), got shape {tuple(input_flatten.shape)}")
        N, Lq, _ = query.shape
        if input_flatten.shape[0] != N:
            raise ValueError(f"query {tuple(query.shape)} and input_flatten {tuple(input_flatten.shape)} "
                             "have different batch sizes")
        if tuple(input_spatial_shapes.shape) != (self.n_levels, 2):
            raise ValueError(f"input_spatial_shapes must be ({self.n_levels}, 2) for n_levels={self.n_levels}, "
                             f"got shape {tuple(input_spatial_shapes.shape)}")
        total = int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum())
        if total != input_flatten.shape[1]:
            raise ValueError(f"input_flatten {tuple(input_flatten.shape)} has S={input_flatten.shape[1]} positions "
                             f"but input_spatial_shapes {input_spatial_shapes.tolist()} sum to {total}")
        if (reference_points.dim() != 4 or tuple(reference_points.shape[:3]) != (N, Lq, self.n_levels)
                or reference_points.shape[-1] not in (2, 4)):
            raise ValueError(f"reference_points must be ({N}, {Lq}, {self.n_levels}, 2 or 4), "
                             f"got shape {tuple(reference_points.shape)}")
        if input_padding_mask is not None and tuple(input_padding_mask.shape) != tuple(input_flatten.shape[:2]):
            raise ValueError(f"input_padding_mask must be {tuple(input_flatten.shape[:2])}, "
                             f"got shape {tuple(input_padding_mask.shape)}")
