"""The ablation tool's noise table on synthetic runs equals a hand computation."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def _runs(per_image=(None, None)):
    def run(value, se, path):
        return {"hIoU": value, "eval_se": {"hIoU": se}, "per_image_confusion": path}
    return {"base": {0: run(10.0, 1.0, per_image[0]), 1: run(12.0, 1.0, per_image[0]), 2: run(14.0, 1.0, per_image[0])},
            "other": {0: run(11.0, 0.0, per_image[1]), 1: run(12.0, 0.0, per_image[1]), 2: run(16.0, 0.0, per_image[1])}}


def _cells(table):
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_noise_table_equals_a_hand_computation():
    import toy_ablation

    cells = _cells(toy_ablation.noise_table(_runs(), "base"))
    # base: values 10, 12, 14 -> sd 2; eval SE 1; no pair with itself
    assert cells[0] == ["base", "3", "2.00", "1.00"] + ["-"] * 6
    # other: 11, 12, 16 -> sd 2.65; d = (1, 0, 2) -> sd 1; corr 10 / sqrt(14 * 8) = 0.945;
    # half-width t_{0.975, 2} / sqrt(3) = 2.48; seeds for 1.5 at sd 1: n = 5 (t_{0.975, 4} / sqrt(5) = 1.24,
    # n = 4 gives 3.18 / 2 = 1.59); no per-image matrices -> no paired eval SE
    assert cells[1] == ["other", "3", "2.65", "0.00", "+0.94", "1.00", "2.48", "5", "-", "-"]


def test_noise_table_splits_the_paired_difference_with_per_image_matrices(tmp_path):
    import toy_ablation

    names = np.array(["a.png", "b.png", "c.png"])
    paths = []
    for name, counts in (("base", [0, 3, 10]), ("other", [1, 3, 10])):  # per-image differences (1, 0, 0)
        path = tmp_path / f"{name}.npz"
        np.savez_compressed(path, confusion=np.array(counts, np.int32).reshape(3, 1, 1), file_names=names)
        paths.append(str(path))
    metric = lambda c: {"hIoU": float(c[0, 0])}  # noqa: E731  (the summed count: linear)
    cells = _cells(toy_ablation.noise_table(_runs(paths), "base", metric_fn=metric))
    # the difference sums 3 draws of {1, 0, 0}: std sqrt(2/3) = 0.82; training sd sqrt(1 - 2/3) = 0.58
    assert float(cells[1][8]) == pytest.approx(np.sqrt(2 / 3), rel=0.15)
    assert float(cells[1][9]) == pytest.approx(np.sqrt(1 - float(cells[1][8]) ** 2), abs=0.01)

    np.savez_compressed(paths[1], confusion=np.ones((3, 1, 1), np.int32), file_names=names[::-1])
    with pytest.raises(ValueError, match="different images"):
        toy_ablation.noise_table(_runs(paths), "base", metric_fn=metric)


def test_diagnostics_table_pairs_the_unseen_pixels_lost_to_seen_or_no_class():
    import toy_ablation

    def run(as_seen, no_class, boundary):
        keys = dict.fromkeys(k for k, _ in toy_ablation.DIAGNOSTICS)
        keys.update(unseen_as_seen=as_seen, unseen_as_no_class=no_class, boundary_F=boundary)
        return {"diagnostics": keys}
    runs = {"control": {0: run(10.0, 50.0, 80.0), 1: run(12.0, 40.0, 82.0), 2: run(8.0, 45.0, 81.0)},
            "sm": {0: run(4.0, 1.0, 90.0), 1: run(3.0, 2.0, 91.0), 2: run(5.0, 0.0, 89.0)}}
    cells = _cells(toy_ablation.diagnostics_table(runs, "control"))
    # lost shares: control 60, 52, 53; sm 5, 5, 5 -> d = (-55, -47, -48): mean -50, sd 4.36,
    # half-width t_{0.975, 2} 4.303 * 4.36 / sqrt(3) = 10.83
    assert cells[1][-2] == "-50.00 [-60.83, -39.17]"
    assert cells[1][-1] == "+9.00 [+6.52, +11.48]"  # boundary d = (10, 9, 8): sd 1 -> 2.48
    assert cells[0][-2] == "+0.00 [+0.00, +0.00]"


def test_run_key_ignores_a_newly_added_key_only_at_its_neutral_value():
    import hashlib

    from zsmask.engine import build_config
    from toy_ablation import NEUTRAL_ADDITIONS, legacy_run_key, run_key

    cfg = build_config(os.path.join(ROOT, "configs", "toy", "alignzeg.yaml"), [])
    assert cfg.MODEL.ALIGNZEG.PBC.NEGATIVES == NEUTRAL_ADDITIONS["MODEL.ALIGNZEG.PBC.NEGATIVES"]
    # the config as it was before the keys existed hashes to the same key
    before = cfg.clone()
    before.defrost()
    for dotted in NEUTRAL_ADDITIONS:
        *parents, leaf = dotted.split(".")
        node = before
        for name in parents:
            node = node[name]
        del node[leaf]
    del before.TEST["SLIDING_WINDOW"]  # a whole node added later: gone from the hash when all of it is neutral
    assert legacy_run_key(cfg) == hashlib.sha256(before.dump().encode()).hexdigest()[:16]
    before.OUTPUT_DIR = ""
    assert run_key(cfg, pipeline=1) == hashlib.sha256(before.dump().encode()).hexdigest()[:16]
    assert run_key(cfg) != run_key(cfg, pipeline=1)  # another training pipeline is another run
    assert run_key(cfg, "trained") != run_key(cfg)
    # any other value is a different run
    changed = build_config(os.path.join(ROOT, "configs", "toy", "alignzeg.yaml"),
                           ["MODEL.ALIGNZEG.PBC.NEGATIVES", "unannotated"])
    assert run_key(changed) != run_key(cfg)
    windows = build_config(os.path.join(ROOT, "configs", "toy", "alignzeg.yaml"), ["TEST.SLIDING_WINDOW.SIZE", "64"])
    assert run_key(windows) != run_key(cfg)
    assert cfg.MODEL.ALIGNZEG.PBC.NEGATIVES == "top_k"  # the key leaves the config it hashes unchanged


def test_run_key_leaves_out_the_output_folder_and_an_evaluations_weights_path():
    from zsmask.engine import build_config
    from toy_ablation import legacy_run_key, run_key

    config = os.path.join(ROOT, "configs", "toy", "hungarian.yaml")
    a = build_config(config, ["OUTPUT_DIR", "out/a", "MODEL.WEIGHTS", "out/a/model_final.pth"])
    b = build_config(config, ["OUTPUT_DIR", "out/b", "MODEL.WEIGHTS", "out/b/model_final.pth"])
    assert run_key(a, "t") == run_key(b, "t") and legacy_run_key(a, "t") != legacy_run_key(b, "t")
    assert run_key(a, "t") != run_key(b, "u")  # the trained run stands for the weights
    # a training's initial weights are part of the run
    assert run_key(a) != run_key(b)
    assert run_key(build_config(config, ["OUTPUT_DIR", "x"])) == run_key(build_config(config, ["OUTPUT_DIR", "y"]))


def test_run_store_reads_a_legacy_key_back_and_rewrites_it(tmp_path):
    import json

    from toy_ablation import RunStore

    store = RunStore(str(tmp_path), pipeline=1)
    os.makedirs(tmp_path / "row")
    (tmp_path / "row" / "seed0.json").write_text(json.dumps({"key": "old", "result": {"hIoU": 40.0}}))
    assert store.get("row", 0, "new") is None
    assert store.get("row", 0, "new", legacy="other") is None
    assert store.get("row", 0, "new", legacy="old")["hIoU"] == 40.0
    assert json.loads((tmp_path / "row" / "seed0.json").read_text())["key"] == "new"
    assert store.get("row", 0, "new")["hIoU"] == 40.0


def test_run_store_keeps_each_training_pipeline_apart(tmp_path):
    """A run of a later pipeline is stored beside, never over, the record of an earlier one."""
    import json

    from toy_ablation import RunStore

    first, second = RunStore(str(tmp_path), pipeline=1), RunStore(str(tmp_path), pipeline=2)
    first.put("row", 0, "k1", {"hIoU": 40.0})
    second.put("row", 0, "k2", {"hIoU": 45.0})
    assert json.loads((tmp_path / "row" / "seed0.json").read_text())["result"]["hIoU"] == 40.0
    assert json.loads((tmp_path / "row" / "pipeline2" / "seed0.json").read_text())["key"] == "k2"
    assert first.get("row", 0, "k1")["hIoU"] == 40.0 and second.get("row", 0, "k2")["hIoU"] == 45.0
    assert second.get("row", 0, "k1") is None and first.get("row", 0, "k2") is None
