#!/usr/bin/env python
"""Evaluate one trained model on several test sets in one run and print one table.

    python tools/evaluate.py --config-file configs/coco/zsmask_ov.yaml --weights model_final.pth \\
        --datasets ade20k_847_test pcontext_459_test ade20k_150_test pcontext_59_test voc_20_test voc_21_test \\
        --output results/ov [--absent-classes exclude|count_predicted] [--sliding-window] [KEY VALUE ...]

Every set is evaluated with its own vocabulary (its registered class names). The table (also
written as ``<output>/open_vocabulary.{md,json}``) has one row per set: mIoU, pAcc, and mIoU(S),
mIoU(U), hIoU where the set has a seen / unseen split, then the published mIoU of the peers
with the same CLIP (``zsmask.evaluation.published``), marked ``*`` when computed under the
other absent-class convention. Trailing ``KEY VALUE`` pairs override the config.
"""
import argparse
import logging
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", help="model weights (default: the config's MODEL.WEIGHTS)")
    parser.add_argument("--datasets", nargs="+", required=True, help="registered test sets, each with its vocabulary")
    parser.add_argument("--output", default="results/open_vocabulary", help="folder of the table and JSON")
    parser.add_argument("--absent-classes", choices=["exclude", "count_predicted"],
                        help="which classes enter the means (default: the config's TEST.ZERO_SHOT.ABSENT_CLASSES)")
    parser.add_argument("--sliding-window", action="store_true", help="TEST.SLIDING_WINDOW.ENABLED True")
    parser.add_argument("--window-size", type=int, help="TEST.SLIDING_WINDOW.SIZE")
    parser.add_argument("--window-stride", type=int, help="TEST.SLIDING_WINDOW.STRIDE")
    parser.add_argument("--device", help="cpu or cuda[:k] (default: cuda when available)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)

    from detectron2.utils.logger import setup_logger

    from zsmask.engine import load_inference_model
    from zsmask.evaluation.suite import check_datasets, evaluate_suite, format_suite_table, write_suite

    opts = list(args.opts)
    if args.absent_classes:
        opts += ["TEST.ZERO_SHOT.ABSENT_CLASSES", args.absent_classes]
    if args.sliding_window:
        opts += ["TEST.SLIDING_WINDOW.ENABLED", "True"]
    for key, value in (("SIZE", args.window_size), ("STRIDE", args.window_stride)):
        if value is not None:
            opts += [f"TEST.SLIDING_WINDOW.{key}", str(value)]
    opts += ["OUTPUT_DIR", args.output]
    if not logging.getLogger("detectron2").handlers:
        setup_logger(name="detectron2")
    try:
        import zsmask.data  # noqa: F401  (registers the built-in sets)

        check_datasets(args.datasets, load=True)  # registered and on disk, before the model is built
        model, cfg = load_inference_model(args.config_file, args.weights, args.device, opts)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = evaluate_suite(cfg, model, args.datasets)
    absent = cfg.TEST.ZERO_SHOT.ABSENT_CLASSES
    clip_name = cfg.MODEL.CLIP.MODEL_NAME
    print(format_suite_table(results, clip_name, absent))
    paths = write_suite(results, args.output, clip_name, absent, extra={
        "config": os.path.abspath(args.config_file), "weights": cfg.MODEL.WEIGHTS,
        "sliding_window": dict(cfg.TEST.SLIDING_WINDOW)})
    print(f"wrote {paths['md']} and {paths['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
