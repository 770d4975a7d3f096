"""Convolution + normalisation helpers, an MLP, activations."""
from typing import Callable

import torch.nn.functional as F
from detectron2.layers import Conv2d, get_norm
from torch import nn

__all__ = ["MLP", "conv_norm", "group_norm", "get_activation"]


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``
    (32 for the standard 256-channel model; fewer for tiny test/toy models)."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str,
              activation: Callable = None) -> Conv2d:
    """detectron2 ``Conv2d`` (bias only without norm) with ``norm`` ("GN", "BN", "" ...) and an
    optional activation, Xavier-uniform initialised (Mask2Former's pixel-decoder convs)."""
    if norm == "GN":
        norm_layer = group_norm(out_channels)
    else:
        norm_layer = get_norm(norm, out_channels)
    conv = Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2,
                  bias=norm_layer is None, norm=norm_layer, activation=activation)
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: ``(..., in_dim) -> (..., out_dim)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def get_activation(name: str) -> Callable:
    """``"relu"`` / ``"gelu"`` / ``"glu"`` -> the functional activation."""
    table = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(table)}")
    return table[name]
