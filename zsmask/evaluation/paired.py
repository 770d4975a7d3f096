"""Paired comparison of two configs over the same seeds: the mean difference and its interval.

Two configs trained with the same seeds share the seed's data order and initial draw, so the
per-seed difference d_s = x_s - y_s removes what both runs of a seed have in common. The
interval is Student's t over the n differences:

    mean(d) +- t_{(1 + confidence) / 2, n - 1} * sd(d) / sqrt(n),   sd with ddof = 1.

Only seeds present in both are paired; fewer than two give no interval.
:func:`seeds_for_half_width` turns a measured sd(d) into the number of seeds a target
half-width needs (for planning a protocol).
"""
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import stats

__all__ = ["PairedDifference", "paired_difference", "seeds_for_half_width"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean of x - y over ``n`` shared seeds, with the ``confidence`` interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, digits: int = 2) -> str:
        """``+1.23 [-0.45, +2.91]`` (``+1.23 [n=1]`` without an interval)."""
        if math.isnan(self.low):
            return f"{self.mean:+.{digits}f} [n={self.n}]"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_difference(x: Mapping, y: Mapping, confidence: float = 0.95) -> PairedDifference:
    """Paired difference of ``x`` minus ``y``, both ``{seed: value}``, over their shared seeds."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seeds = sorted(set(x) & set(y))
    if not seeds:
        raise ValueError(f"no seed in common between {sorted(x)} and {sorted(y)}")
    d = np.array([float(x[s]) - float(y[s]) for s in seeds])
    mean = float(d.mean())
    if len(d) < 2:
        return PairedDifference(mean, math.nan, math.nan, len(d), confidence)
    half = _half_width(float(d.std(ddof=1)), len(d), confidence)
    return PairedDifference(mean, mean - half, mean + half, len(d), confidence)


def _half_width(sd: float, n: int, confidence: float) -> float:
    """t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)."""
    return float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n))


def seeds_for_half_width(sd: float, target: float, confidence: float = 0.95, max_seeds: int = 1000) -> int:
    """Fewest seeds n >= 2 whose interval half-width t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)
    is at most ``target``, for per-seed differences of standard deviation ``sd``; ``max_seeds + 1``
    when even ``max_seeds`` is not enough."""
    if not sd >= 0 or not target > 0:
        raise ValueError(f"need sd >= 0 and target > 0, got sd={sd}, target={target}")
    for n in range(2, max_seeds + 1):
        if _half_width(sd, n, confidence) <= target:
            return n
    return max_seeds + 1
