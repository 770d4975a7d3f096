"""The toy world: generator, captions, cache, registration, the toy CLIP, and the quick start."""
import json
import logging
import os
import shutil
import runpy
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from zsmask.data import ZeroShotSemSegDatasetMapper
from zsmask.data.toy_world import (
    COLOURS,
    TOY_CLASS_NAMES,
    TOY_CLASSES,
    TOY_UNSEEN,
    ToyWorldParams,
    crop_caption,
    draw_crop,
    draw_scene,
    generate_toy_world,
    register_toy_world,
    scene_caption,
    toy_world_root,
)
from zsmask.modeling.clip import load_clip, register_pretrained_source
from zsmask.modeling.clip.toy_clip import (
    TOY_CLIP_NAME,
    ToyClipRecipe,
    crop_zero_shot_accuracy,
    pretrain_toy_clip,
    toy_clip_report,
    toy_clip_weights,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SMALL = ToyWorldParams(num_train=6, num_val=3, size=64)
# The default toy CLIP's top-1 on single-class crops: 98.8% when it was pretrained on crops alone,
# 83.8% since the same budget also teaches region views (masked images and crops, dense features).
CROP_TOP1_BAR = 80.0
_CHROMA = {name: np.asarray(rgb, float) / sum(rgb) for name, rgb in COLOURS.items()}


def _nearest_colour(pixels: np.ndarray) -> str:
    """Colour name whose chromaticity (rgb / sum) is nearest to the pixels' mean chromaticity."""
    mean = pixels.reshape(-1, 3).astype(float).mean(axis=0)
    chroma = mean / mean.sum()
    return min(_CHROMA, key=lambda n: np.abs(_CHROMA[n] - chroma).sum())


# ------------------------------------------------------------------------------ classes
def test_classes_colour_x_pattern_with_a_compositional_split():
    things = [c for c in TOY_CLASSES if c.is_thing]
    stuff = [c for c in TOY_CLASSES if not c.is_thing]
    assert len(things) >= 24 and len(stuff) >= 2 and len(set(TOY_CLASS_NAMES)) == len(TOY_CLASSES)
    assert [c.id for c in TOY_CLASSES] == list(range(len(TOY_CLASSES)))
    by_name = {c.name: c for c in TOY_CLASSES}
    seen = [c for c in TOY_CLASSES if c.name not in TOY_UNSEEN]
    assert any(not by_name[n].is_thing for n in TOY_UNSEEN)  # at least one unseen stuff class
    for name in TOY_UNSEEN:  # every unseen class is a new combination of seen attributes
        c = by_name[name]
        assert any(s.colour == c.colour and s.is_thing == c.is_thing for s in seen)
        assert any(s.pattern == c.pattern and s.is_thing == c.is_thing for s in seen)
        assert f"{c.colour} {c.pattern}" in name


# ------------------------------------------------------------------------------ drawing
def test_scenes_are_deterministic_and_labels_match_the_drawn_content():
    first = [draw_scene(np.random.RandomState(7)) for _ in range(2)]
    assert np.array_equal(first[0][0], first[1][0]) and np.array_equal(first[0][1], first[1][1])
    rng = np.random.RandomState(0)
    checked = 0
    for _ in range(12):
        image, label, objects = draw_scene(rng)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and label.shape == (128, 128)
        present = set(np.unique(label).tolist())
        assert present <= set(range(len(TOY_CLASSES)))
        assert 1 <= len(objects) <= 4
        for class_id, visible in objects:  # reported visible areas are the label's areas
            assert TOY_CLASSES[class_id].is_thing and visible == int((label == class_id).sum())
        assert any(not TOY_CLASSES[i].is_thing for i in present)  # a background is always there
        for class_id in present:  # each labelled region shows its class's colour
            region = label == class_id
            if region.sum() >= 60:
                assert _nearest_colour(image[region]) == TOY_CLASSES[class_id].colour, TOY_CLASSES[class_id].name
                checked += 1
    assert checked >= 30


def test_patterns_are_visible_in_the_pixels():
    """Plain objects are uniform; striped / checkered / dotted ones alternate light and dark."""
    rng = np.random.RandomState(1)
    spread = {}
    for cls in TOY_CLASSES[:4]:  # red plain, striped, checkered, dotted
        crop = draw_crop(rng, cls, 64).astype(float)
        centre = crop[24:40, 24:40].sum(axis=2)
        spread[cls.pattern] = centre.std()
    assert spread["plain"] < 40 and min(spread[p] for p in ("striped", "checkered", "dotted")) > 3 * spread["plain"]


def test_crops_and_captions_name_the_drawn_class():
    rng = np.random.RandomState(3)
    for cls in TOY_CLASSES:
        crop = draw_crop(rng, cls, 64)
        centre = crop[26:38, 26:38]
        if cls.pattern == "plain" or not cls.is_thing:
            assert _nearest_colour(centre) == cls.colour, cls.name
        caption = crop_caption(rng, cls.id)
        assert cls.name in caption
        assert [n for n in TOY_CLASS_NAMES if n in caption] == [cls.name]
    assert scene_caption([3, 24, 5]) == "a red dotted object and an orange striped object on a green wavy background"


# ------------------------------------------------------------------------------ generated world
def test_generated_world_is_deterministic_cached_and_captioned(tmp_path):
    a = generate_toy_world(SMALL, root=str(tmp_path / "a"))
    b = generate_toy_world(SMALL, root=str(tmp_path / "b"))
    assert os.path.basename(a) == os.path.basename(b) == f"toy_world-{SMALL.key()}"
    assert sorted(os.listdir(os.path.join(a, "train", "labels"))) == [f"{i:05d}.png" for i in range(6)]
    for split, n in (("train", 6), ("val", 3)):
        for i in range(n):
            la = np.asarray(Image.open(os.path.join(a, split, "labels", f"{i:05d}.png")))
            lb = np.asarray(Image.open(os.path.join(b, split, "labels", f"{i:05d}.png")))
            assert la.shape == (64, 64) and np.array_equal(la, lb)
    assert ToyWorldParams(seed=1).key() != ToyWorldParams().key()
    with open(os.path.join(a, "manifest.json")) as f:
        manifest = json.load(f)
    assert len(manifest["files"]) == 18
    for key, caption in manifest["captions"].items():  # the caption names exactly the classes drawn
        split, stem = key.split("/")
        label = np.asarray(Image.open(os.path.join(a, split, "labels", stem + ".png")))
        named = {i for i, n in enumerate(TOY_CLASS_NAMES) if f"a {n}" in caption or f"an {n}" in caption}
        assert named == set(np.unique(label).tolist()), (key, caption)
    mtime = os.path.getmtime(os.path.join(a, "manifest.json"))
    assert generate_toy_world(SMALL, root=str(tmp_path / "a")) == a
    assert os.path.getmtime(os.path.join(a, "manifest.json")) == mtime  # reused, not regenerated


@pytest.mark.parametrize("damage", ["corrupt_label", "delete_image", "delete_manifest"])
def test_damaged_world_cache_is_detected_and_rebuilt(tmp_path, caplog, damage):
    path = generate_toy_world(SMALL, root=str(tmp_path))
    label_file = os.path.join(path, "val", "labels", "00001.png")
    original = open(label_file, "rb").read()
    if damage == "corrupt_label":
        with open(label_file, "r+b") as f:
            f.seek(40)
            f.write(b"\x00garbage\x00")
    elif damage == "delete_image":
        os.remove(os.path.join(path, "train", "images", "00002.jpg"))
    else:
        os.remove(os.path.join(path, "manifest.json"))
    with caplog.at_level(logging.WARNING, logger="zsmask"):
        assert generate_toy_world(SMALL, root=str(tmp_path)) == path
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    assert open(label_file, "rb").read() == original
    assert os.path.isfile(os.path.join(path, "train", "images", "00002.jpg"))


def test_registered_variants_generate_on_first_load(tmp_path, unique_name):
    split = register_toy_world(unique_name, SMALL, root=str(tmp_path))
    assert not os.path.exists(toy_world_root(SMALL, str(tmp_path)))  # lazy: nothing drawn yet
    train_meta = MetadataCatalog.get(split.train)
    assert len(train_meta.stuff_classes) == len(TOY_CLASSES) - len(TOY_UNSEEN)
    assert not set(train_meta.stuff_classes) & set(TOY_UNSEEN)  # inductive: no unseen names
    assert MetadataCatalog.get(split.test).stuff_classes == list(TOY_CLASS_NAMES)
    assert MetadataCatalog.get(split.zs3).stuff_classes == list(TOY_UNSEEN)
    records = DatasetCatalog.get(split.train)
    assert len(records) == 6 and len(DatasetCatalog.get(split.test)) == 3
    mapper = ZeroShotSemSegDatasetMapper(is_train=True, augmentations=[], image_format="RGB", ignore_label=255)
    unseen_ids = [TOY_CLASS_NAMES.index(n) for n in TOY_UNSEEN]
    for record in records:
        raw = np.asarray(Image.open(record["sem_seg_file_name"]))
        mapped = mapper(dict(record))["sem_seg"].numpy()
        assert np.array_equal(mapped == 255, np.isin(raw, unseen_ids))  # unseen pixels are ignored
    assert "toy_world_train" in DatasetCatalog.list() and "toy_world_test_zs3" in DatasetCatalog.list()


# ------------------------------------------------------------------------------ toy CLIP
def test_reduced_toy_clip_pretraining_rises_well_above_chance():
    recipe = ToyClipRecipe(steps=45, batch_size=48, pool_size=960, eval_crops_per_class=6, scene_pool=96,
                           masked_images=6, masked_crops=12, dense_scenes=2, eval_scenes=30)
    torch.manual_seed(0)
    untrained = crop_zero_shot_accuracy(load_clip(TOY_CLIP_NAME, ""), crops_per_class=6)
    model, report = pretrain_toy_clip(recipe, print_fn=lambda line: None)
    assert report["chance"] == pytest.approx(100 / 30)
    assert untrained["top1"] < 3 * report["chance"]
    # measured after 45 steps (chance 3.3%): crops 14%, masked image 36%, masked crop 32%, dense 15%
    assert report["top1"] > 3 * report["chance"], report
    assert set(report["per_class"]) == set(TOY_CLASS_NAMES) and report["crops"] == 180
    views = report["regions"]["views"]
    assert set(views) == {"masked_image", "masked_crop", "context_crop", "dense_pooled"}
    assert report["regions"]["scenes"] == 30 and all(m["count"] == report["regions"]["regions"] > 50
                                                     for m in views.values())
    for view in ("masked_image", "masked_crop", "dense_pooled"):
        assert views[view]["top1"] > 3 * report["chance"], (view, views[view])
        assert views[view]["same_minus_different"] > 0.1, (view, views[view])
    assert type(model).__name__ == "CLIP" and not model.training


def test_toy_clip_cache_is_reused_verified_and_loaded_by_the_clip_loader(tmp_path, caplog):
    recipe = ToyClipRecipe(steps=2, batch_size=16, pool_size=64, eval_crops_per_class=1, scene_pool=4,
                            masked_images=2, masked_crops=2, dense_scenes=1, eval_scenes=2)
    lines = []
    weights = toy_clip_weights(recipe, root=str(tmp_path), print_fn=lines.append)
    assert any("toy CLIP pretraining: 2/2" in line for line in lines) and any("zero-shot" in line for line in lines)
    with open(weights[:-3] + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["model_name"] == TOY_CLIP_NAME and sidecar["recipe"]["steps"] == 2
    assert toy_clip_report(weights) == sidecar["report"] and sidecar["report"]["steps"] == 2
    mtime = os.path.getmtime(weights)
    lines.clear()
    assert toy_clip_weights(recipe, root=str(tmp_path), print_fn=lines.append) == weights
    assert lines == [] and os.path.getmtime(weights) == mtime  # reused without pretraining

    register_pretrained_source(TOY_CLIP_NAME, "test-reduced", lambda: toy_clip_weights(recipe, root=str(tmp_path)))
    loaded = load_clip(TOY_CLIP_NAME, "test-reduced")
    saved = torch.load(weights, weights_only=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())

    with open(weights, "r+b") as f:  # damage the checkpoint: detected by checksum, rebuilt
        f.seek(100)
        f.write(b"\xff" * 16)
    with caplog.at_level(logging.WARNING, logger="zsmask"):
        assert toy_clip_weights(recipe, root=str(tmp_path), print_fn=lines.append) == weights
    assert "damaged" in caplog.text
    rebuilt = torch.load(weights, weights_only=True)
    assert all(torch.equal(rebuilt[k], v) for k, v in saved.items())  # seeded: the same weights again


# ------------------------------------------------------------------------------ quick start
def test_quickstart_smoke_trains_and_evaluates_end_to_end(tmp_path, capsys):
    quickstart = runpy.run_path(os.path.join(ROOT, "tools", "quickstart.py"))
    assert quickstart["main"](["--smoke", "--device", "cpu", "--output-dir", str(tmp_path), "--num-vis", "2"]) == 0
    out = capsys.readouterr().out
    assert "[1/3]" in out and "[2/3]" in out and "[3/3]" in out and "hIoU" in out
    with open(tmp_path / "quickstart_results.json") as f:
        summary = json.load(f)
    gzs3 = summary["results"]["toy_world_smoke_test"]
    for key in ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU", "pAcc"):
        assert np.isfinite(gzs3[key]) and 0 <= gzs3[key] <= 100
    s, u = gzs3["mIoU_seen"], gzs3["mIoU_unseen"]
    assert gzs3["hIoU"] == pytest.approx(2 * s * u / (s + u) if s + u else 0.0)
    assert set(f"IoU-{n}" for n in TOY_CLASS_NAMES) <= set(gzs3)
    zs3 = summary["results"]["toy_world_smoke_test_zs3"]
    assert set(f"IoU-{n}" for n in TOY_UNSEEN) <= set(zs3) and np.isfinite(zs3["mIoU"])
    panels = sorted(os.listdir(tmp_path / "visualizations"))
    assert panels == ["00000.png", "00001.png"]
    width, height = Image.open(tmp_path / "visualizations" / "00000.png").size
    assert width > 3 * 64 * 3 and height > 64 * 3  # three upscaled panels side by side
    assert os.path.isfile(tmp_path / "model_final.pth")


@pytest.mark.slow
def test_prepare_command_builds_the_default_world_and_a_region_competent_toy_clip(tmp_path, capsys):
    """The full default preparation (about 5 minutes on 2 cores) and its region table: the toy
    CLIP's acceptance bars on ground-truth regions of fresh scenes (masked image and masked crop
    top-1 >= 60% over all 30 classes, mask-pooled dense features >= 40%, unseen regions not more
    than 10 points below seen ones) and on single-class crops."""
    prepare = runpy.run_path(os.path.join(ROOT, "tools", "prepare_toy_world.py"))
    assert prepare["main"](["--json", str(tmp_path / "report.json"), "--report"]) == 0
    out = capsys.readouterr().out
    assert "ETA" in out and "toy CLIP zero-shot top-1" in out
    assert "masked image (full canvas)" in out and "dense (MaskCLIP), mask-pooled" in out and "matched cos" in out
    with open(tmp_path / "report.json") as f:
        saved = json.load(f)
    report = saved["clip_report"]
    assert report["top1"] >= CROP_TOP1_BAR, report
    views = saved["region_report"]["views"]
    assert saved["region_report"]["regions"] > 500
    for view, bar in (("masked_image", 60.0), ("masked_crop", 60.0), ("dense_pooled", 40.0)):
        m = views[view]
        assert m["top1"] >= bar and m["top1_unseen"] >= m["top1_seen"] - 10.0, (view, m)
        assert m["same_minus_different"] > 0.3, (view, m)
    assert views["masked_image"] == pytest.approx(report["regions"]["views"]["masked_image"])  # same fresh scenes


@pytest.mark.slow
def test_toy_ablation_resumes_without_rerunning_finished_runs(tmp_path, capsys):
    """Real train_net runs on the smoke world and the quick start's smoke CLIP: a rerun reads
    every finished run back; a new seed trains only that seed."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import toy_ablation
    from zsmask.toy import prepare_toy_world

    quickstart = runpy.run_path(os.path.join(ROOT, "tools", "quickstart.py"))
    weights = prepare_toy_world(quickstart["SMOKE_WORLD"], quickstart["SMOKE_CLIP"], print_fn=lambda *_: None)
    out, results = tmp_path / "runs", tmp_path / "results"
    def argv(*seeds, extra=()):
        return ["--configs", os.path.join(ROOT, "configs", "toy", "hungarian.yaml"), "--max-iter", "2",
                "--baseline", "hungarian", "--output-dir", str(out), "--results-dir", str(results), "--name", "t",
                "--skip-prepare", *extra, "--seeds", *seeds, "--", "SOLVER.IMS_PER_BATCH", "2",
                "DATASETS.TRAIN", "('toy_world_smoke_train',)", "DATASETS.TEST", "('toy_world_smoke_test',)",
                "MODEL.CLIP.PRETRAINED", weights["clip_weights"]]

    assert toy_ablation.main(argv("0", "1")) == 0
    first = capsys.readouterr().out
    assert first.count("(read back)") == 0
    stamps = {seed: os.path.getmtime(out / "hungarian" / f"seed{seed}" / "log.txt") for seed in (0, 1)}
    saved = json.loads((results / "t.json").read_text())["runs"]["hungarian"]

    assert toy_ablation.main(argv("0", "1", "2")) == 0
    second = capsys.readouterr().out
    assert "hungarian seed 0 (read back)" in second and "hungarian seed 1 (read back)" in second
    assert "hungarian seed 2:" in second  # the new seed trained
    assert {seed: os.path.getmtime(out / "hungarian" / f"seed{seed}" / "log.txt") for seed in (0, 1)} == stamps
    rerun = json.loads((results / "t.json").read_text())["runs"]["hungarian"]
    assert rerun["0"] == saved["0"] and rerun["1"] == saved["1"] and "2" in rerun
    table = (results / "t.md").read_text()
    assert "ΔhIoU vs hungarian [95% CI]" in table and "+0.00 [+0.00, +0.00]" in table
    assert "red checkered object" in table and "blue speckled background" in table  # unseen IoU table
    assert "hIoU eval SE" in table and "boundary F" in table and "U px as seen" in table  # diagnostics
    assert "Noise of hIoU" in table and "seeds for ±1.5" in table
    assert all(rerun[s]["eval_se"]["hIoU"] is not None for s in ("0", "1", "2"))
    # an override changes the key: that run is not read back
    assert toy_ablation.read_finished(str(out / "hungarian" / "seed0"), "another-key") is None

    # the run store in the results folder outlives the run folders (a fresh checkout)
    store = results / "runs" / "hungarian" / f"pipeline{toy_ablation.TRAINING_PIPELINE}"
    assert {p.name for p in store.iterdir()} >= {"seed0.json", "seed0.npz", "seed1.json", "seed2.json"}
    shutil.rmtree(out)
    assert toy_ablation.main(argv("0", "1")) == 0
    assert capsys.readouterr().out.count("(read back)") == 2 and not out.exists()
    assert json.loads((results / "t.json").read_text())["runs"]["hungarian"]["0"] == rerun["0"]
    # an evaluation variant of a model whose weights are gone retrains that seed first
    variant = ["--eval-variant", "hungarian_bg", "hungarian", "MODEL.ZSMASK.BACKGROUND_AT_INFERENCE", "False"]
    assert toy_ablation.main(argv("0", extra=variant)) == 0
    printed = capsys.readouterr().out
    assert "weights gone, retraining them for hungarian_bg" in printed and "hungarian_bg seed 0:" in printed
    assert (store.parent.parent / "hungarian_bg" / store.name / "seed0.json").is_file()
    assert toy_ablation.main(argv("0", extra=variant)) == 0  # now both read back
    assert capsys.readouterr().out.count("(read back)") == 2

    # the A/A row: the same config with seeds shifted, paired by the unshifted seed
    assert toy_ablation.main(argv("0", extra=["--seed-offset-row", "hungarian_aa", "hungarian", "1000"])) == 0
    assert "hungarian_aa seed 0:" in capsys.readouterr().out
    assert (out / "hungarian_aa" / "seed1000" / "result.json").is_file()
    aa = json.loads((results / "t.json").read_text())["runs"]["hungarian_aa"]
    assert set(aa) == {"0"} and aa["0"]["per_class_iou"] != rerun["0"]["per_class_iou"]  # another seed, another model


def test_second_split_holds_out_other_classes_of_the_same_scenes(tmp_path):
    from zsmask.data.toy_world import TOY_SPLITS, TOY_UNSEEN, TOY_UNSEEN_B, ToyWorldParams, register_toy_world
    from zsmask.data.toy_world.classes import TOY_CLASSES

    assert TOY_SPLITS == {"toy_world": TOY_UNSEEN, "toy_world_b": TOY_UNSEEN_B}
    assert len(TOY_UNSEEN_B) == 6 and not set(TOY_UNSEEN) & set(TOY_UNSEEN_B)
    by_name = {c.name: c for c in TOY_CLASSES}
    seen_b = [c for c in TOY_CLASSES if c.name not in TOY_UNSEEN_B]
    for name in TOY_UNSEEN_B:  # a new combination of a colour and a pattern seen in its kind
        c = by_name[name]
        assert any(s.colour == c.colour and s.is_thing == c.is_thing for s in seen_b)
        assert any(s.pattern == c.pattern and s.is_thing == c.is_thing for s in seen_b)
    test_b = MetadataCatalog.get("toy_world_b_test")
    assert [test_b.stuff_classes[i] for i in test_b.unseen_classes] == list(TOY_UNSEEN_B)
    assert not set(TOY_UNSEEN_B) & set(MetadataCatalog.get("toy_world_b_train").stuff_classes)
    assert len(MetadataCatalog.get("toy_world_b_train").stuff_classes) == 24

    world = ToyWorldParams(num_train=6, num_val=2)
    a = register_toy_world("toy_world_pair_a", world, root=str(tmp_path))
    b = register_toy_world("toy_world_pair_b", world, root=str(tmp_path), unseen=TOY_UNSEEN_B)
    records_a, records_b = DatasetCatalog.get(a.test), DatasetCatalog.get(b.test)
    assert [r["file_name"] for r in records_a] == [r["file_name"] for r in records_b]  # the same scenes
    meta_b = MetadataCatalog.get(b.train)
    assert not set(TOY_UNSEEN_B) & set(meta_b.stuff_classes) and "red checkered object" in meta_b.stuff_classes
