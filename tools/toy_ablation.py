#!/usr/bin/env python
"""Ablation on the toy world: every toy config, one fixed budget, several seeds, one table.

    python tools/toy_ablation.py [--configs configs/toy/hungarian.yaml ...] [--seeds 0 1 2] [--max-iter 600]
        [--eval-variant NAME METHOD KEY VALUE ...]

Each (config, seed) trains from scratch on ``toy_world_train`` (seen labels only) for the same
number of iterations and batch size, then is evaluated on ``toy_world_test`` (GZS3). The table
reports mean +- standard deviation over seeds of mIoU(S), mIoU(U), hIoU and training time; raw
numbers go to ``<output-dir>/ablation.json`` and the table to ``<output-dir>/ablation.md``.
The toy world and the budget are fixed before any method is run and are the same for all of
them: nothing here is tuned per method. By default every ``configs/toy/*.yaml`` except the
``Base-*`` files is run. Trailing ``KEY VALUE`` pairs override every config.

``--eval-variant NAME METHOD KEY VALUE ...`` adds a row NAME that re-evaluates the models METHOD
trained (one per seed) with inference-only overrides, e.g. Split Matching's random queries:
``--eval-variant sm_mfe_rq sm_mfe MODEL.ZSMASK.RANDOM_QUERIES.NUM 8`` (its train time is METHOD's).
"""
import argparse
import glob
import json
import logging
import os
import re
import subprocess
import sys
import warnings
import time

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import numpy as np
import torch
from tabulate import tabulate

import zsmask.data  # noqa: F401  (registers toy_world_*)
from zsmask.engine import build_config
from zsmask.toy import prepare_toy_world
from zsmask.utils import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = (("mIoU_seen", "mIoU(S)"), ("mIoU_unseen", "mIoU(U)"), ("hIoU", "hIoU"))


def _say(text: str) -> None:
    print(text, flush=True)


def default_configs():
    return sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "toy", "*.yaml"))
                  if not os.path.basename(p).startswith("Base-"))


def run_one(config_file: str, seed: int, max_iter: int, output_dir: str, device: str, opts,
            eval_weights: str = "") -> dict:
    """Train + evaluate one config with one seed in its own ``train_net.py`` process (log in
    ``<output_dir>/log.txt``); return its GZS3 metrics and training time. With ``eval_weights``
    only evaluate those weights (the training time is then read from their folder's log)."""
    os.makedirs(output_dir, exist_ok=True)
    command = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", config_file,
               "SEED", str(seed), "SOLVER.MAX_ITER", str(max_iter), "OUTPUT_DIR", output_dir,
               "MODEL.DEVICE", device, "TEST.ZERO_SHOT.EVAL_ZS3", "False"] + list(opts)
    if eval_weights:
        command[2:2] = ["--eval-only"]
        command += ["MODEL.WEIGHTS", eval_weights]
    start = time.monotonic()
    with open(os.path.join(output_dir, "log.txt"), "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.monotonic() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {code}); see {output_dir}/log.txt")
    cfg = build_config(config_file, ["OUTPUT_DIR", output_dir] + list(opts))
    test_set = cfg.DATASETS.TEST[0]
    with open(os.path.join(output_dir, "inference", f"zero_shot_sem_seg_{test_set}.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    log_dir = os.path.dirname(eval_weights) if eval_weights else output_dir
    with open(os.path.join(log_dir, "log.txt"), encoding="utf-8") as f:
        speed = re.search(r"Overall training speed: \d+ iterations in (\d+):(\d+):(\d+)", f.read())
    seconds = 3600 * int(speed[1]) + 60 * int(speed[2]) + int(speed[3]) if speed else wall
    return dict({k: float(metrics[k]) for k, _ in METRICS}, train_seconds=float(seconds), wall_seconds=wall)


def summarise(runs: dict) -> str:
    """Markdown table: one row per method, ``mean ± std`` over its seeds."""
    rows = []
    for method, per_seed in runs.items():
        row = [method, len(per_seed)]
        for key, _ in METRICS + (("train_seconds", ""),):
            values = np.array([r[key] for r in per_seed.values()])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            if key == "train_seconds":
                row.append(f"{Progress.format_seconds(values.mean())} ± {Progress.format_seconds(spread)}")
            else:
                row.append(f"{values.mean():.2f} ± {spread:.2f}")
        rows.append(row)
    headers = ["method", "seeds"] + [name for _, name in METRICS] + ["train time"]
    return tabulate(rows, headers=headers, tablefmt="github")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=default_configs(), help="toy configs (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-iter", type=int, default=600, help="iterations per run, the same for every method")
    parser.add_argument("--output-dir", default="output/toy_ablation")
    parser.add_argument("--eval-variant", nargs="+", action="append", default=[], metavar="NAME METHOD KEY VALUE",
                        help="also evaluate METHOD's trained models with inference-only overrides, as row NAME")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every config: KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)  # open_clip's INFO chatter on the root logger
    prepare_toy_world(print_fn=_say)
    os.makedirs(args.output_dir, exist_ok=True)
    for variant in args.eval_variant:
        if len(variant) < 2 or len(variant) % 2:
            parser.error(f"--eval-variant needs NAME METHOD and KEY VALUE pairs, got {variant}")
    runs = {}
    total = (len(args.configs) + len(args.eval_variant)) * len(args.seeds)
    done = 0
    progress = Progress("toy ablation", total, every_s=0, print_fn=_say)
    for config_file in args.configs:
        method = os.path.splitext(os.path.basename(config_file))[0]
        runs[method] = {}
        for seed in args.seeds:
            out = os.path.join(args.output_dir, method, f"seed{seed}")
            result = run_one(config_file, seed, args.max_iter, out, args.device, args.opts)
            runs[method][seed] = result
            done += 1
            progress.update(done, f"{method} seed {seed}: " + ", ".join(
                f"{name} {result[key]:.2f}" for key, name in METRICS) + f", {result['train_seconds']:.0f}s")
    configs = {os.path.splitext(os.path.basename(c))[0]: c for c in args.configs}
    for name, method, *overrides in args.eval_variant:
        if method not in configs:
            parser.error(f"--eval-variant {name}: {method!r} is not one of the trained methods {sorted(configs)}")
        runs[name] = {}
        for seed in args.seeds:
            trained = os.path.join(args.output_dir, method, f"seed{seed}")
            out = os.path.join(args.output_dir, name, f"seed{seed}")
            result = run_one(configs[method], seed, args.max_iter, out, args.device, list(args.opts) + overrides,
                             eval_weights=os.path.join(trained, "model_final.pth"))
            runs[name][seed] = result
            done += 1
            progress.update(done, f"{name} seed {seed}: " + ", ".join(
                f"{n} {result[key]:.2f}" for key, n in METRICS))
    table = summarise(runs)
    header = (f"Toy-world ablation: {args.max_iter} iterations at each config's batch size, seeds {args.seeds}, "
              f"GZS3 on toy_world_test (mean ± std over seeds)")
    with open(os.path.join(args.output_dir, "ablation.json"), "w", encoding="utf-8") as f:
        json.dump({"max_iter": args.max_iter, "seeds": args.seeds, "device": args.device, "runs": runs}, f, indent=1)
    with open(os.path.join(args.output_dir, "ablation.md"), "w", encoding="utf-8") as f:
        f.write(header + "\n\n" + table + "\n")
    _say("\n" + header + "\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
