"""The web demo: its logic on a tiny model, and the page itself in Debian's Chromium (Playwright)."""
import json
import os
import runpy
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from zsmask import Predictor
from zsmask.visualization import draw_overlay
from zsmask.webapp import DemoInputError, SegmentationService, parse_vocabulary_text, vocabulary_text

from conftest import tiny_model_cfg, train_on_smoke_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_VOCABULARY = "red checkered object, blue plain object, green wavy background, yellow striped object, " \
                 "purple dotted object, blue speckled background"  # 3 of them unseen


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory):
    """The tiny model on the toy world's vocabularies (seeded initial weights), as files."""
    from detectron2.modeling import build_model

    from zsmask.engine import SlimCheckpointer

    root = str(tmp_path_factory.mktemp("webapp_model"))
    cfg = tiny_model_cfg(root, train_dataset="toy_world_train", test_dataset="toy_world_test")
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    with open(os.path.join(root, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    torch.manual_seed(0)
    SlimCheckpointer(build_model(cfg), save_dir=root).save("model")
    return os.path.join(root, "config.yaml"), os.path.join(root, "model.pth")


@pytest.fixture(scope="module")
def service(toy_bundle, tmp_path_factory):
    service = SegmentationService(Predictor(*toy_bundle), max_megapixels=0.02,
                                  work_dir=str(tmp_path_factory.mktemp("webapp_work")), keep_results=2)
    yield service
    service.close()


def _scene(path, seed=0, size=(48, 64)):
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 255, size=size + (3,), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return image


def test_vocabulary_box_text_round_trips_commas_lines_and_synonyms():
    assert parse_vocabulary_text(" cat, sofa ,remote control ") == ("cat", "sofa", "remote control")
    assert parse_vocabulary_text("building, edifice\nroad\n# a comment\n\nsky") == ("building, edifice", "road", "sky")
    for names in (("building, edifice", "road, route", "sky"), ("building, edifice",), ("c#", "f#")):
        assert parse_vocabulary_text(vocabulary_text(names)) == names  # synonyms: one per line
    assert vocabulary_text(("cat", "dog")) == "cat, dog"
    for bad, message in (("", "empty"), ("  \n ", "empty"), (",,", "no class name"), ("cat, cat", "duplicate class names")):
        with pytest.raises(DemoInputError, match=message):
            parse_vocabulary_text(bad)


def test_presets_unseen_list_and_the_model_vocabulary(service):
    labels = list(service.presets)
    assert labels[0] == "the model's vocabulary (30 classes)" and service.presets[labels[0]][0] == "red plain object"
    assert labels[1].startswith("training vocabulary, toy_world_train (24 seen")
    vocabularies = list(service.presets.values())
    assert len(set(vocabularies)) == len(vocabularies)  # one entry per distinct vocabulary
    assert not any(label.split(" ")[0].endswith("_train") for label in labels[2:])
    assert any(label.startswith("voc_zs_test (20 classes)") for label in labels)
    assert any(label.startswith("coco_stuff_zs_test (171") for label in labels)
    ade847 = next(label for label in labels if label.startswith("ade20k_847_test"))
    assert parse_vocabulary_text(service.preset_text(ade847)) == service.presets[ade847]  # names with commas
    summary = service.unseen_summary(TOY_VOCABULARY)
    assert "6 classes; **3 unseen**" in summary
    assert summary.endswith(": red checkered object, blue plain object, blue speckled background")
    assert "**the vocabulary is empty" in service.unseen_summary("")
    with pytest.raises(DemoInputError, match="unknown preset"):
        service.preset_text("nope")


def test_segment_matches_the_predictor_and_writes_the_label_map(service, tmp_path):
    image = _scene(tmp_path / "photo one.png")
    result = service.segment(str(tmp_path / "photo one.png"), TOY_VOCABULARY)
    expected = service.predictor(image, vocabulary=parse_vocabulary_text(TOY_VOCABULARY))
    assert torch.equal(result.prediction.label_map, expected.label_map)
    assert result.prediction.unseen == (True, True, False, False, False, True)
    assert np.array_equal(result.overlay, draw_overlay(image, expected.label_map.numpy(), expected.class_names,
                                                       expected.unseen))
    shares = dict((expected.class_names[i], share) for i, share in expected.present_classes())
    assert {row.name: row.share for row in result.legend} == shares and abs(sum(shares.values()) - 1) < 1e-6
    label_png, classes_json = result.files
    assert os.path.basename(label_png) == "photo_one_labels.png"
    saved = Image.open(label_png)
    assert np.array_equal(np.asarray(saved), expected.label_map.numpy())
    assert json.loads(saved.text["zsmask:class_names"]) == list(expected.class_names)
    with open(classes_json, encoding="utf-8") as f:
        assert json.load(f) == {"class_names": list(expected.class_names), "unseen": list(expected.unseen)}
    # only the last keep_results (2) requests' files are kept
    first_folder = os.path.dirname(label_png)
    for _ in range(2):
        service.segment(str(tmp_path / "photo one.png"), "cat, dog")
    assert not os.path.exists(first_folder)


def test_bad_inputs_are_messages_for_the_page(service, tmp_path):
    _scene(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _scene(tmp_path / "big.png", size=(160, 160))  # 0.026 MP > 0.02
    _scene(tmp_path / "line.png", size=(1, 40))
    cases = [
        (None, "cat", "no image"),
        (str(tmp_path / "broken.jpg"), "cat", "cannot read the uploaded file 'broken.jpg' as an image"),
        (str(tmp_path / "big.png"), "cat", "160 x 160 = 0.0256 megapixels; this demo accepts at most 0.02"),
        (str(tmp_path / "line.png"), "cat", "at least 2 pixels"),
        (str(tmp_path / "ok.png"), " , ", "no class name"),
        (str(tmp_path / "ok.png"), "", "the vocabulary is empty"),
    ]
    for path, vocabulary, message in cases:
        with pytest.raises(DemoInputError, match=message):
            service.segment(path, vocabulary)
    assert service.segment(str(tmp_path / "ok.png"), "cat, dog").prediction.label_map.shape == (48, 64)


def test_app_without_a_model_says_how_to_make_one(tmp_path, capsys):
    app = runpy.run_path(os.path.join(ROOT, "demo", "app.py"))
    args = app["get_parser"]().parse_args([])
    assert app["resolve_model"](args, root=str(tmp_path)) is None
    err = capsys.readouterr().err
    assert "output/quickstart/model_final.pth does not exist" in err and "make quickstart" in err
    (tmp_path / "output" / "quickstart").mkdir(parents=True)
    (tmp_path / "output" / "quickstart" / "model_final.pth").write_bytes(b"")
    config, weights = app["resolve_model"](args, root=str(tmp_path))
    assert config == os.path.join(str(tmp_path), "configs", "toy", "alignzeg.yaml")  # a run before config.yaml
    (tmp_path / "output" / "quickstart" / "config.yaml").write_text("")
    assert app["resolve_model"](args, root=str(tmp_path))[0].endswith(os.path.join("quickstart", "config.yaml"))
    assert app["main"](["--config-file", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def _browser_or_skip():
    """Playwright and Debian's Chromium; CI (ZSMASK_REQUIRE_BROWSER=1) fails instead of skipping."""
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "playwright is not installed (pip install playwright)"
    if missing is None and not os.path.isfile("/usr/bin/chromium"):
        missing = "/usr/bin/chromium is missing (apt-get install -y chromium)"
    if missing:
        if os.environ.get("ZSMASK_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_in_chromium_segments_a_toy_image_and_reports_a_corrupt_file(tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    from detectron2.data import DatasetCatalog

    driver = runpy.run_path(os.path.join(ROOT, "tools", "web_demo_screenshot.py"))
    train_on_smoke_world(tmp_path / "model", "hungarian.yaml", "toy_world_smoke", "SOLVER.MAX_ITER", "3")
    config, weights = str(tmp_path / "model" / "config.yaml"), str(tmp_path / "model" / "model_final.pth")
    toy_image = DatasetCatalog.get("toy_world_smoke_test")[0]["file_name"]
    upload = str(tmp_path / "toy scene.jpg")
    shutil.copy(toy_image, upload)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    # the app in its own process, with this process's thread count, so the numbers are the same
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    with driver["serve_app"](["--config-file", config, "--weights", weights], env=env,
                             log_path=str(tmp_path / "app.log")) as url, sync_playwright() as playwright:
        browser = driver["launch_chromium"](playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#zsmask-run")
        assert "the model's vocabulary (30 classes)" in page.locator("#zsmask-preset").inner_text() or \
            page.locator("#zsmask-preset input").input_value().startswith("the model's vocabulary")
        found = driver["segment"](page, upload, TOY_VOCABULARY)
        page.screenshot(path=os.environ.get("ZSMASK_WEB_DEMO_SCREENSHOT", str(tmp_path / "web_demo.png")),
                        full_page=True)

        predictor = Predictor(config, weights)
        image = predictor.to_rgb_array(toy_image)
        expected = predictor(image, vocabulary=parse_vocabulary_text(TOY_VOCABULARY))
        shown = np.asarray(Image.open(_fetch(page, found["result_url"], tmp_path / "result.png")).convert("RGB"))
        assert np.array_equal(shown, draw_overlay(image, expected.label_map.numpy(), expected.class_names,
                                                  expected.unseen))
        label_url = next(u for u in found["files"] if u.endswith("_labels.png"))
        labels = np.asarray(Image.open(_fetch(page, label_url, tmp_path / "labels.png")))
        assert np.array_equal(labels, expected.label_map.numpy())
        assert "3 unseen" in found["unseen"] and "blue speckled background" in found["unseen"]
        for index, share in expected.present_classes():
            name = expected.class_names[index]
            row = name + (" [unseen]" if expected.unseen[index] else "")
            assert f"{row}\t{100 * share:.1f}%" in found["legend"]

        driver["upload"](page, str(broken))
        page.locator("#zsmask-run").click()
        page.locator("[data-testid='toast-body']", has_text="cannot read the uploaded file 'broken.png' as an image"
                     ).wait_for(timeout=60000)
        assert "Traceback" not in page.content()
        # the server keeps serving: a good image again, and an empty vocabulary is a message too
        again = driver["segment"](page, upload, TOY_VOCABULARY)
        assert again["number"] == found["number"] + 1 and again["result_url"] == found["result_url"]  # same picture
        page.locator("#zsmask-vocabulary textarea").fill("")
        page.locator("#zsmask-run").click()
        page.locator("[data-testid='toast-body']", has_text="the vocabulary is empty").wait_for(timeout=60000)
        browser.close()


def _fetch(page, url: str, path) -> str:
    response = page.request.get(url)
    assert response.ok, f"{url}: HTTP {response.status}"
    with open(path, "wb") as f:
        f.write(response.body())
    return str(path)
