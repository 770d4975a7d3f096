"""The inverse-transformation network of SAZS's L_shape (Sec. 3.3, Eq. 2; after InverseForm,
Borse et al. 2021).

An MLP reads a pair of edge patches (the ground truth's and a prediction's, each resized to
P x P) and regresses the affine transform theta (2 x 3) that maps the first onto the second:
``second = warp(first, theta)`` with ``warp`` = ``grid_sample(first, affine_grid(theta))``. It is
trained in advance, on edge maps alone, by :func:`pretrain_inverse_transform` (random affine
warps of edge patches and their parameters; ``tools/train_inverse_transform.py`` runs it on a
dataset's ground truth), then frozen: during segmentation training L_shape =
mean_i ||theta_i - I||_F over the patches pushes the predicted edges towards the ground truth's.
"""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InverseTransformNet", "random_affine", "warp_edges", "pretrain_inverse_transform", "edge_patches",
           "save_inverse_transform", "load_inverse_transform"]

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class InverseTransformNet(nn.Module):
    """``(first, second) (T, P, P) -> theta (T, 2, 3)``; identity at initialisation."""

    def __init__(self, patch_size: int = 32, hidden_dim: int = 512):
        super().__init__()
        self.patch_size = patch_size
        self.mlp = nn.Sequential(
            nn.Linear(2 * patch_size * patch_size, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim // 2), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim // 2, 6))
        nn.init.zeros_(self.mlp[-1].weight)
        with torch.no_grad():
            self.mlp[-1].bias.copy_(torch.tensor(IDENTITY))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        if first.shape != second.shape or tuple(first.shape[-2:]) != (self.patch_size,) * 2:
            raise ValueError(f"expected two (T, {self.patch_size}, {self.patch_size}) edge patches, got "
                             f"{tuple(first.shape)} and {tuple(second.shape)}")
        pair = torch.cat((first.flatten(1), second.flatten(1)), dim=1)
        return self.mlp(pair).view(-1, 2, 3)

    def distance_to_identity(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """(T,) ||theta - I||_F (Eq. 2's summand)."""
        identity = first.new_tensor(IDENTITY).view(1, 2, 3)
        return (self(first, second) - identity).flatten(1).norm(dim=1)


def edge_patches(edges: torch.Tensor, grid: Tuple[int, int], patch_size: int) -> torch.Tensor:
    """Edge maps (B, H, W) split into ``grid`` (rows, cols) patches, each max-pooled to
    (patch_size, patch_size) so thin edges survive: (B * rows * cols, P, P)."""
    rows, cols = grid
    batch, height, width = edges.shape
    # pad so the grid divides the map evenly
    pad_h, pad_w = -height % rows, -width % cols
    edges = F.pad(edges, (0, pad_w, 0, pad_h))
    cells = edges.view(batch, rows, (height + pad_h) // rows, cols, (width + pad_w) // cols)
    cells = cells.permute(0, 1, 3, 2, 4).reshape(batch * rows * cols, 1, (height + pad_h) // rows,
                                                 (width + pad_w) // cols)
    return F.adaptive_max_pool2d(cells, patch_size)[:, 0]


def random_affine(count: int, generator: torch.Generator, max_rotation: float = 20.0, max_scale: float = 0.2,
                  max_shear: float = 0.15, max_translation: float = 0.25) -> torch.Tensor:
    """(count, 2, 3) affine transforms (affine_grid's normalised coordinates): rotation up to
    ``max_rotation`` degrees, scale 1 +- ``max_scale`` per axis, shear and translation up to the
    given amounts; a quarter of them exactly the identity."""
    def uniform(bound):
        return (2 * torch.rand(count, generator=generator) - 1) * bound

    angle = uniform(math.radians(max_rotation))
    scale_x, scale_y = 1 + uniform(max_scale), 1 + uniform(max_scale)
    shear = uniform(max_shear)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack((
        torch.stack((scale_x * cos, -scale_y * sin + shear, uniform(max_translation)), dim=1),
        torch.stack((scale_x * sin, scale_y * cos, uniform(max_translation)), dim=1)), dim=1)
    identity = torch.rand(count, generator=generator) < 0.25
    theta[identity] = torch.tensor(IDENTITY).view(2, 3)
    return theta


def warp_edges(edges: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``edges`` (T, P, P) sampled through ``theta`` (T, 2, 3) (zeros outside)."""
    grid = F.affine_grid(theta, (edges.shape[0], 1) + tuple(edges.shape[-2:]), align_corners=False)
    return F.grid_sample(edges[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]


def pretrain_inverse_transform(patches: torch.Tensor, steps: int = 2000, batch_size: int = 128, lr: float = 1e-3,
                               hidden_dim: int = 512, seed: int = 0, held_out: float = 0.1,
                               log_every: int = 0, print_fn=print,
                               net: Optional[InverseTransformNet] = None) -> Tuple[InverseTransformNet, Dict]:
    """Train the network on edge patches (N, P, P) in [0, 1] (with edges in them): each step
    warps a batch by :func:`random_affine` and regresses theta from (patch, warped) by MSE.

    Returns the network (eval mode, frozen) and a report on the held-out patches: the mean
    parameter error of the network's theta and of always answering the identity.
    """
    generator = torch.Generator().manual_seed(seed)
    patches = patches.float()
    patches = patches[patches.flatten(1).amax(1) > 0]
    if patches.shape[0] < 10:
        raise ValueError(f"need at least 10 edge patches with edges in them, got {patches.shape[0]}")
    order = torch.randperm(patches.shape[0], generator=generator)
    num_held_out = max(1, int(held_out * patches.shape[0]))
    evaluation, training = patches[order[:num_held_out]], patches[order[num_held_out:]]
    torch.manual_seed(seed)
    net = net or InverseTransformNet(patches.shape[-1], hidden_dim)
    net.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for step in range(steps):
        batch = training[torch.randint(training.shape[0], (batch_size,), generator=generator)]
        theta = random_affine(batch_size, generator)
        loss = F.mse_loss(net(batch, warp_edges(batch, theta)), theta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if log_every and (step + 1) % log_every == 0:
            print_fn(f"step {step + 1}/{steps}: mse {loss.item():.5f}")
    net.eval().requires_grad_(False)
    theta = random_affine(evaluation.shape[0], torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        predicted = net(evaluation, warp_edges(evaluation, theta))
    identity = torch.tensor(IDENTITY).view(1, 2, 3)
    report = {
        "held_out_patches": int(evaluation.shape[0]),
        "theta_error": float((predicted - theta).flatten(1).norm(dim=1).mean()),
        "identity_error": float((identity - theta).flatten(1).norm(dim=1).mean()),
    }
    return net, report


def save_inverse_transform(net: InverseTransformNet, path: str, report: Optional[Dict] = None) -> None:
    """Write the network with its sizes (and a training report) to ``path``."""
    torch.save({"state_dict": net.state_dict(), "patch_size": net.patch_size,
                "hidden_dim": net.mlp[0].out_features, "report": report or {}}, path)


def load_inverse_transform(path: str) -> InverseTransformNet:
    """The frozen network saved by :func:`save_inverse_transform` (``tools/train_inverse_transform.py``)."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.SAZS.BOUNDARY.INVERSE_TRANSFORM_WEIGHTS: no file {path!r}; train the network "
                                f"with `python tools/train_inverse_transform.py --dataset <train split> --output "
                                f"{path}`, or set MODEL.SAZS.BOUNDARY.SHAPE_WEIGHT 0 to train without L_shape")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"{path!r} is not an inverse-transformation network saved by tools/train_inverse_transform.py")
    net = InverseTransformNet(saved["patch_size"], saved["hidden_dim"])
    net.load_state_dict(saved["state_dict"])
    return net.eval().requires_grad_(False)
