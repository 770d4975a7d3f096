"""Paired differences over seeds: the interval equals a hand computation."""
import math

import pytest

from zsmask.evaluation import paired_difference, seeds_for_half_width


def test_paired_difference_equals_a_hand_computation():
    x = {0: 10.0, 1: 12.0, 2: 11.0}
    y = {0: 9.0, 1: 10.0, 2: 11.0, 3: 5.0}  # seed 3 has no partner and is left out
    diff = paired_difference(x, y)
    # d = (1, 2, 0): mean 1, sd 1 (ddof 1), n 3; t_{0.975, 2} = 4.302652729911275
    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert diff.n == 3 and diff.confidence == 0.95
    assert diff.mean == pytest.approx(1.0, abs=1e-12)
    assert (diff.low, diff.high) == (pytest.approx(1 - half, abs=1e-9), pytest.approx(1 + half, abs=1e-9))
    assert diff.half_width == pytest.approx(half, abs=1e-9)
    assert diff.format() == "+1.00 [-1.48, +3.48]"
    # 90%: t_{0.95, 2} = 2.919985580355516
    assert paired_difference(x, y, 0.90).half_width == pytest.approx(2.919985580355516 / math.sqrt(3), abs=1e-9)


def test_paired_difference_is_antisymmetric_and_zero_against_itself():
    x, y = {0: 3.0, 1: 5.0, 2: 4.5}, {0: 2.0, 1: 5.5, 2: 4.0}
    a, b = paired_difference(x, y), paired_difference(y, x)
    assert a.mean == pytest.approx(-b.mean) and a.low == pytest.approx(-b.high)
    same = paired_difference(x, x)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)


def test_paired_difference_edge_cases():
    one = paired_difference({0: 2.0}, {0: 1.5})
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low) and one.format() == "+0.50 [n=1]"
    with pytest.raises(ValueError, match="no seed in common between \\[0\\] and \\[1\\]"):
        paired_difference({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match="confidence must be in"):
        paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}, confidence=95)


def test_seeds_for_half_width_equals_a_hand_computation():
    # sd 3, target 1.5: n = 18 gives t_{0.975, 17} * 3 / sqrt(18) = 2.109816 * 0.707107 = 1.49186 <= 1.5,
    # n = 17 gives t_{0.975, 16} * 3 / sqrt(17) = 2.119905 * 0.727607 = 1.54246 > 1.5
    assert seeds_for_half_width(3.0, 1.5) == 18
    assert seeds_for_half_width(0.0, 1.5) == 2
    assert seeds_for_half_width(100.0, 1.5, max_seeds=50) == 51
    with pytest.raises(ValueError, match="target > 0"):
        seeds_for_half_width(1.0, 0.0)
