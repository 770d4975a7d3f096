"""TorchScript export of the inference path (fixed vocabulary): agreement with the eager model,
a file that loads without zsmask, baked-in text, random queries, refusals."""
import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

from zsmask import Predictor
from zsmask.export import EXPORT_METADATA_FILE, ExportError, FixedVocabularySegmenter, check_exported, \
    example_image, export_onnx, export_torchscript, load_exported

from conftest import write_tiny_model_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_tiny_model_files(tmp_path_factory.mktemp("export_model"), "export_zs")


def test_exported_and_eager_predictions_agree_and_the_file_needs_only_torch(bundle, tmp_path):
    config, weights = bundle
    predictor = Predictor(config, weights, device="cpu")
    names = ("cat", "zebra", "sheep")
    path = str(tmp_path / "model.ts")
    export_torchscript(predictor.model, names, path, (64, 96), unseen=predictor.unseen_flags(names))
    exported, metadata = load_exported(path)
    assert metadata["class_names"] == list(names) and metadata["unseen"] == [False, True, True]
    assert metadata["image_size"] == [64, 96]
    images = [example_image(64, 96, seed=s) for s in (1, 2)] + [example_image(40, 50, seed=3)]
    checks = check_exported(exported, predictor.model, names, (64, 96), images)
    for check in checks:
        assert check.max_abs_diff < 1e-5 and check.label_agreement == 1.0
    # the eager wrapper is the model's own inference at the export size
    direct = predictor.model([{"image": images[0], "vocabulary": list(names)}])[0]["sem_seg"]
    torch.testing.assert_close(FixedVocabularySegmenter(predictor.model, names, (64, 96))(images[0]), direct)
    assert tuple(exported(images[2]).shape) == (3, 40, 50)  # other sizes: resized inside, scores at their size
    # a fresh interpreter with torch only (zsmask not importable) gets the same scores
    torch.save(images[0], tmp_path / "image.pt")
    torch.save(exported(images[0]), tmp_path / "expected.pt")
    script = ("import sys, json, torch\nsys.modules['zsmask'] = None\n"
              f"files = {{'{EXPORT_METADATA_FILE}': ''}}\n"
              f"m = torch.jit.load({path!r}, _extra_files=files)\n"
              f"out = m(torch.load({str(tmp_path / 'image.pt')!r}))\n"
              f"assert torch.equal(out, torch.load({str(tmp_path / 'expected.pt')!r}))\n"
              f"print(json.loads(files['{EXPORT_METADATA_FILE}'])['class_names'])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(list(names))


def test_text_embeddings_are_baked_in_and_the_text_encoder_is_dropped(bundle, tmp_path):
    config, weights = bundle
    predictor = Predictor(config, weights, device="cpu")
    path = str(tmp_path / "model.ts")
    exported = export_torchscript(predictor.model, ("cat", "dog"), path, (64, 64))
    clip = predictor.model.clip.model
    visual = {id(p) for p in clip.visual.parameters()}
    text_bytes = sum(p.numel() * p.element_size() for p in clip.parameters() if id(p) not in visual)
    model_bytes = sum(p.numel() * p.element_size() for p in predictor.model.parameters())
    assert text_bytes > 0.3 * model_bytes  # the token embedding table alone is 49408 x 64
    # frozen: weights are graph constants, and only those the traced path uses are kept
    assert not list(exported.parameters())
    assert os.path.getsize(path) < model_bytes - 0.9 * text_bytes
    graph = str(exported.inlined_graph)
    assert "aten::embedding_bag" in graph  # the deformable attention, as a standard op
    assert "prim::PythonOp" not in graph
    # changing the vocabulary after export changes nothing in the file: same scores as at export time
    image = example_image(64, 64, seed=4)
    before = exported(image)
    predictor.model.text_embeddings(("tree",))
    torch.testing.assert_close(load_exported(path)[0](image), before)


def test_random_queries_are_constant_in_the_export(tmp_path, unique_name):
    config, weights = write_tiny_model_files(tmp_path, unique_name)
    predictor = Predictor(config, weights, device="cpu", opts=["MODEL.ZSMASK.RANDOM_QUERIES.NUM", "4"])
    path = str(tmp_path / "rq.ts")
    exported = export_torchscript(predictor.model, ("cat", "dog"), path, (64, 64))
    image = example_image(64, 64, seed=5)
    torch.testing.assert_close(exported(image), exported(image))  # not redrawn per call
    check = check_exported(exported, predictor.model, ("cat", "dog"), (64, 64), [image])[0]
    assert check.max_abs_diff < 1e-5 and check.label_agreement == 1.0


def test_export_refuses_what_it_cannot_trace(bundle, tmp_path):
    config, weights = bundle
    predictor = Predictor(config, weights, device="cpu", opts=["MODEL.ZSMASK.POST_PROCESSORS", "['EigensegmentFusion']",
                                                               "MODEL.SAZS.SPECTRAL.SEMANTIC_WEIGHT", "0.0"])
    with pytest.raises(ExportError, match="POST_PROCESSORS"):
        export_torchscript(predictor.model, ("cat",), str(tmp_path / "x.ts"), (64, 64))
    with pytest.raises(ExportError, match="at least 32x32"):
        FixedVocabularySegmenter(Predictor(config, weights, device="cpu").model, ("cat",), (16, 64))
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(tmp_path / "plain.ts"))
    with pytest.raises(ExportError, match="without zsmask metadata"):
        load_exported(str(tmp_path / "plain.ts"))


