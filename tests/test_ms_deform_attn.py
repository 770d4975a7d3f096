"""MSDeformAttn op: hand-computed values, a grid_sample reference, gradients, the module, the
dispatcher's fallbacks, import safety, the kernel build (slow) and kernel-vs-PyTorch on a GPU."""
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from zsmask.modeling.pixel_decoder.ops import (
    IMPL_AUTO,
    IMPL_CUDA,
    IMPL_PYTORCH,
    MSDeformAttn,
    cuda_kernel_status,
    ms_deform_attn,
    ms_deform_attn_pytorch,
)
from zsmask.modeling.pixel_decoder.ops.deformable_attention import kernel_operands

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def grid_sample_reference(value, spatial_shapes, locations, weights):
    """Independent reference: per level and head, ``F.grid_sample`` then the weighted sum."""
    N, _, M, D = value.shape
    Lq = locations.shape[1]
    out = value.new_zeros(N, Lq, M, D)
    start = 0
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        level_value = value[:, start:start + height * width]  # (N, HW, M, D)
        start += height * width
        for m in range(M):
            image = level_value[:, :, m].transpose(1, 2).reshape(N, D, height, width)
            grid = locations[:, :, m, level] * 2 - 1  # (N, Lq, P, 2)
            sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out[:, :, m] += (sampled * weights[:, None, :, m, level]).sum(-1).transpose(1, 2)
    return out.reshape(N, Lq, M * D)


def random_inputs(shapes, batch=2, queries=5, heads=2, channels=3, points=2, dtype=torch.float64, seed=0,
                  device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    levels = len(shapes)
    value = torch.randn(batch, total, heads, channels, generator=gen, dtype=dtype)
    # Locations slightly beyond [0, 1] exercise the zero padding.
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=gen, dtype=dtype) * 1.3 - 0.15
    weights = torch.rand(batch, queries, heads, levels, points, generator=gen, dtype=dtype)
    starts = torch.cat([spatial_shapes.new_zeros(1), (spatial_shapes[:, 0] * spatial_shapes[:, 1]).cumsum(0)[:-1]])
    return [t.to(device) for t in (value, spatial_shapes, starts, locations, weights)]


# ---------------------------------------------------------------- values
def test_hand_computed_values_on_a_2x2_level():
    # One level, pixels (y, x): (0,0)=1, (0,1)=2, (1,0)=3, (1,1)=4; pixel centres at 0.25 / 0.75.
    value = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    shapes = torch.tensor([[2, 2]])
    points = [
        ((0.25, 0.25), 1.0, 1.0),        # centre of pixel (0,0)
        ((0.75, 0.75), 1.0, 4.0),        # centre of pixel (1,1)
        ((0.5, 0.25), 1.0, 1.5),         # halfway between (0,0) and (0,1)
        ((0.5, 0.5), 1.0, 2.5),          # centre of all four
        ((0.0, 0.25), 1.0, 0.5),         # left border: half of pixel (0,0), half zero padding
        ((0.0, 0.0), 1.0, 0.25),         # top-left corner: a quarter of pixel (0,0)
        ((1.5, 0.5), 1.0, 0.0),          # far outside
        ((0.75, 0.25), 0.5, 1.0),        # pixel (0,1)=2 with attention weight 0.5
    ]
    locations = torch.tensor([p[0] for p in points], dtype=torch.float64).view(1, len(points), 1, 1, 1, 2)
    weights = torch.tensor([p[1] for p in points], dtype=torch.float64).view(1, len(points), 1, 1, 1)
    expected = torch.tensor([p[2] for p in points], dtype=torch.float64).view(1, len(points), 1)
    out = ms_deform_attn_pytorch(value, shapes, locations, weights)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_matches_grid_sample_reference_over_several_levels(dtype, tol):
    value, shapes, _, locations, weights = random_inputs([[6, 5], [3, 3], [2, 1]], dtype=dtype)
    out = ms_deform_attn_pytorch(value, shapes, locations, weights)
    assert out.shape == (2, 5, 2 * 3)
    torch.testing.assert_close(out, grid_sample_reference(value, shapes, locations, weights), rtol=0, atol=tol)


