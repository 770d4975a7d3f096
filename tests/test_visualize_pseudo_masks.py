"""tools/visualize_pseudo_masks.py: Split Matching's pseudo masks drawn and scored on the quick
start's smoke toy world, and on a folder of the user's images with a corrupt file."""
import dataclasses
import os
import re
import runpy
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from zsmask.data import ZeroShotSemSegDatasetMapper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIG = os.path.join(ROOT, "configs", "toy", "split_matching.yaml")
PANEL_H, PANEL_W = 24 + 3 * 128, 3 * 128  # 128 px toy scenes enlarged 3x under a 24 px title strip


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(os.path.join(ROOT, "tools", "visualize_pseudo_masks.py"))


@pytest.fixture(scope="module")
def smoke_world():
    """The quick start's smoke world, registered under a fresh name, and a toy CLIP pretrained
    for one step (the smoke recipe, shortened: the tool only needs real weights, not good ones).
    Returns ``(name, config overrides)``."""
    from zsmask.data.toy_world import register_toy_world
    from zsmask.toy import prepare_toy_world

    quickstart = runpy.run_path(os.path.join(ROOT, "tools", "quickstart.py"))
    name = f"pm{uuid.uuid4().hex[:8]}"
    register_toy_world(name, quickstart["SMOKE_WORLD"])
    recipe = dataclasses.replace(quickstart["SMOKE_CLIP"], steps=1, batch_size=32, pool_size=64, eval_crops_per_class=1)
    prepared = prepare_toy_world(quickstart["SMOKE_WORLD"], recipe, print_fn=lambda *_: None)
    opts = ["MODEL.CLIP.PRETRAINED", prepared["clip_weights"], "DATASETS.TRAIN", f"('{name}_train',)",
            "DATASETS.TEST", f"('{name}_test',)", "MODEL.DEVICE", "cpu"]
    return name, opts


def test_dataset_mode_draws_scores_and_matches_the_labeler(tool, smoke_world, tmp_path, capsys):
    name, opts = smoke_world
    out = tmp_path / "out"
    limit = 2
    assert tool["main"](["--config-file", CONFIG, "--dataset", f"{name}_train", "--limit", str(limit),
                         "--output", str(out)] + opts) == 0
    printed = capsys.readouterr().out

    records = DatasetCatalog.get(f"{name}_train")[:limit]
    stems = [os.path.splitext(os.path.basename(r["file_name"]))[0] for r in records]
    assert sorted(os.listdir(out)) == sorted(s + ".png" for s in stems)
    for stem in stems:  # [image | unannotated | pseudo masks], 4 px apart
        assert np.asarray(Image.open(out / f"{stem}.png")).shape == (PANEL_H, 3 * PANEL_W + 8, 3)

    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+): (\d+) pseudo masks", printed, re.M)}
    assert list(counts) == [r["file_name"] for r in records]
    assert len(re.findall(r"^  mask \d+ .*IoU (\d\.\d\d)$", printed, re.M)) == sum(counts.values())

    # The same views through the labeler itself (cache off, as the tool builds it).
    cfg = tool["tool_config"](CONFIG, opts)
    clip, labeler = tool["build_parts"](cfg)
    assert labeler.cache is None
    truth = tool["ground_truth_source"](f"{name}_train")
    assert len(truth.class_names) == 30 and sum(truth.unseen) == 6  # the test variant's vocabulary
    divisibility = cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY
    no_flip = cfg.clone()
    no_flip.defrost()
    no_flip.INPUT.RANDOM_FLIP = "none"
    mapper = ZeroShotSemSegDatasetMapper(no_flip, is_train=True)
    for record in records:
        view = tool["load_dataset_view"](cfg, record, f"{name}_train", truth)
        assert view.image.shape == (128, 128, 3) and view.ground_truth.shape == (128, 128)
        trained = mapper(dict(record))  # what the training loader gives the model (flip aside)
        np.testing.assert_array_equal(view.image, trained["image"].permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(view.unannotated, trained["unannotated"].numpy())
        # unannotated = exactly the ground-truth pixels of unseen classes (the train label map)
        np.testing.assert_array_equal(view.unannotated, np.isin(view.ground_truth, np.flatnonzero(truth.unseen)))
        images, unannotated = tool["padded_batch"](view, divisibility, clip.device)
        with torch.no_grad():
            direct = labeler(clip, images, unannotated)[0]
        assert direct.masks.shape[0] == counts[record["file_name"]]
        pseudo = tool["compute_pseudo_masks"](clip, labeler, view, divisibility)
        torch.testing.assert_close(pseudo.embeddings, direct.embeddings)
        masks = pseudo.masks.numpy()
        assert not (masks & ~view.unannotated[None]).any()  # never on annotated pixels
        assert not (masks.sum(axis=0) > 1).any()  # disjoint

    mean = re.search(r"^mean best IoU: (\S+) over (\d+) pseudo masks", printed, re.M)
    assert mean is not None, printed
    assert 0.0 <= float(mean.group(1)) <= 1.0 and int(mean.group(2)) == sum(counts.values()) > 0


def test_best_overlaps_picks_the_class_with_the_highest_iou(tool):
    truth = np.array([[0, 0, 1, 1],
                      [0, 0, 1, 1],
                      [255, 255, 2, 2]])
    masks = np.zeros((3, 3, 4), dtype=bool)
    masks[0, :2, :3] = True  # 4 of class 0's 4 pixels, 2 of class 1's: IoU 4/6 vs 2/8
    masks[1, 2, :2] = True  # only ignore pixels
    masks[2, 1:, 2:] = True  # class 1: 2/6, class 2: 2/4
    classes, ious = tool["best_overlaps"](masks, truth, 255)
    assert classes.tolist() == [0, -1, 2]
    np.testing.assert_allclose(ious, [4 / 6, 0.0, 2 / 4])


def test_input_mode_skips_a_corrupt_file_and_fails(tool, smoke_world, tmp_path, capsys):
    _, opts = smoke_world
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (64, 96, 3), dtype=np.uint8)).save(folder / "colour.png")
    Image.fromarray(rng.randint(0, 255, (128, 128), dtype=np.uint8), mode="L").save(folder / "gray.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really an image" * 10)
    out = tmp_path / "out"
    assert tool["main"](["--config-file", CONFIG, "--input", str(folder), "--output", str(out),
                         "--vocabulary", "red checkered object, blue plain object,green wavy background"] + opts) == 1
    captured = capsys.readouterr()
    assert sorted(os.listdir(out)) == ["colour.png", "gray.png"]
    # 64 x 96 is resized to 85 x 128 (the long side capped at 128), then enlarged 3x; two panels
    assert np.asarray(Image.open(out / "colour.png")).shape == (24 + 255, 2 * 384 + 4, 3)
    assert np.asarray(Image.open(out / "gray.png")).shape == (PANEL_H, 2 * PANEL_W + 4, 3)
    assert "broken.png" in captured.err and "gray.png" not in captured.err
    lines = [line for line in captured.out.splitlines() if " pseudo masks" in line]
    assert [line.split(":")[0] for line in lines] == [str(folder / "colour.png"), str(folder / "gray.png")]
    for line in lines:  # all pixels are unannotated: the labeler finds regions, named from the vocabulary
        count = int(line.split(": ")[1].split()[0])
        assert count >= 1 and line.count(" object ") + line.count(" background ") == count
    assert "mean best IoU" not in captured.out  # no ground truth in this mode


