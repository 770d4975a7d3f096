#!/usr/bin/env python
"""SAZS's eigensegment fusion (Eq. 7) at 512x512 on CPU: its time per image, stage by stage, and
its share of the whole inference.

The model is ``configs/voc/sazs.yaml`` (ResNet-50, MSDeformAttn pixel decoder, 9 decoder
layers, 100 queries, CLIP ViT-B/16 text classifier over VOC's 20 classes) with random-init
weights, which do not change the cost; Z_sem comes from a random-init DINO ViT-S/16
architecture (timm ``vit_small_patch16_224``) saved to a temporary file and loaded as a user's
DINO checkpoint would be. The input is a 512x512 synthetic scene. Inference runs in eval mode
under ``torch.no_grad``, batch 1; every number is the median of ``--runs`` after one warm-up.

Rows: the model without post-processing (the reference, same process), the fusion's stages
(semantic features, affinity Z = Z_sem + lambda Z_shape, eigenvectors, discretisation into
eigensegments, Eq. 7), the fusion in all, and the model with the fusion. The fusion is also
timed without Z_sem (``SEMANTIC_WEIGHT 0``) and at other working resolutions.

    .venv/bin/python benchmarks/bench_fusion.py [--runs 3] [--size 512] [--threads 2]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def _median_seconds(function, runs: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _scene(size: int) -> torch.Tensor:
    """(3, size, size) RGB 0-255: overlapping coloured rectangles and discs with noise."""
    generator = torch.Generator().manual_seed(0)
    image = torch.full((3, size, size), 110.0)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(8):
        colour = torch.randint(0, 256, (3, 1), generator=generator).float()
        y, x = torch.randint(0, size, (2,), generator=generator).tolist()
        radius = int(torch.randint(size // 12, size // 4, (1,), generator=generator))
        region = (ys - y) ** 2 + (xs - x) ** 2 < radius ** 2 if torch.rand(1, generator=generator) < 0.5 else \
            ((ys - y).abs() < radius) & ((xs - x).abs() < radius)
        image[:, region] = colour
    return (image + 6 * torch.randn(image.shape, generator=generator)).clamp(0, 255)


def build_model(dino_path: str, opts=()):
    from detectron2.modeling import build_model as d2_build_model

    from zsmask.engine import build_config

    cfg = build_config(os.path.join(ROOT, "configs", "voc", "sazs.yaml"), [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.PROMPT_TEMPLATE_SET",
        "single", "MODEL.SAZS.SEMANTIC_FEATURES.WEIGHTS", dino_path, "MODEL.SAZS.BOUNDARY.SHAPE_WEIGHT", "0.0",
        *opts])
    return d2_build_model(cfg).eval()


def fusion_stages(fusion, sem_seg: torch.Tensor, image: torch.Tensor, runs: int) -> dict:
    """Seconds of each stage of ``fusion`` (an EigensegmentFusion) on one image."""
    from zsmask.modeling.post_processing import fuse_segments, laplacian_eigenvectors, working_size

    segmenter = fusion.eigensegments
    size = working_size(tuple(image.shape[-2:]), segmenter.resolution)
    stages = {}
    if segmenter.semantic_features is not None:
        stages["semantic features (ViT keys)"] = _median_seconds(lambda: segmenter.semantic_features(image), runs)
    stages["affinity Z (Eqs. 4-6)"] = _median_seconds(lambda: segmenter.affinity(image, size), runs) - \
        stages.get("semantic features (ViT keys)", 0.0)
    affinity = segmenter.affinity(image, size)
    stages["eigenvectors (K = 5)"] = _median_seconds(
        lambda: laplacian_eigenvectors(affinity, segmenter.num_eigenvectors), runs)
    vectors = segmenter.eigenvectors(image)
    stages["k-means + assignment"] = _median_seconds(
        lambda: segmenter.discretise(vectors, tuple(sem_seg.shape[-2:])), runs)
    stages["eigensegments in all"] = _median_seconds(lambda: segmenter(image, tuple(sem_seg.shape[-2:])), runs)
    segments = segmenter(image, tuple(sem_seg.shape[-2:]))
    stages["Eq. 7 fusion"] = _median_seconds(lambda: fuse_segments(sem_seg, segments, fusion.min_coverage), runs)
    stages["fusion in all"] = _median_seconds(lambda: fusion(sem_seg, image), runs)
    return stages


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm
    from tabulate import tabulate

    import zsmask.data  # noqa: F401  (VOC metadata)

    with tempfile.TemporaryDirectory() as folder:
        dino_path = os.path.join(folder, "dino_vits16_random.pth")
        torch.manual_seed(0)
        torch.save(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).state_dict(), dino_path)
        model = build_model(dino_path)
        (fusion,) = model.post_processors
        image = _scene(args.size)
        inputs = [{"image": image.byte(), "height": args.size, "width": args.size, "dataset_name": "voc_zs_test"}]
        with torch.no_grad():
            with_fusion = _median_seconds(lambda: model(inputs), args.runs)
            model.post_processors = []
            plain = _median_seconds(lambda: model(inputs), args.runs)
            sem_seg = model(inputs)[0]["sem_seg"]
            stages = fusion_stages(fusion, sem_seg, image, args.runs)
            variants = {}
            for label, opts in (("no Z_sem (Z_shape alone)", ["MODEL.SAZS.SPECTRAL.SEMANTIC_WEIGHT", "0.0"]),
                                ("working grid 32", ["MODEL.SAZS.SPECTRAL.RESOLUTION", "32"]),
                                ("working grid 96", ["MODEL.SAZS.SPECTRAL.RESOLUTION", "96"])):
                (variant,) = build_model(dino_path, opts).post_processors
                variants[label] = _median_seconds(lambda: variant(sem_seg, image), args.runs)

    rows = [["model inference without fusion (reference)", f"{plain:.3f}", "", ""]]
    for name, seconds in stages.items():
        rows.append([f"  fusion: {name}", f"{seconds:.3f}", f"{100 * seconds / with_fusion:.1f}%", ""])
    rows.append(["model inference with fusion", f"{with_fusion:.3f}", "100.0%", f"{with_fusion / plain:.2f}x"])
    for label, seconds in variants.items():
        rows.append([f"  fusion, {label}", f"{seconds:.3f}", f"{100 * seconds / (plain + seconds):.1f}%", ""])
    print(f"SAZS fusion at {args.size}x{args.size} on CPU ({torch.get_num_threads()} threads), median of "
          f"{args.runs}; working grid {fusion.eigensegments.resolution}, K = {fusion.eigensegments.num_eigenvectors}")
    print(tabulate(rows, headers=["stage", "s / image", "share of inference with fusion", "vs reference"],
                   tablefmt="github"))
    share = stages["fusion in all"] / with_fusion
    print(f"\nfusion: {stages['fusion in all']:.3f} s per image, {100 * share:.1f}% of the inference time "
          f"({with_fusion:.3f} s with it, {plain:.3f} s without)")


if __name__ == "__main__":
    main()