def test_gradients_match_grid_sample_reference():
    inputs = random_inputs([[4, 5], [2, 3]], seed=3)
    value, shapes, _, locations, weights = inputs
    grads = []
    for fn in (ms_deform_attn_pytorch, grid_sample_reference):
        leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = fn(leaves[0], shapes, leaves[1], leaves[2])
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        grads.append([leaf.grad for leaf in leaves])
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-10)


def test_gradcheck_float64():
    value, shapes, _, locations, weights = random_inputs([[3, 4], [2, 2]], batch=1, queries=3, seed=1)
    leaves = [value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_()]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_pytorch(v, shapes, loc, w), leaves, eps=1e-6, atol=1e-5
    )


def test_core_shape_errors_name_the_shapes():
    value, shapes, _, locations, weights = random_inputs([[3, 4]])
    with pytest.raises(ValueError, match="sum to"):
        ms_deform_attn_pytorch(value[:, :-1], shapes, locations, weights)
    with pytest.raises(ValueError, match="attention_weights shape"):
        ms_deform_attn_pytorch(value, shapes, locations, weights[..., :1])
    with pytest.raises(ValueError, match=r"value must be \(N, S, M, D\)"):
        ms_deform_attn_pytorch(value[0], shapes, locations, weights)


# ---------------------------------------------------------------- module
def module_inputs(module, batch=2, queries=7, shapes=((4, 4), (2, 3)), box=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    starts = torch.cat([spatial_shapes.new_zeros(1), (spatial_shapes[:, 0] * spatial_shapes[:, 1]).cumsum(0)[:-1]])
    query = torch.randn(batch, queries, module.d_model, generator=gen)
    reference = torch.rand(batch, queries, len(shapes), 4 if box else 2, generator=gen)
    flatten = torch.randn(batch, total, module.d_model, generator=gen)
    return query, reference, flatten, spatial_shapes, starts


@pytest.mark.parametrize("box", [False, True])
def test_module_output_shape_and_backward(box):
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=3)
    query, reference, flatten, shapes, starts = module_inputs(module, box=box)
    out = module(query, reference, flatten, shapes, starts)
    assert out.shape == (2, 7, 16)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert module.value_proj.weight.grad.abs().sum() > 0
    assert module.sampling_offsets.weight.grad.abs().sum() > 0


def test_module_padding_mask_hides_padded_positions():
    module = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2)
    query, reference, flatten, shapes, starts = module_inputs(module, batch=1)
    mask = torch.zeros(1, flatten.shape[1], dtype=torch.bool)
    mask[:, 5:] = True
    changed = flatten.clone()
    changed[:, 5:] = 100.0
    out_a = module(query, reference, flatten, shapes, starts, mask)
    out_b = module(query, reference, changed, shapes, starts, mask)
    torch.testing.assert_close(out_a, out_b)
    assert not torch.allclose(out_a, module(query, reference, changed, shapes, starts))


def test_module_initialisation_follows_deformable_detr():
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=3)
    bias = module.sampling_offsets.bias.view(4, 2, 3, 2)
    # Head h points along angle 2*pi*h/4 (larger coordinate scaled to 1); point k at distance k+1.
    expected_dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for k in range(3):
        torch.testing.assert_close(bias[:, 0, k], expected_dirs * (k + 1), atol=1e-6, rtol=0)
        torch.testing.assert_close(bias[:, 1, k], expected_dirs * (k + 1), atol=1e-6, rtol=0)
    assert module.sampling_offsets.weight.abs().sum() == 0
    assert module.attention_weights.weight.abs().sum() == 0 and module.attention_weights.bias.abs().sum() == 0
    assert module.value_proj.bias.abs().sum() == 0 and module.output_proj.bias.abs().sum() == 0


def test_module_errors():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MSDeformAttn(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="unknown MSDeformAttn impl"):
        MSDeformAttn(d_model=8, n_heads=2, impl="triton")
    module = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2)
    query, reference, flatten, shapes, starts = module_inputs(module)
    with pytest.raises(ValueError, match="sum to"):
        module(query, reference, flatten[:, :-1], shapes, starts)
    with pytest.raises(ValueError, match="reference_points must be"):
        module(query, reference[..., :1], flatten, shapes, starts)
    with pytest.raises(ValueError, match=r"input_spatial_shapes must be \(2, 2\)"):
        module(query, reference, flatten, shapes[:1], starts[:1])
    with pytest.raises(ValueError, match="query must be"):
        module(query[..., :4], reference, flatten, shapes, starts)
    with pytest.raises(ValueError, match="input_padding_mask must be"):
        module(query, reference, flatten, shapes, starts, torch.zeros(2, 3, dtype=torch.bool))


