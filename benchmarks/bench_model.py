#!/usr/bin/env python
"""Full-model forward at 512x512 on CPU: zsmask's ZeroShotMaskFormer vs Mask2Former (peer).

Both models are the standard configuration: ResNet-50, MSDeformAttn pixel decoder with 6
encoder layers over 3 levels, 9 masked-attention decoder layers, 100 queries. zsmask
classifies against the 171 COCO-Stuff class names through CLIP ViT-B/16 text embeddings
(random-init weights, which do not change the cost; one prompt template, so that encoding the
vocabulary once does not dominate the memory peak), Mask2Former with a 171-way linear layer. Inference (eval mode, ``torch.no_grad``), batch 1, identical input image.
Seconds per image: median of ``--runs`` after one warm-up call (which also fills zsmask's
text-embedding cache). Peak memory: each model is measured again in a fresh process, as the
growth of its peak resident set during the forward calls over the resident set after build.

    .venv/bin/python scripts/install_benchmark_peers.py   # once, for the peer
    .venv/bin/python benchmarks/bench_model.py [--runs 3] [--size 512]
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: per address space, so a spawned process does not
    inherit its parent's peak the way ``ru_maxrss`` does)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_zsmask():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import zsmask.data  # noqa: F401
    import zsmask.modeling  # noqa: F401
    from zsmask.config import add_zsmask_config

    cfg = add_zsmask_config(get_cfg())
    cfg.merge_from_file(os.path.join(ROOT, "configs", "coco", "hungarian.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.CLIP.PRETRAINED", "",
                         "MODEL.CLIP.PROMPT_TEMPLATE_SET", "single"])
    model = build_model(cfg).eval()
    return model, {"dataset_name": "coco_stuff_zs_test"}


def build_mask2former():
    from peers import load_peer_module, peer_root  # noqa: F401  (registers the op stand-in)

    load_peer_module("modeling/pixel_decoder/ops/functions/ms_deform_attn_func.py", "_peer_msda_probe")
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config
    from mask2former import add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        "MODEL.META_ARCHITECTURE", "MaskFormer",
        "MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.FREEZE_AT", "0",
        "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_TYPE", "basic", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
        "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
        "MODEL.PIXEL_MEAN", "[123.675, 116.280, 103.530]", "MODEL.PIXEL_STD", "[58.395, 57.120, 57.375]",
        "MODEL.SEM_SEG_HEAD.NAME", "MaskFormerHead", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "171",
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "255", "MODEL.SEM_SEG_HEAD.NORM", "GN",
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", "256", "MODEL.SEM_SEG_HEAD.MASK_DIM", "256",  # detectron2 defaults CONVS_DIM to 128
        "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']",
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "MSDeformAttnPixelDecoder",
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", "['res3', 'res4', 'res5']",
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", "4", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "6",
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "MultiScaleMaskedTransformerDecoder",
        "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "multi_scale_pixel_decoder",
        "MODEL.MASK_FORMER.DEC_LAYERS", "10",  # Mask2Former counts the query-only prediction: 9 layers
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "100", "MODEL.MASK_FORMER.SIZE_DIVISIBILITY", "32",
    ])
    # maskformer2 0.1's MaskFormer.from_config calls its SetCriterion with an outdated signature
    # (the sdist is internally inconsistent), so the inference model is assembled from its parts;
    # the criterion is not used at inference.
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_backbone, build_sem_seg_head
    from mask2former.maskformer_model import MaskFormer

    backbone = build_backbone(cfg)
    model = MaskFormer(
        backbone=backbone, sem_seg_head=build_sem_seg_head(cfg, backbone.output_shape()), criterion=None,
        num_queries=100, object_mask_threshold=0.0, overlap_threshold=0.0,
        metadata=MetadataCatalog.get("coco_stuff_zs_test"), size_divisibility=32,
        sem_seg_postprocess_before_inference=False, pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD, semantic_on=True, panoptic_on=False, instance_on=False,
        test_topk_per_image=100,
    )
    return model.eval(), {}


BUILDERS = {"zsmask ZeroShotMaskFormer": build_zsmask, "Mask2Former (maskformer2 0.1)": build_mask2former}


def _inputs(size: int, extra: dict):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    return [dict(image=image, height=size, width=size, **extra)]


def time_model(name: str, size: int, runs: int):
    model, extra = BUILDERS[name]()
    inputs = _inputs(size, extra)
    with torch.no_grad():
        model(inputs)  # warm-up (and zsmask's text-embedding cache)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = model(inputs)
            times.append(time.perf_counter() - start)
    return statistics.median(times), tuple(out[0]["sem_seg"].shape)


def _memory_worker(name: str, size: int, queue):
    torch.manual_seed(0)
    model, extra = BUILDERS[name]()
    inputs = _inputs(size, extra)
    with torch.no_grad():
        # a small call first: fills zsmask's text-embedding cache (and lazy allocations of both)
        model([dict(inputs[0], image=inputs[0]["image"][:, :64, :64], height=64, width=64)])
        after_build = _rss_mib()
        model(inputs)
        model(inputs)
    queue.put({"after_build": after_build, "peak": _peak_rss_mib()})


def memory_model(name: str, size: int):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(name, size, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-peer", action="store_true", help="only zsmask (no maskformer2 installed)")
    args = parser.parse_args()
    names = list(BUILDERS)[:1] if args.skip_peer else list(BUILDERS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, input {args.size}x{args.size}, batch 1")
    rows = []
    for name in names:
        seconds, shape = time_model(name, args.size, args.runs)
        mem = memory_model(name, args.size)
        rows.append((name, seconds, shape, mem))
    print("\n| model | output | s / image | RSS after build (MiB) | peak RSS in forward (MiB) | forward growth (MiB) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, seconds, shape, mem in rows:
        print(f"| {name} | {shape} | {seconds:.3f} | {mem['after_build']:.0f} | {mem['peak']:.0f} | "
              f"{mem['peak'] - mem['after_build']:.0f} |")
    if len(rows) == 2:
        print(f"\ntime ratio zsmask / Mask2Former: {rows[0][1] / rows[1][1]:.2f}")
    print(json.dumps({name: {"seconds_per_image": s, **m} for name, s, _, m in rows}))


if __name__ == "__main__":
    main()