def test_export_tool_prints_the_agreement_table(bundle, tmp_path, capsys):
    config, weights = bundle
    tool = runpy.run_path(os.path.join(ROOT, "tools", "export_model.py"))["main"]
    out = str(tmp_path / "tool.ts")
    assert tool(["--config-file", config, "--output", out, "--vocabulary", "cat,zebra", "--image-size", "64", "64",
                 "--device", "cpu", "MODEL.WEIGHTS", weights]) == 0
    printed = capsys.readouterr().out
    assert "exported 2 classes to torchscript at 64x64 on cpu" in printed and "labels agreeing" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith(("0 ", "1 "))]
    assert len(rows) == 2 and all(float(r[2]) <= 1e-4 and r[3] == "100.00%" for r in rows)
    assert json.loads(printed.split("metadata: ")[1].splitlines()[0])["image_size"] == [64, 64]


def test_export_tool_writes_a_self_contained_checkpoint_that_loads_alone(bundle, tmp_path, capsys):
    config, weights = bundle
    tool = runpy.run_path(os.path.join(ROOT, "tools", "export_model.py"))["main"]
    out = str(tmp_path / "shared.pth")
    assert tool(["--config-file", config, "--output", out, "--vocabulary", "cat,zebra", "--image-size", "64", "64",
                 "--device", "cpu", "MODEL.WEIGHTS", weights]) == 0  # the .pth suffix chooses the format
    printed = capsys.readouterr().out
    assert "self-contained checkpoint (CLIP and config included)" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith(("0 ", "1 "))]
    assert len(rows) == 2 and all(float(r[2]) == 0.0 and r[3] == "100.00%" for r in rows)
    saved = torch.load(out, map_location="cpu", weights_only=True)
    slim = torch.load(weights, map_location="cpu", weights_only=True)
    clip_keys = [k for k in saved["model"] if k.startswith("clip.model.")]
    assert saved["clip_included"] and clip_keys and not any(k.startswith("clip.model.") for k in slim["model"])
    assert saved["clip_reference"] == slim["clip_reference"] and "META_ARCHITECTURE" in saved["config"]
    clip_bytes = sum(saved["model"][k].numel() * saved["model"][k].element_size() for k in clip_keys)
    assert os.path.getsize(out) >= os.path.getsize(weights) + clip_bytes


def test_onnx_export_agrees_with_eager_in_onnx_runtime_at_any_size(bundle, tmp_path, unique_name):
    config, weights = bundle
    # random queries and Predictive-Bias-free default parts; the CLIP backbone's fused attention must unfuse
    predictor = Predictor(config, weights, device="cpu", opts=["MODEL.ZSMASK.RANDOM_QUERIES.NUM", "2"])
    names = ("cat", "zebra", "sheep")
    path = str(tmp_path / "model.onnx")
    export_onnx(predictor.model, names, path, (64, 96), unseen=predictor.unseen_flags(names))
    assert torch.backends.mha.get_fastpath_enabled()  # restored after the export
    exported, metadata = load_exported(path)
    assert metadata["format"] == "onnx" and metadata["class_names"] == list(names)
    assert metadata["unseen"] == [False, True, True] and metadata["image_size"] == [64, 96]
    import onnx

    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert "Loop" not in ops and not any("Attention" in op for op in ops)  # plain ops, no fused or looped ones
    images = [example_image(64, 96, seed=1), example_image(40, 50, seed=2), example_image(100, 80, seed=3)]
    for check in check_exported(exported, predictor.model, names, (64, 96), images):
        assert check.max_abs_diff < 1e-4 and check.label_agreement == 1.0
    assert tuple(exported(images[2]).shape) == (3, 100, 80)  # dynamic height and width


def test_export_tool_writes_onnx_by_extension(bundle, tmp_path, capsys):
    config, weights = bundle
    tool = runpy.run_path(os.path.join(ROOT, "tools", "export_model.py"))["main"]
    out = str(tmp_path / "tool.onnx")
    assert tool(["--config-file", config, "--output", out, "--image-size", "64", "64", "--device", "cpu",
                 "MODEL.WEIGHTS", weights]) == 0
    printed = capsys.readouterr().out
    assert "exported 4 classes to onnx at 64x64" in printed and "100.00%" in printed
    assert load_exported(out)[1]["class_names"] == ["cat", "dog", "grass", "sheep"]