# ---------------------------------------------------------------- dispatcher and import safety
def test_auto_falls_back_on_cpu_and_logs_the_reason(caplog):
    value, shapes, starts, locations, weights = random_inputs([[3, 4], [2, 2]])
    with caplog.at_level(logging.INFO, logger="zsmask.modeling.pixel_decoder.ops.deformable_attention"):
        out = ms_deform_attn(value, shapes, starts, locations, weights, impl=IMPL_AUTO)
        ms_deform_attn(value, shapes, starts, locations, weights, impl=IMPL_AUTO)
    torch.testing.assert_close(out, ms_deform_attn_pytorch(value, shapes, locations, weights))
    torch.testing.assert_close(out, ms_deform_attn(value, shapes, starts, locations, weights, impl=IMPL_PYTORCH))
    messages = [r.getMessage() for r in caplog.records if "PyTorch path" in r.getMessage()]
    assert len(messages) <= 1  # once per process and reason (an earlier test may have logged it)


def test_cuda_impl_on_cpu_tensors_raises_a_clear_error():
    value, shapes, starts, locations, weights = random_inputs([[3, 4]])
    with pytest.raises(RuntimeError, match=r"kernel is unavailable: the tensors are on cpu.*Fix:"):
        ms_deform_attn(value, shapes, starts, locations, weights, impl=IMPL_CUDA)
    with pytest.raises(ValueError, match="unknown MSDeformAttn impl"):
        ms_deform_attn(value, shapes, starts, locations, weights, impl="fast")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the status reported without a GPU")
def test_kernel_operands_share_the_widest_dtype_and_pass_gradients_back():
    """Autocast hands the kernel an fp16 value with fp32 locations and weights; the kernel needs
    one dtype, so all three become fp32, and each gradient returns in its input's dtype."""
    value = torch.randn(1, 6, 2, 4, dtype=torch.float16, requires_grad=True)
    locations = torch.rand(1, 3, 2, 1, 2, 2).transpose(1, 2).requires_grad_()  # not contiguous
    weights = torch.rand(1, 3, 2, 1, 2, requires_grad=True)
    cast = kernel_operands(value, locations, weights)
    assert [t.dtype for t in cast] == [torch.float32] * 3
    assert all(t.is_contiguous() for t in cast)
    assert torch.equal(cast[0], value.float()) and torch.equal(cast[1], locations)
    sum(t.sum() * (i + 1) for i, t in enumerate(cast)).backward()
    assert value.grad.dtype == torch.float16 and torch.equal(value.grad, torch.ones_like(value))
    assert torch.equal(locations.grad, torch.full_like(locations, 2.0))
    assert torch.equal(weights.grad, torch.full_like(weights, 3.0))
    same = kernel_operands(*(t.detach().double() for t in (value, locations, weights)))
    assert [t.dtype for t in same] == [torch.float64] * 3


def test_kernel_status_without_gpu_gives_a_reason():
    status = cuda_kernel_status()
    assert not status.available and "no CUDA device" in status.reason


def test_import_and_fallback_with_cuda_home_pointing_nowhere(tmp_path):
    env = dict(os.environ, CUDA_HOME=str(tmp_path / "nowhere"), PYTHONPATH=ROOT)
    code = (
        "import torch\n"
        "from zsmask.modeling.pixel_decoder.ops import MSDeformAttn, build\n"
        "module, reason = build.load_kernel()\n"
        "assert module is None and 'has no bin/nvcc' in reason, reason\n"
        "m = MSDeformAttn(8, 1, 2, 2)\n"
        "out = m(torch.randn(1, 3, 8), torch.rand(1, 3, 1, 2), torch.randn(1, 6, 8), torch.tensor([[2, 3]]),"
        " torch.tensor([0]))\n"
        "print(tuple(out.shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(1, 3, 8)" in result.stdout


# ---------------------------------------------------------------- kernel build (nvcc) and GPU
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.isfile("/usr/local/cuda/bin/nvcc"),
                    reason="nvcc is not installed: the kernel cannot be compiled here")