def test_a_config_without_pseudo_labeler_is_refused(tool, smoke_world, tmp_path, capsys):
    _, opts = smoke_world
    code = tool["main"](["--config-file", os.path.join(ROOT, "configs", "toy", "hungarian.yaml"),
                         "--input", str(tmp_path), "--output", str(tmp_path / "out")] + opts)
    assert code == 2
    err = capsys.readouterr().err
    assert "MODEL.ZSMASK.PSEUDO_LABELER" in err and "split_matching.yaml" in err


def test_region_embedding_option_names_masks_by_cls_attention(tool, smoke_world, tmp_path, capsys):
    """``--region-embedding cls_attention``: the same pseudo masks as the config's ``cls``, their
    C_u from [CLS] copies of one forward (what the labeler gives with that setting)."""
    name, opts = smoke_world
    printed = {}
    for option in ("cls", "cls_attention"):
        assert tool["main"](["--config-file", CONFIG, "--dataset", f"{name}_train", "--limit", "2",
                             "--output", str(tmp_path / option), "--region-embedding", option] + opts) == 0
        printed[option] = capsys.readouterr().out
    areas = {k: re.findall(r"^  mask \d+ \((\S+) of the image\)", v, re.M) for k, v in printed.items()}
    assert areas["cls"] == areas["cls_attention"] and areas["cls"]  # the masks do not depend on C_u
    scores = {k: re.findall(r"^  mask \d+ .*nearest .* (\d\.\d\d);", v, re.M) for k, v in printed.items()}
    assert scores["cls"] != scores["cls_attention"]  # their C_u do
    cfg = tool["tool_config"](CONFIG, opts + ["MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING", "cls_attention"])
    clip, labeler = tool["build_parts"](cfg)
    truth = tool["ground_truth_source"](f"{name}_train")
    record = DatasetCatalog.get(f"{name}_train")[1]  # the first scene has no unseen region
    view = tool["load_dataset_view"](cfg, record, f"{name}_train", truth)
    pseudo = tool["compute_pseudo_masks"](clip, labeler, view, cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY)
    assert pseudo.masks.shape[0] > 0
    images, _ = tool["padded_batch"](view, cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY, clip.device)
    with torch.no_grad():
        layers = cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_ATTENTION_LAYERS
        block_inputs = clip.encode_image_dense(images, region_layers=layers)["block_inputs"]
        height, width = images.shape[-2:]
        padded = torch.zeros((pseudo.masks.shape[0], height, width), dtype=torch.bool)
        padded[:, :pseudo.masks.shape[1], :pseudo.masks.shape[2]] = pseudo.masks
        expected = clip.encode_mask_regions(block_inputs, [padded])[0]
    torch.testing.assert_close(pseudo.embeddings, expected)
