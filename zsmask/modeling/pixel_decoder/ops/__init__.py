"""Multi-scale deformable attention op (Deformable DETR, Zhu et al. 2021): PyTorch path and own CUDA kernel."""
from .deformable_attention import (
    IMPL_AUTO,
    IMPL_CUDA,
    IMPL_PYTORCH,
    KernelStatus,
    MSDeformAttn,
    cuda_kernel_status,
    ms_deform_attn,
    ms_deform_attn_pytorch,
)

__all__ = [
    "IMPL_AUTO",
    "IMPL_CUDA",
    "IMPL_PYTORCH",
    "KernelStatus",
    "MSDeformAttn",
    "cuda_kernel_status",
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
]
