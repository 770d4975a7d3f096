"""Log-domain Sinkhorn for entropic optimal transport (OTSeg Sec. 3.1, Eqs. 3-4, Appendix A,
Algorithm 1; Cuturi 2013, with the log-domain stabilisation of Schmitzer 2019).

For a cost C (M, N) and marginals mu (M,), nu (N,), the plan T* = diag(e^a) exp(-C/eps) diag(e^b)
minimises <T, C> - eps H(T) subject to T 1 = mu, T^T 1 = nu. The potentials alternate

    a = log mu - logsumexp_j(-C_ij / eps + b_j),    b = log nu - logsumexp_i(-C_ij / eps + a_i),

starting from b = 0, for at most ``max_iter`` rounds; with ``tol`` the loop stops once the row
marginals (the columns are exact after each b update) are within ``tol`` in L1 for every problem
of the batch. The row sums of the current plan come for free from the next a update
(mu * exp(a - a_next)), so checking costs no extra pass over the kernel. Everything runs in
float32 (autocast off), so tiny eps and extreme costs neither overflow nor underflow into NaN;
the loop is plain autograd, so the plan is differentiable.
"""
import math
from typing import NamedTuple, Optional

import torch

__all__ = ["SinkhornResult", "log_sinkhorn"]


class SinkhornResult(NamedTuple):
    """``plan`` (..., M, N) float32; ``iterations`` run; ``marginal_error``: the largest L1 error
    of the row marginals over the batch after the last iteration."""

    plan: torch.Tensor
    iterations: int
    marginal_error: float


def log_sinkhorn(cost: torch.Tensor, epsilon: float, max_iter: int = 100, tol: Optional[float] = 1e-6,
                 log_mu: Optional[torch.Tensor] = None, log_nu: Optional[torch.Tensor] = None) -> SinkhornResult:
    """Entropic OT plans for a batch of costs (see the module docstring).

    Args:
        cost: (..., M, N) costs (e.g. 1 - S for a score map S of M pixels and N prompts).
        epsilon: entropic regularisation, > 0.
        max_iter: t_max, >= 1.
        tol: stop early once the row marginals are within this L1 error; None runs ``max_iter``
            (as does tracing for export: a trace cannot stop early on a value).
        log_mu, log_nu: log marginals (M,) and (N,), each summing to 1 in the exp domain;
            uniform (1/M, 1/N, Algorithm 1) by default.
    """
    if epsilon <= 0:
        raise ValueError(f"Sinkhorn epsilon must be > 0, got {epsilon}")
    if max_iter < 1:
        raise ValueError(f"Sinkhorn max_iter must be >= 1, got {max_iter}")
    if cost.dim() < 2:
        raise ValueError(f"cost must be (..., M, N), got shape {tuple(cost.shape)}")
    if torch.jit.is_tracing():  # also under ONNX export: a trace records one fixed number of rounds
        tol = None
    num_rows, num_cols = cost.shape[-2:]
    with torch.autocast(device_type=cost.device.type, enabled=False):
        log_kernel = -cost.float() / epsilon
        if log_mu is None:
            log_mu = torch.full((num_rows,), -math.log(num_rows), device=cost.device)
        if log_nu is None:
            log_nu = torch.full((num_cols,), -math.log(num_cols), device=cost.device)
        log_mu, log_nu = log_mu.float().to(cost.device), log_nu.float().to(cost.device)
        mu = log_mu.exp()
        a = log_mu - torch.logsumexp(log_kernel, dim=-1)  # the first update, from b = 0
        error = float("inf")
        for iteration in range(1, max_iter + 1):
            b = log_nu - torch.logsumexp(log_kernel + a.unsqueeze(-1), dim=-2)  # columns now exact
            next_a = log_mu - torch.logsumexp(log_kernel + b.unsqueeze(-2), dim=-1)
            if tol is not None or iteration == max_iter:
                # The row sums of the plan (a, b) are mu * exp(a - next_a): no extra pass needed.
                with torch.no_grad():
                    error = (mu * ((a - next_a).exp() - 1.0).abs()).sum(-1).max().item()
                if iteration == max_iter or error <= tol:
                    break
            a = next_a
        plan = (log_kernel + a.unsqueeze(-1) + b.unsqueeze(-2)).exp()
    return SinkhornResult(plan, iteration, error)
