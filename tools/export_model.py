#!/usr/bin/env python
"""Export a trained model for one vocabulary to TorchScript or ONNX, or as a self-contained
checkpoint for sharing, and check it against the eager model.

    python tools/export_model.py --config-file configs/toy/hungarian.yaml --output toy.ts \\
        [--format torchscript | onnx | checkpoint] [--vocabulary "cat,sofa" | vocabulary.txt] \\
        [--image-size 128 128] [--device cpu] [--check-images a.jpg b.png] \\
        MODEL.WEIGHTS output/toy/hungarian/model_final.pth

``--format checkpoint`` writes the model's whole state dict with its frozen CLIP and the config
(zsmask's own checkpoints leave CLIP out): whoever has the file and the config needs no CLIP
weights (``MODEL.WEIGHTS shared.pth`` alone; the CLIP is read from the same file). It stays a
model for any vocabulary; the check loads it back that way.

The file holds the whole inference path with the vocabulary's text embeddings baked in (no
text encoder, no tokenizer); a TorchScript file loads with ``torch.jit.load`` alone, an ONNX
file with ONNX Runtime (see :mod:`zsmask.export`). It takes a ``(3, h, w)`` RGB image on the
0-255 scale, resizes it to ``--image-size`` (default: square ``INPUT.MIN_SIZE_TEST``) inside,
and returns ``(K, h, w)`` scores; the class names are in its ``zsmask.json`` metadata. After saving, the file is loaded
back and compared with the eager model on ``--check-images`` (default: seeded synthetic images
of two sizes); the exit status is 1 when any score differs by more than ``--tolerance`` or a
label disagrees.
"""
import argparse
import json
import os
import sys
import time

import torch
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from zsmask.data import ImageReadError  # noqa: E402
from zsmask.engine import full_checkpoint  # noqa: E402
from zsmask.export import (EXPORT_FORMATS, ExportError, FixedVocabularySegmenter, check_exported,  # noqa: E402
                           example_image, export_model, load_exported)
from zsmask.predictor import Predictor  # noqa: E402
from zsmask.utils import atomic_write  # noqa: E402


def _latency_ms(function, image: torch.Tensor, repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call, in ms."""
    times = []
    with torch.no_grad():
        function(image)
        for _ in range(repeats):
            if image.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            function(image)
            if image.is_cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--output", required=True, help="the file to write (e.g. model.ts or model.onnx)")
    p.add_argument("--format", choices=sorted(EXPORT_FORMATS) + ["checkpoint"],
                   help="default: onnx for a .onnx --output, checkpoint for .pth, else torchscript")
    p.add_argument("--vocabulary", help="comma-separated class names or a text file (default: the test dataset's)")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"), help="default: square INPUT.MIN_SIZE_TEST")
    p.add_argument("--device", help="device to trace on and deploy to (default: cuda when available, else cpu)")
    p.add_argument("--check-images", nargs="*", default=[], help="images to compare exported and eager outputs on")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed score difference")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)

    predictor = Predictor(args.config_file, device=args.device, vocabulary=args.vocabulary, opts=args.opts)
    size = tuple(args.image_size) if args.image_size else (predictor.cfg.INPUT.MIN_SIZE_TEST,) * 2
    images = []
    for path in args.check_images:
        try:
            images.append(torch.as_tensor(predictor.to_rgb_array(path).transpose(2, 0, 1).copy()))
        except ImageReadError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    if not images:
        images = [example_image(size[0], size[1], seed=1), example_image(size[0] * 3 // 4, size[1] + 16, seed=2)]
    images = [image.to(predictor.device) for image in images]
    names = predictor.class_names
    suffix = os.path.splitext(args.output.lower())[1]
    export_format = args.format or {".onnx": "onnx", ".pth": "checkpoint"}.get(suffix, "torchscript")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    start = time.perf_counter()
    if export_format == "checkpoint":
        atomic_write(args.output, lambda f: torch.save(full_checkpoint(predictor.model, predictor.cfg), f), "wb")
        seconds = time.perf_counter() - start
        shared = Predictor(args.config_file, args.output, device=args.device, vocabulary=names, opts=args.opts)
        exported, metadata = FixedVocabularySegmenter(shared.model, names, size), None
    else:
        try:
            export_model(export_format, predictor.model, names, args.output, size,
                         unseen=predictor.unseen_flags(names),
                         extra_metadata={"config_file": args.config_file, "weights": predictor.cfg.MODEL.WEIGHTS})
        except ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - start
        exported, metadata = load_exported(args.output, device=str(predictor.device))
    checks = check_exported(exported, predictor.model, names, size, images)
    rows = [[i, "x".join(str(s) for s in image.shape[-2:]), c.max_abs_diff, f"{100 * c.label_agreement:.2f}%"]
            for i, (image, c) in enumerate(zip(images, checks))]
    megabytes = os.path.getsize(args.output) / 1e6
    if export_format == "checkpoint":
        print(f"wrote a self-contained checkpoint (CLIP and config included) in {seconds:.1f}s -> {args.output} "
              f"({megabytes:.1f} MB); loaded back alone and checked on {len(names)} classes at {size[0]}x{size[1]}")
    else:
        print(f"exported {len(names)} classes to {export_format} at {size[0]}x{size[1]} on {predictor.device.type} "
              f"in {seconds:.1f}s -> {args.output} ({megabytes:.1f} MB)")
    print(tabulate(rows, headers=["image", "size", "max |exported - eager|", "labels agreeing"], floatfmt=".2e"))
    eager = FixedVocabularySegmenter(predictor.model, names, size)
    print(f"latency at {size[0]}x{size[1]} (median of 3, after a warm-up): eager {_latency_ms(eager, images[0]):.1f} ms, "
          f"exported {_latency_ms(exported, images[0]):.1f} ms")
    if metadata is not None:
        print("metadata: " + json.dumps({k: metadata[k] for k in ("image_size", "exported_on", "torch_version")}))
    failed = [c for c in checks if not (c.max_abs_diff <= args.tolerance and c.label_agreement == 1.0)]
    if failed:
        print(f"error: the exported model disagrees with the eager one on {len(failed)} image(s) "
              f"(tolerance {args.tolerance})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
