"""demo/demo.py on a tiny model bundle: folders with bad files, globs, vocabularies, label maps, video."""
import json
import os
import runpy

import cv2
import numpy as np
import pytest
from PIL import Image

from zsmask import Predictor
from zsmask.visualization import draw_prediction, vocabulary_colors

from conftest import write_tiny_model_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_tiny_model_files(tmp_path_factory.mktemp("demo_model"), "demo_zs")


@pytest.fixture(scope="module")
def demo_main():
    return runpy.run_path(os.path.join(ROOT, "demo", "demo.py"))["main"]


def _scene(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.RandomState(seed)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = rng.randint(0, 255, 3)
    image[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = rng.randint(0, 255, 3)
    return image


def test_folder_with_a_corrupt_file_and_a_grey_png(bundle, demo_main, tmp_path, capsys):
    config, weights = bundle
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(_scene(0)).save(inputs / "a.jpg")
    Image.fromarray(_scene(1)[:, :, 0]).save(inputs / "grey.png")  # mode L
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (inputs / "notes.txt").write_text("not an image: ignored")
    out = tmp_path / "out"
    status = demo_main(["--config-file", config, "--input", str(inputs), "--output", str(out), "--save-labels",
                        "--opts", "MODEL.WEIGHTS", weights])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.png" in captured.err and "skipped" in captured.err
    assert "2 of 3 images segmented" in captured.err
    assert sorted(os.listdir(out)) == ["a.png", "a_labels.png", "classes.json", "grey.png", "grey_labels.png"]
    classes = json.loads((out / "classes.json").read_text())
    assert classes == {"class_names": ["cat", "dog", "grass", "sheep"], "unseen": [False, False, False, True]}
    # the written label map is the Predictor's, and the picture is [image | overlay | legend]
    predictor = Predictor(config, weights)
    for name, image in (("a", np.asarray(Image.open(inputs / "a.jpg"))), ("grey", _scene(1)[:, :, :1].repeat(3, 2))):
        expected = predictor(image).label_map.numpy()
        assert np.array_equal(np.asarray(Image.open(out / f"{name}_labels.png")), expected)
        drawn = np.asarray(Image.open(out / f"{name}.png"))
        reference = draw_prediction(image, expected, predictor.class_names, predictor.unseen_flags(predictor.class_names))
        assert drawn.shape == reference.shape and drawn.shape[0] >= 384 and drawn.shape[1] > 2 * 384 * 64 / 48
        assert f"{name}.png:" in captured.out


def test_glob_vocabulary_file_and_single_output_file(bundle, demo_main, tmp_path, capsys):
    config, weights = bundle
    for i in range(3):
        Image.fromarray(_scene(i)).save(tmp_path / f"shot{i}.png")
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("cat\nzebra\n")
    out = tmp_path / "glob_out"
    status = demo_main(["--config-file", config, "--input", str(tmp_path / "shot*.png"), "--output", str(out),
                        "--vocabulary", str(vocabulary), "--opts", "MODEL.WEIGHTS", weights])
    assert status == 0 and sorted(os.listdir(out)) == ["shot0.png", "shot1.png", "shot2.png"]
    single = tmp_path / "single.png"
    assert demo_main(["--config-file", config, "--input", str(tmp_path / "shot0.png"), "--output", str(single),
                      "--vocabulary", "cat,zebra", "--opts", "MODEL.WEIGHTS", weights]) == 0
    assert np.array_equal(np.asarray(Image.open(single)), np.asarray(Image.open(out / "shot0.png")))
    # a file name for several inputs, a pattern that matches nothing, no --output: clear errors
    capsys.readouterr()
    assert demo_main(["--config-file", config, "--input", str(tmp_path / "shot*.png"), "--output", str(single),
                      "--opts", "MODEL.WEIGHTS", weights]) == 2
    assert "is a file name but there are 3 inputs" in capsys.readouterr().err
    assert demo_main(["--config-file", config, "--input", str(tmp_path / "none*.jpg"), str(tmp_path / "shot1.png"),
                      "--output", str(tmp_path / "o2"), "--opts", "MODEL.WEIGHTS", weights]) == 1
    err = capsys.readouterr().err
    assert "no file matches" in err and os.path.isfile(tmp_path / "o2" / "shot1.png")
    assert demo_main(["--config-file", config, "--input", str(tmp_path / "shot1.png")]) == 2
    assert "--output is required" in capsys.readouterr().err


def test_video_input_and_missing_webcam(bundle, demo_main, tmp_path, capsys):
    config, weights = bundle
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    assert writer.isOpened()
    for i in range(3):
        writer.write(_scene(i)[:, :, ::-1].copy())
    writer.release()
    out = str(tmp_path / "clip_seg.avi")
    assert demo_main(["--config-file", config, "--video-input", video, "--output", out,
                      "--opts", "MODEL.WEIGHTS", weights]) == 0
    capture = cv2.VideoCapture(out)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 3 and frames[0].shape[0] >= 48 and frames[0].shape[1] > 2 * 64
    assert "3 frames segmented" in capsys.readouterr().err
    assert demo_main(["--config-file", config, "--video-input", str(tmp_path / "missing.mp4"), "--output", out]) == 1
    assert "video not found" in capsys.readouterr().err
    if not cv2.VideoCapture(0).isOpened():  # no camera on this machine: a clear error, not a crash
        assert demo_main(["--config-file", config, "--webcam", "--output", str(tmp_path / "cam.avi"),
                          "--opts", "MODEL.WEIGHTS", weights]) == 1
        assert "cannot open the webcam" in capsys.readouterr().err


def test_drawing_marks_unseen_classes_and_colours_are_distinct():
    colours = vocabulary_colors([f"class {i}" for i in range(60)])
    assert len(set(colours)) == 60 and vocabulary_colors(["a", "b"]) == colours[:2]
    assert all(max(c) - min(c) >= 60 for c in colours)  # no grey, black or white
    image = np.full((20, 30, 3), 128, dtype=np.uint8)
    label = np.zeros((20, 30), dtype=np.int64)
    label[5:15, 10:20] = 1
    seen_only = draw_prediction(image, label, ("cat", "sheep"), (False, False), scale=1.0)
    marked = draw_prediction(image, label, ("cat", "sheep"), (False, True), scale=1.0)
    overlay_seen, overlay_marked = seen_only[:20, 34:64], marked[:20, 34:64]
    # the unseen region is outlined in white: its border pixels differ, its far interior does not
    def white(overlay):  # the outline is anti-aliased; detectron2's own region edge is a lighter colour (< 250)
        return overlay.min(axis=2) >= 250

    assert white(overlay_marked)[5, 10:20].sum() >= 6 and not white(overlay_marked)[:3, :3].any()
    assert not white(overlay_seen).any()
    assert np.array_equal(overlay_seen[:3, :3], overlay_marked[:3, :3])
    # the legend's unseen row has red text (text starts at x = 82 of the legend, after swatch and share)
    def red_text(drawn):
        text = drawn[:, 64 + 82:].astype(int)
        return ((text[:, :, 0] > 150) & (text[:, :, 1] < 80) & (text[:, :, 2] < 80)).any()

    assert red_text(marked) and not red_text(seen_only)
    with pytest.raises(ValueError, match="differ in size"):
        draw_prediction(image, label[:10], ("cat", "sheep"), (False, True))