def test_kernel_compiles_and_exposes_forward_backward():
    from zsmask.modeling.pixel_decoder.ops import build

    if torch.version.cuda is None:
        pytest.skip("this torch was built without CUDA")
    cache = os.environ["ZSMASK_CACHE"]  # a per-session temp folder (tests/conftest.py)
    build.load_kernel.cache_clear()
    module, reason = build.load_kernel()
    assert module is not None, reason
    assert callable(module.forward) and callable(module.backward)
    assert reason.startswith(f"kernel loaded from {os.path.join(cache, 'extensions')}")


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes, batch, queries, heads, channels, points", [
    ([[5, 7]], 1, 9, 1, 4, 1),
    ([[8, 8], [4, 4], [2, 2]], 2, 30, 8, 32, 4),
    ([[13, 6], [7, 3]], 3, 17, 2, 40, 3),  # channels over a warp, odd sizes, batch over im2col_step
])
def test_kernel_matches_pytorch_path(dtype, shapes, batch, queries, heads, channels, points):
    device = torch.device(torch.cuda.current_device())
    inputs = random_inputs(shapes, batch, queries, heads, channels, points, dtype=dtype, seed=5, device=device)
    value, spatial_shapes, starts, locations, weights = inputs
    status = cuda_kernel_status()
    assert status.available, status.reason
    results = []
    for impl in (IMPL_CUDA, IMPL_PYTORCH):
        leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = ms_deform_attn(leaves[0], spatial_shapes, starts, leaves[1], leaves[2], im2col_step=2, impl=impl)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype, device=device).view_as(out))
        results.append([out.detach()] + [leaf.grad for leaf in leaves])
    for kernel_result, torch_result in zip(*results):
        scale = max(1.0, torch_result.abs().max().item())
        assert (kernel_result - torch_result).abs().max().item() <= 1e-4 * scale


def kernel_and_pytorch_modules(d_model, device):
    """Two MSDeformAttn modules with the same weights: the kernel's and the PyTorch path's."""
    torch.manual_seed(0)
    kernel_module = MSDeformAttn(d_model=d_model, n_levels=2, n_heads=4, n_points=2, impl=IMPL_CUDA).to(device)
    torch_module = MSDeformAttn(d_model=d_model, n_levels=2, n_heads=4, n_points=2, impl=IMPL_PYTORCH).to(device)
    torch_module.load_state_dict(kernel_module.state_dict())
    return kernel_module, torch_module


@needs_gpu
def test_module_with_padding_mask_kernel_vs_pytorch():
    device = torch.device(torch.cuda.current_device())
    kernel_module, torch_module = kernel_and_pytorch_modules(32, device)
    query, reference, flatten, shapes, starts = [t.to(device) for t in module_inputs(kernel_module, shapes=((6, 5), (3, 3)))]
    mask = torch.zeros(flatten.shape[:2], dtype=torch.bool, device=device)
    mask[1, 20:] = True
    outs = [m(query, reference, flatten, shapes, starts, mask) for m in (kernel_module, torch_module)]
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-4
    grads = []
    for m, out in zip((kernel_module, torch_module), outs):
        out.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert (grads[0] - grads[1]).abs().max().item() <= 1e-4 * max(1.0, grads[1].abs().max().item())


@needs_gpu
def test_module_under_autocast_kernel_vs_pytorch():
    """Under fp16 autocast the kernel path runs (promoted to fp32) and agrees with the PyTorch path."""
    device = torch.device(torch.cuda.current_device())
    kernel_module, torch_module = kernel_and_pytorch_modules(64, device)
    inputs = [t.to(device) for t in module_inputs(kernel_module, shapes=((8, 8), (4, 4)))]
    with torch.autocast(device.type, dtype=torch.float16):
        outs = [m(*inputs) for m in (kernel_module, torch_module)]
    assert outs[0].dtype == outs[1].dtype == torch.float16
    scale = max(1.0, outs[1].float().abs().max().item())
    assert (outs[0].float() - outs[1].float()).abs().max().item() <= 1e-2 * scale
