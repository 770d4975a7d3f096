"""The open-vocabulary suite: the cross-dataset toy set, one run over several test sets whose
table equals the per-dataset evaluations, sliding-window inference, published numbers."""
import json
import os
import runpy

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from zsmask.data.toy_world import TOY_CLASS_NAMES, TOY_COARSE_CLASS_NAMES, coarse_label_lut
from zsmask.engine.sliding_window import SlidingWindowInference, window_starts
from zsmask.evaluation.published import PUBLISHED, published_for

from conftest import train_on_smoke_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_coarse_toy_set_shares_six_names_and_relabels_objects_by_colour():
    assert len(TOY_COARSE_CLASS_NAMES) == 12 and len(set(TOY_COARSE_CLASS_NAMES) & set(TOY_CLASS_NAMES)) == 6
    lut = coarse_label_lut()
    for toy_id, name in enumerate(TOY_CLASS_NAMES):
        coarse = TOY_COARSE_CLASS_NAMES[lut[toy_id]]
        assert coarse == name if name.endswith("background") else coarse == name.split()[0] + " object"
    assert lut[255] == 255
    records = DatasetCatalog.get("toy_world_smoke_coarse_test")
    toy = DatasetCatalog.get("toy_world_smoke_test")
    assert [r["file_name"] for r in records] == [r["file_name"] for r in toy]
    for coarse_rec, toy_rec in zip(records, toy):
        assert np.array_equal(np.asarray(Image.open(coarse_rec["sem_seg_file_name"])),
                              lut[np.asarray(Image.open(toy_rec["sem_seg_file_name"]))])
    meta = MetadataCatalog.get("toy_world_smoke_coarse_test")
    assert meta.stuff_classes == list(TOY_COARSE_CLASS_NAMES) and meta.unseen_classes == []


def test_window_starts_cover_the_axis_and_end_on_its_edge():
    assert window_starts(10, 16, 8) == [0]
    assert window_starts(40, 16, 8) == [0, 8, 16, 24]
    assert window_starts(41, 16, 12) == [0, 12, 24, 25]
    with pytest.raises(ValueError, match="1 <= STRIDE <= SIZE"):
        SlidingWindowInference(torch.nn.Identity(), 16, 17)


class PixelwiseScores(torch.nn.Module):
    """A per-pixel model: class scores are a fixed function of each pixel's colour, returned at
    the input's height x width (as the meta-architecture's inference does)."""

    def forward(self, batched_inputs):
        out = []
        for x in batched_inputs:
            image = x["image"].float()
            scores = torch.stack([image[0] - image[1], image[2] * 0.5, image.mean(0)])
            if scores.shape[-2:] != (x["height"], x["width"]):
                scores = torch.nn.functional.interpolate(scores[None], size=(x["height"], x["width"]),
                                                         mode="bilinear", align_corners=False)[0]
            out.append({"sem_seg": scores})
        return out


def test_sliding_windows_of_a_pixelwise_model_equal_the_whole_image():
    torch.manual_seed(0)
    image = torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8)
    record = {"image": image, "height": 50, "width": 70}
    whole = PixelwiseScores()([record])[0]["sem_seg"]
    windows = SlidingWindowInference(PixelwiseScores(), 32, 20)
    assert len(windows.windows(50, 70)) == 2 * 3
    assert torch.allclose(windows([record])[0]["sem_seg"], whole, atol=1e-5)
    bigger = windows([dict(record, height=100, width=140)])[0]["sem_seg"]  # resized to the output size
    assert bigger.shape == (3, 100, 140)


def test_sliding_windows_and_proposal_outputs_are_refused_together(tmp_path):
    from zsmask.engine import build_config

    with pytest.raises(ValueError, match="PROPOSAL_DIAGNOSTICS cannot be on together"):
        build_config(os.path.join(ROOT, "configs", "toy", "alignzeg.yaml"),
                     ["TEST.SLIDING_WINDOW.ENABLED", "True", "TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS", "True"])
    with pytest.raises(ValueError, match="1 <= STRIDE <= SIZE"):
        build_config(os.path.join(ROOT, "configs", "toy", "hungarian.yaml"),
                     ["TEST.SLIDING_WINDOW.ENABLED", "True", "TEST.SLIDING_WINDOW.STRIDE", "999"])
    with pytest.raises(ValueError, match="absent-class convention 'v0.6'"):
        build_config(os.path.join(ROOT, "configs", "toy", "hungarian.yaml"), ["TEST.ZERO_SHOT.ABSENT_CLASSES", "v0.6"])


