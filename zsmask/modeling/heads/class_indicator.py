"""AlignZeg's class indicator φ_bc for Predictive Bias Correction (Ge et al., Sec. 3.3, Eq. 5).

I = φ_bc(F): two fully connected layers and a sigmoid on each proposal feature; I near 1 says
the proposal holds no seen class. Trained with L_bc (Eq. 6, criterion loss ``class_indicator``)
on proposals chosen by the ``negative_proposals`` selector; at inference proposals with
I > γ get their seen-class scores suppressed (Eq. 7,
:func:`~zsmask.modeling.inference.suppress_seen_scores`).
"""
import torch
from torch import nn

__all__ = ["ClassIndicatorHead"]


class ClassIndicatorHead(nn.Module):
    """``forward(features (..., D)) -> logits (...,)``; I = ``logits.sigmoid()`` (the sigmoid is
    left to the loss and to inference, for a numerically stable BCE)."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1)
