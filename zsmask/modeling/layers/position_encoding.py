"""Fixed 2-D sine positional encoding (DETR, Carion et al. 2020, Sec. A.4)."""
import math
from typing import Optional

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """Encode each pixel's (y, x) position with sines and cosines of ``num_pos_feats`` frequencies.

    ``forward(x (B, C, H, W), mask (B, H, W) bool or None) -> (B, 2 * num_pos_feats, H, W)``:
    the first half of the channels encodes y, the second half x; positions are the cumulative
    count of valid (unmasked) pixels, normalised to ``[0, scale]`` when ``normalize``.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
                 scale: Optional[float] = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("SinePositionEncoding: `scale` is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, _, h, w = x.shape
        if mask is None:
            mask = torch.zeros((b, h, w), device=x.device, dtype=torch.bool)
        valid = (~mask).to(x.dtype if x.is_floating_point() else torch.float32)
        y_pos = valid.cumsum(1)
        x_pos = valid.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_pos = (y_pos - 0.5) / (y_pos[:, -1:, :] + eps) * self.scale
            x_pos = (x_pos - 0.5) / (x_pos[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=y_pos.dtype, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_pos[:, :, :, None] / dim_t
        pos_y = y_pos[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)