def test_published_numbers_name_their_convention_and_source():
    assert {p.absent_classes for p in PUBLISHED} == {"exclude", "count_predicted"}
    assert all(p.source and p.miou for p in PUBLISHED)
    assert [p.method for p in published_for("ViT-B/16")] == ["CAT-Seg (B)", "SAN (B)", "MAFT (B)",
                                                            "ov-seg (R-101c proposals)"]
    assert published_for("zsmask-toy-clip") == []


@pytest.mark.slow
def test_suite_tool_evaluates_two_sets_in_one_run_as_each_alone(tmp_path, capsys):
    """A toy model trained for a few steps on the smoke world, evaluated by tools/evaluate.py on
    its GZS3 test set and on the cross-dataset coarse set in one run: every number equals the
    evaluation of that set alone (train_net --eval-only), and the table prints them."""
    train_on_smoke_world(tmp_path / "train", "hungarian.yaml", "toy_world_smoke", "SOLVER.MAX_ITER", "3")
    config, weights = str(tmp_path / "train" / "config.yaml"), str(tmp_path / "train" / "model_final.pth")
    sets = ["toy_world_smoke_test", "toy_world_smoke_coarse_test"]
    evaluate = runpy.run_path(os.path.join(ROOT, "tools", "evaluate.py"))["main"]
    assert evaluate(["--config-file", config, "--weights", weights, "--device", "cpu", "--datasets", *sets,
                     "--output", str(tmp_path / "suite")]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "suite" / "open_vocabulary.json").read_text())
    assert saved["absent_classes"] == "exclude" and list(saved["results"]) == sets
    table = (tmp_path / "suite" / "open_vocabulary.md").read_text()
    assert table in printed and "No published numbers with CLIP" in table

    train_net = runpy.run_path(os.path.join(ROOT, "train_net.py"))
    for name in sets:
        alone = train_net["cli"](["--config-file", config, "--eval-only", "MODEL.WEIGHTS", weights, "MODEL.DEVICE",
                                  "cpu", "DATASETS.TEST", f"('{name}',)", "OUTPUT_DIR", str(tmp_path / name)])
        alone = alone.get(name, alone)["sem_seg"]
        for key, value in alone.items():
            assert saved["results"][name][key] == (None if np.isnan(value) else value), (name, key)
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"{alone['mIoU']:.2f}" in row
    assert "hIoU" in saved["results"]["toy_world_smoke_test"]
    assert "hIoU" not in saved["results"]["toy_world_smoke_coarse_test"]  # no seen / unseen split
    coarse_row = next(line for line in table.splitlines() if line.startswith("| toy_world_smoke_coarse_test |"))
    assert coarse_row.endswith("| - | - | - |") and "| 12 |" in coarse_row

    # the other convention, and sliding windows, through the same tool
    assert evaluate(["--config-file", config, "--weights", weights, "--device", "cpu", "--datasets", sets[1],
                     "--output", str(tmp_path / "v06"), "--absent-classes", "count_predicted",
                     "--sliding-window", "--window-size", "48", "--window-stride", "32"]) == 0
    other = json.loads((tmp_path / "v06" / "open_vocabulary.json").read_text())
    assert other["absent_classes"] == "count_predicted" and other["sliding_window"]["ENABLED"] is True
    assert 0 <= other["results"][sets[1]]["mIoU"] <= 100
    # one window over the whole image is the plain evaluation, number for number
    assert evaluate(["--config-file", config, "--weights", weights, "--device", "cpu", "--datasets", sets[1],
                     "--output", str(tmp_path / "one_window"), "--sliding-window", "--window-size", "4096",
                     "--window-stride", "4096"]) == 0
    one = json.loads((tmp_path / "one_window" / "open_vocabulary.json").read_text())["results"][sets[1]]
    assert one["mIoU"] == pytest.approx(saved["results"][sets[1]]["mIoU"], abs=1e-6)
    assert one["pAcc"] == pytest.approx(saved["results"][sets[1]]["pAcc"], abs=1e-6)

    capsys.readouterr()
    assert evaluate(["--config-file", config, "--datasets", "ade20k_9999_test"]) == 2
    err = capsys.readouterr().err
    assert "not registered" in err and "ade20k_847_test" in err and "toy_world_smoke_coarse_test" in err
