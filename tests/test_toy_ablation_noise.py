"""The ablation tool's noise table on synthetic runs equals a hand computation."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runs():
    def run(value, se=1.0):
        return {"hIoU": value, "eval_se": {"hIoU": se}}
    return {"base": {0: run(10.0), 1: run(12.0), 2: run(14.0)},
            "other": {0: run(11.0, 0.0), 1: run(12.0, 0.0), 2: run(16.0, 0.0)}}


def test_noise_table_equals_a_hand_computation():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import toy_ablation

    lines = toy_ablation.noise_table(_runs(), "base").splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    # base: values 10, 12, 14 -> sd 2; eval SE 1 -> seed sd sqrt(4 - 1) = 1.73; no pair with itself
    assert cells[0] == ["base", "3", "2.00", "1.00", "1.73", "-", "-", "-", "-"]
    # other: 11, 12, 16 -> sd 2.65; eval SE 0; d = (1, 0, 2) -> sd 1; corr 10 / sqrt(14 * 8) = 0.945;
    # half-width t_{0.975, 2} / sqrt(3) = 2.48; seeds for 1.5 at sd 1: n = 5 (t_{0.975, 4} / sqrt(5) = 1.24,
    # n = 4 gives 3.18 / 2 = 1.59)
    assert cells[1] == ["other", "3", "2.65", "0.00", "2.65", "+0.94", "1.00", "2.48", "5"]
