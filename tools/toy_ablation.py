#!/usr/bin/env python
"""Ablation on the toy world: every toy config, one fixed budget, several seeds, one table.

    python tools/toy_ablation.py [--configs configs/toy/hungarian.yaml ...] [--seeds 0 1 2 3 4] [--max-iter 600]
        [--baseline hungarian] [--seed-offset-row NAME METHOD OFFSET] [--eval-variant NAME METHOD KEY VALUE ...]
        [--name NAME]
        [--results-dir results/toy_ablation]

The defaults are the toy protocol (docs/toy_world.md, "Protocol and its resolution"): seeds 0-4, 600
iterations. Each (config, seed) trains from scratch on ``toy_world_train`` (seen labels only) for the same
number of iterations and batch size, then is evaluated on ``toy_world_test`` (GZS3). The table
reports mean +- standard deviation over seeds of mIoU(S), mIoU(U), hIoU and training time;
with ``--baseline NAME`` also, per row, the **paired** mean difference to that row over the same
seeds with its 95% t-interval (:func:`zsmask.evaluation.paired_difference`), and a second table
holds the per-class IoU of the unseen classes, a third the evaluation diagnostics (where unseen
pixels go, boundary F-score, class-indicator AUROC; :mod:`zsmask.evaluation.diagnostics`). Raw numbers and the tables go to
``<results-dir>/<name>.json`` and ``<name>.md`` (committed where they back a table in docs/).

Resumable: each finished run leaves ``result.json`` in its folder under ``--output-dir`` and a
copy in the run store ``<results-dir>/runs/<row>/seed<k>.json`` (``<row>/pipeline<n>/seed<k>.json``
for training pipelines after the first; with its per-image confusion matrices beside it, ``.npz``), keyed by a hash of its full config without ``OUTPUT_DIR`` (and, for evaluation
variants, of the trained run's key), so a row can be renamed; a rerun reads either back instead of training again, so a long
ablation spans sessions once the store is committed. A changed config, budget or override reruns
only the runs it touches. An evaluation variant whose trained weights are gone (a fresh
checkout) retrains its method's seed first.

``--jobs 2 --threads 1`` runs two trainings at once, one thread each: about 1.4x the throughput
of one two-thread training on 2 cores, but their train times are then not measurements of one
training alone (the table says so).

The toy world and the budget are fixed before any method is run and are the same for all of
them: nothing here is tuned per method. By default every ``configs/toy/*.yaml`` except the
``Base-*`` files is run. Trailing ``KEY VALUE`` pairs override every config; they follow ``--``
when the option before them takes a list (``--seeds 0 1 -- SOLVER.IMS_PER_BATCH 8``).

``--seed-offset-row NAME METHOD OFFSET`` adds a row NAME that trains METHOD's config with seeds
shifted by OFFSET, paired seed by seed with METHOD's row: the A/A control, whose paired interval
is the protocol's resolution and must contain 0 (``--seed-offset-row hungarian_aa hungarian 1000``).
Every run's evaluation also gives the bootstrap standard error of its metrics over test images
(``hIoU eval SE``): the evaluation's share of the noise, apart from the training seed's.

``--eval-variant NAME METHOD KEY VALUE ...`` adds a row NAME that re-evaluates the models METHOD
trained (one per seed) with inference-only overrides, e.g. Split Matching's random queries:
``--eval-variant sm_mfe_rq sm_mfe MODEL.ZSMASK.RANDOM_QUERIES.NUM 8`` (its train time is METHOD's).
"""
import argparse
import concurrent.futures
import functools
import glob
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import warnings
import time

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import numpy as np
import torch
from tabulate import tabulate

import zsmask.data  # noqa: F401  (registers toy_world_*)
from detectron2.data import MetadataCatalog

from zsmask.engine import build_config
from zsmask.evaluation import paired_difference, seeds_for_half_width, zero_shot_metrics
from zsmask.evaluation.diagnostics import paired_bootstrap_standard_errors
from zsmask.toy import prepare_toy_world
from zsmask.utils import Progress, atomic_write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = (("mIoU_seen", "mIoU(S)"), ("mIoU_unseen", "mIoU(U)"), ("hIoU", "hIoU"))
# Evaluation diagnostics (zsmask.evaluation.diagnostics), in percent; absent ones are None.
DIAGNOSTICS = (
    ("unseen_as_right_unseen", "U px right"),
    ("unseen_as_other_unseen", "U px other U"),
    ("unseen_as_seen", "U px as seen"),
    ("unseen_as_no_class", "U px no class"),
    ("boundary_F", "boundary F"),
    ("indicator_AUROC_matched", "indicator AUROC (IoU>=0.5)"),
    ("indicator_AUROC_rest", "indicator AUROC (rest)"),
)


def _say(text: str) -> None:
    print(text, flush=True)


def default_configs():
    return sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "toy", "*.yaml"))
                  if not os.path.basename(p).startswith("Base-"))


def _command(config_file, seed, max_iter, output_dir, device, opts, eval_weights):
    overrides = ["SEED", str(seed), "SOLVER.MAX_ITER", str(max_iter), "OUTPUT_DIR", output_dir,
                 "MODEL.DEVICE", device, "TEST.ZERO_SHOT.EVAL_ZS3", "False",
                 "TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS", "True", "TEST.ZERO_SHOT.BOOTSTRAP", "200"] + list(opts)
    if eval_weights:
        overrides += ["MODEL.WEIGHTS", eval_weights]
    command = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", config_file] + overrides
    if eval_weights:
        command[2:2] = ["--eval-only"]
    return command, overrides


# Config keys added after runs were stored, each with the value that behaves as the code did
# before the key existed. A config holding such a key at that value hashes as it did without it,
# so adding a switch does not retrain the stored runs; any other value changes the key.
NEUTRAL_ADDITIONS = {
    "MODEL.ALIGNZEG.PBC.NEGATIVES": "top_k",
    "MODEL.ALIGNZEG.PBC.NEGATIVE_MIN_UNANNOTATED": 0.5,
    "TEST.ZERO_SHOT.ABSENT_CLASSES": "exclude",  # every toy class occurs in the test scenes: no effect
    "TEST.SLIDING_WINDOW.ENABLED": False,
    "TEST.SLIDING_WINDOW.SIZE": 384,
    "TEST.SLIDING_WINDOW.STRIDE": 256,
    "DATALOADER.MAX_BAD_SAMPLES": 10,  # the toy world has no unreadable file
    "MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_ATTENTION_LAYERS": 3,  # read by "cls_attention" only
}


def _without_neutral_additions(cfg):
    """A copy of ``cfg`` without the :data:`NEUTRAL_ADDITIONS` keys that hold their neutral value
    (a config node left empty by that goes too: it did not exist before either)."""
    cfg = cfg.clone()
    cfg.defrost()
    for dotted, neutral in NEUTRAL_ADDITIONS.items():
        *parents, leaf = dotted.split(".")
        path = [cfg]
        for name in parents:
            path.append(path[-1].get(name) if path[-1] is not None else None)
        node = path[-1]
        if node is not None and leaf in node and node[leaf] == neutral:
            del node[leaf]
            for parent, name in zip(reversed(path[:-1]), reversed(parents)):
                if parent[name]:
                    break
                del parent[name]
    return cfg


# The training pipeline a result also depends on, beyond the config: 1 = detectron2's
# TrainingSampler stream, which trained every run stored before zsmask's positional stream
# (zsmask/data/resumable_loader.py); 2 = that stream (other samples, other augmentations).
# Results of another pipeline are never read back for this one.
TRAINING_PIPELINE = 2


def run_key(cfg, trained_key: str = "", pipeline: int = TRAINING_PIPELINE) -> str:
    """Hash of everything a run's result depends on: its full merged config ``cfg`` (so edits of
    a base config count; keys in :data:`NEUTRAL_ADDITIONS` at their neutral value left out), the
    training ``pipeline`` and, for an evaluation-only run, the key of the run that trained its
    weights. Where a run writes (``OUTPUT_DIR``) is left out, so a row can be renamed; so are an
    evaluation's ``MODEL.WEIGHTS``, which ``trained_key`` stands for."""
    cfg = _without_neutral_additions(cfg)
    cfg.OUTPUT_DIR = ""
    if trained_key:
        cfg.MODEL.WEIGHTS = ""
    key = legacy_run_key(cfg, trained_key)
    return key if pipeline == 1 else hashlib.sha256(f"{key}:pipeline{pipeline}".encode()).hexdigest()[:16]


def legacy_run_key(cfg, trained_key: str = "") -> str:
    """The key of runs stored before :func:`run_key` left out the output folder: a hash of the
    config as given. A stored run with this key is read back and re-stored under its new key."""
    digest = hashlib.sha256(_without_neutral_additions(cfg).dump().encode())
    if trained_key:
        digest.update(trained_key.encode())
    return digest.hexdigest()[:16]


class RunStore:
    """Finished runs kept in the results folder, so that they outlive the run folders:
    ``<root>/<row>/seed<k>.json`` (``{"key", "result"}``) and ``seed<k>.npz`` (the per-image
    confusion matrices as int32, zlib-compressed); runs of a later training ``pipeline`` n in
    ``<root>/<row>/pipeline<n>/``, so they never replace the records that committed tables of an
    earlier pipeline point to. Paths inside results are repository-relative."""

    def __init__(self, root: str, pipeline: int = TRAINING_PIPELINE):
        self.root = root
        self.pipeline = pipeline

    def _paths(self, row: str, seed: int):
        folder = os.path.join(self.root, row) if self.pipeline == 1 else os.path.join(self.root, row,
                                                                                     f"pipeline{self.pipeline}")
        base = os.path.join(folder, f"seed{seed}")
        return base + ".json", base + ".npz"

    def get(self, row: str, seed: int, key: str, legacy: str = ""):
        """The stored result of (row, seed) if it was made with ``key`` (or ``legacy``, its key
        before the key's definition changed: the record is then rewritten with ``key``), else None."""
        record, matrices = self._paths(row, seed)
        saved_key, found = _read_record(record)
        if saved_key not in {key, legacy or key}:
            return None
        if saved_key != key:
            atomic_write_text(record, json.dumps({"key": key, "result": found}, indent=1))
        return dict(found, per_image_confusion=_relative(matrices) if os.path.isfile(matrices) else None)

    def put(self, row: str, seed: int, key: str, result: dict) -> dict:
        """Store ``result`` (and a copy of its per-image matrices); returns it pointing at the copy."""
        record, matrices = self._paths(row, seed)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        loaded = _load_per_image(result)
        if loaded is not None:
            partial = matrices + ".partial.npz"
            np.savez_compressed(partial, confusion=loaded[0].astype(np.int32), file_names=np.array(loaded[1]))
            os.replace(partial, matrices)
        result = dict(result, per_image_confusion=_relative(matrices) if loaded is not None else None)
        atomic_write_text(record, json.dumps({"key": key, "result": result}, indent=1))
        return result


def read_finished(path: str, key: str, legacy: str = ""):
    """The result a previous run with this ``key`` (or the ``legacy`` one) left in ``path`` (a
    ``result.json`` file, or the run folder holding one), or None."""
    if os.path.isdir(path) or not path.endswith(".json"):
        path = os.path.join(path, "result.json")
    saved_key, result = _read_record(path)
    return result if saved_key in {key, legacy or key} else None


def _read_record(path: str):
    """``(key, result)`` of a run record (``{"key", "result"}`` JSON), or ``(None, None)`` when unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None, None
    return saved.get("key"), saved.get("result")


def _relative(path: str) -> str:
    """``path`` relative to the repository when inside it (results files stay machine-neutral)."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def _load_per_image(result: dict):
    """The run's per-image confusion matrices ``(N, C + 1, C + 1)`` and file names, or None."""
    path = result.get("per_image_confusion")
    if not path:
        return None
    path = path if os.path.isabs(path) else os.path.join(ROOT, path)
    if not os.path.isfile(path):
        return None
    with np.load(path) as saved:
        return saved["confusion"], list(saved["file_names"])


def paired_eval_se(a: dict, b: dict, metric_fn, metric: str = "hIoU"):
    """Bootstrap standard error over test images of ``metric`` of run ``a`` minus run ``b`` on
    the same images (:func:`~zsmask.evaluation.diagnostics.paired_bootstrap_standard_errors`),
    or None when either run's per-image matrices are missing."""
    loaded_a, loaded_b = _load_per_image(a), _load_per_image(b)
    if loaded_a is None or loaded_b is None:
        return None
    if loaded_a[1] != loaded_b[1]:
        raise ValueError("the two runs were evaluated on different images; their difference cannot be paired")
    return paired_bootstrap_standard_errors(loaded_a[0], loaded_b[0], metric_fn, [metric])[metric]


def _planned(config_file, seed, max_iter, output_dir, device, opts, eval_weights="", trained_key="",
             trained_legacy=""):
    """The ``train_net.py`` command of a run, its merged config, its key and its legacy key (an
    evaluation's made with the trained run's legacy key ``trained_legacy``)."""
    command, overrides = _command(config_file, seed, max_iter, output_dir, device, opts, eval_weights)
    cfg = build_config(config_file, overrides)
    legacy = legacy_run_key(cfg, trained_legacy or trained_key) if TRAINING_PIPELINE == 1 else ""
    return command, cfg, run_key(cfg, trained_key), legacy


def per_image_path(output_dir: str, cfg) -> str:
    """Where the evaluator saves a run's per-image confusion matrices (``TEST.ZERO_SHOT.BOOTSTRAP``)."""
    return os.path.join(output_dir, "inference", f"per_image_confusion_{cfg.DATASETS.TEST[0]}.npz")


def find_finished(output_dir: str, key: str, per_image: str, store=None, row: str = "", seed: int = 0,
                  legacy: str = ""):
    """A finished run's result: from ``output_dir/result.json`` (copied into ``store`` if missing
    there, or if only the folder has its ``per_image`` matrices, which may postdate the run) or
    from ``store``, as the store holds it; None when neither holds one made with ``key`` (or its
    ``legacy`` key, see :meth:`RunStore.get`)."""
    finished = read_finished(output_dir, key, legacy)
    if finished is not None:
        finished = dict(finished, per_image_confusion=_relative(per_image) if os.path.isfile(per_image) else None)
        if store is None:
            return finished
        stored = store.get(row, seed, key, legacy)
        if stored is None or (stored["per_image_confusion"] is None and finished["per_image_confusion"]):
            stored = store.put(row, seed, key, finished)
        return stored
    return store.get(row, seed, key, legacy) if store is not None else None


def run_one(config_file: str, seed: int, max_iter: int, output_dir: str, device: str, opts,
            eval_weights: str = "", trained_key: str = "", before_training=None, store=None, row: str = "",
            threads: int = 0, force: bool = False, trained_legacy: str = "") -> dict:
    """Train + evaluate one config with one seed in its own ``train_net.py`` process (log in
    ``<output_dir>/log.txt``); return its GZS3 metrics, the IoU per class, the training time and
    the run's ``key`` and ``legacy_key``. With ``eval_weights`` only evaluate those weights, trained
    by the run whose keys are ``trained_key`` and ``trained_legacy`` (the training time is then read from their folder's log). A finished
    run with the same key, in ``output_dir`` or in ``store`` under (``row``, ``seed``), is read
    back, not rerun (``reused`` True); otherwise ``before_training()`` is called first, when
    given. ``threads`` > 0 sets the subprocess's torch / OpenMP threads; ``force`` reruns a
    finished run (to remake its weights)."""
    command, cfg, key, legacy = _planned(config_file, seed, max_iter, output_dir, device, opts, eval_weights,
                                         trained_key, trained_legacy)
    per_image = per_image_path(output_dir, cfg)
    per_image_entry = lambda: _relative(per_image) if os.path.isfile(per_image) else None  # noqa: E731
    if not force:
        finished = find_finished(output_dir, key, per_image, store, row, seed, legacy)
        if finished is not None:
            return dict(finished, key=key, legacy_key=legacy, reused=True)
    if before_training is not None:
        before_training()
    os.makedirs(output_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)) if threads else None
    start = time.monotonic()
    with open(os.path.join(output_dir, "log.txt"), "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    wall = time.monotonic() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {code}); see {output_dir}/log.txt")
    test_set = cfg.DATASETS.TEST[0]
    with open(os.path.join(output_dir, "inference", f"zero_shot_sem_seg_{test_set}.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    log_dir = os.path.dirname(eval_weights) if eval_weights else output_dir
    with open(os.path.join(log_dir, "log.txt"), encoding="utf-8") as f:
        speed = re.search(r"Overall training speed: \d+ iterations in (\d+):(\d+):(\d+)", f.read())
    seconds = 3600 * int(speed[1]) + 60 * int(speed[2]) + int(speed[3]) if speed else wall
    per_class = {name[len("IoU-"):]: value for name, value in metrics.items() if name.startswith("IoU-")}
    diagnostics = {k: (None if metrics.get(k) is None else float(metrics[k])) for k, _ in DIAGNOSTICS}
    eval_se = {k: metrics.get(f"{k}_bootstrap_se") for k, _ in METRICS}
    result = dict({k: float(metrics[k]) for k, _ in METRICS}, per_class_iou=per_class, test_set=test_set,
                  train_seconds=float(seconds), wall_seconds=wall, diagnostics=diagnostics, eval_se=eval_se,
                  threads=threads or None, per_image_confusion=per_image_entry())
    atomic_write_text(os.path.join(output_dir, "result.json"), json.dumps({"key": key, "result": result}, indent=1))
    if store is not None:
        result = store.put(row, seed, key, result)
    return dict(result, key=key, legacy_key=legacy, reused=False)


def summarise(runs: dict, baseline: str = None) -> str:
    """Markdown table: one row per method, ``mean ± std`` over its seeds; with ``baseline``, the
    paired difference of each metric to the baseline's row over the shared seeds, with its 95%
    interval (the baseline's own row shows 0)."""
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
        eval_se = [r.get("eval_se", {}).get("hIoU") for r in per_seed.values()]
        row.append(_mean_of(eval_se, digits=2))
        if baseline:
            for key, _ in METRICS:
                row.append(paired_difference({s: r[key] for s, r in per_seed.items()},
                                             {s: r[key] for s, r in runs[baseline].items()}).format())
        rows.append(row)
    headers = ["method", "seeds"] + [name for _, name in METRICS] + ["train time", "hIoU eval SE"]
    if baseline:
        headers += [f"Δ{name} vs {baseline} [95% CI]" for _, name in METRICS]
    return tabulate(rows, headers=headers, tablefmt="github")


def unseen_class_table(runs: dict) -> str:
    """Markdown table of the unseen classes' IoU, mean over seeds, one row per method."""
    test_set = next(iter(next(iter(runs.values())).values()))["test_set"]
    meta = MetadataCatalog.get(test_set)
    unseen = [meta.stuff_classes[i] for i in meta.unseen_classes]
    rows = []
    for method, per_seed in runs.items():
        values = [[r["per_class_iou"].get(name) for r in per_seed.values()] for name in unseen]
        rows.append([method] + [f"{np.mean([v for v in column if v is not None]):.2f}"
                                if any(v is not None for v in column) else "-" for column in values])
    return tabulate(rows, headers=["method"] + unseen, tablefmt="github")


def _mean_of(values, digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.{digits}f}" if values else "-"


def diagnostics_table(runs: dict, baseline: str = None) -> str:
    """Markdown table of the evaluation diagnostics, mean over seeds, one row per method; with
    ``baseline``, also the paired differences to the baseline of the unseen pixels lost to a
    seen class or to no class, and of the boundary F-score."""
    rows, headers = [], ["method"] + [name for _, name in DIAGNOSTICS]
    for method, per_seed in runs.items():
        row = [method] + [_mean_of([r.get("diagnostics", {}).get(k) for r in per_seed.values()])
                          for k, _ in DIAGNOSTICS]
        if baseline:
            for value in (_unseen_lost, lambda r: r.get("diagnostics", {}).get("boundary_F")):
                ours = {s: value(r) for s, r in per_seed.items() if value(r) is not None}
                base = {s: value(r) for s, r in runs[baseline].items() if value(r) is not None}
                row.append(paired_difference(ours, base).format() if len(set(ours) & set(base)) > 1 else "-")
        rows.append(row)
    if baseline:
        headers += [f"Δ(U px as seen + no class) vs {baseline} [95% CI]", f"Δboundary F vs {baseline} [95% CI]"]
    return tabulate(rows, headers=headers, tablefmt="github")


def _unseen_lost(result: dict):
    """Share (%) of unseen ground-truth pixels predicted as a seen class or as no class."""
    values = result.get("diagnostics", {})
    if values.get("unseen_as_seen") is None or values.get("unseen_as_no_class") is None:
        return None
    return values["unseen_as_seen"] + values["unseen_as_no_class"]


def noise_table(runs: dict, baseline: str, metric: str = "hIoU", target: float = 1.5, metric_fn=None) -> str:
    """Markdown table of where ``metric``'s noise comes from, one row per method.

    Per row: its standard deviation over seeds, the root mean square of one evaluation's
    bootstrap standard error over test images (``eval SE``: scene sampling, most of it the
    scenes' own difficulty, which every model on the fixed test set shares). Against
    ``baseline``, over the shared seeds: the correlation of the two rows' per-seed values, the
    standard deviation of the per-seed difference Δ, the 95% half-width it gives, the seeds a
    ``target`` half-width would need at that standard deviation, and with ``metric_fn`` (conf ->
    metrics) and saved per-image matrices the paired bootstrap SE of Δ over test images (what
    more test scenes would remove from sd of Δ) and what is left for training (sqrt(sd^2 - SE^2)).
    """
    rows = []
    base_runs = runs[baseline]
    base = {s: r[metric] for s, r in base_runs.items()}
    for method, per_seed in runs.items():
        values = {s: r[metric] for s, r in per_seed.items()}
        sd = np.std(list(values.values()), ddof=1) if len(values) > 1 else float("nan")
        ses = [r.get("eval_se", {}).get(metric) for r in per_seed.values()]
        ses = [v for v in ses if v is not None]
        row = [method, len(values), f"{sd:.2f}", f"{np.sqrt(np.mean(np.square(ses))):.2f}" if ses else "-"]
        shared = sorted(set(values) & set(base))
        if method != baseline and len(shared) > 2:
            x, y = np.array([values[s] for s in shared]), np.array([base[s] for s in shared])
            sd_d = float(np.std(x - y, ddof=1))
            row += [f"{np.corrcoef(x, y)[0, 1]:+.2f}", f"{sd_d:.2f}",
                    f"{paired_difference(values, base).half_width:.2f}", seeds_for_half_width(sd_d, target)]
            pair_se = [paired_eval_se(per_seed[s], base_runs[s], metric_fn, metric) for s in shared] if metric_fn else []
            if pair_se and all(v is not None for v in pair_se):
                se_d = float(np.sqrt(np.mean(np.square(pair_se))))
                row += [f"{se_d:.2f}", f"{np.sqrt(max(sd_d ** 2 - se_d ** 2, 0.0)):.2f}"]
            else:
                row += ["-"] * 2
        else:
            row += ["-"] * 6
        rows.append(row)
    headers = ["method", "seeds", f"{metric} sd", "eval SE", f"corr with {baseline}", "sd of Δ",
               "95% half-width", f"seeds for ±{target}", "eval SE of Δ", "training sd of Δ"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _diagnostics_line(result: dict) -> str:
    values = result.get("diagnostics", {})
    return ", ".join(f"{label} {values[k]:.1f}" for k, label in DIAGNOSTICS if values.get(k) is not None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=default_configs(), help="toy configs (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                        help="training seeds (default: the toy protocol's five)")
    parser.add_argument("--max-iter", type=int, default=600, help="iterations per run, the same for every method")
    parser.add_argument("--output-dir", default="output/toy_ablation", help="run folders (logs, weights, result.json)")
    parser.add_argument("--results-dir", default="results/toy_ablation", help="where <name>.json and <name>.md go")
    parser.add_argument("--name", default="ablation", help="file name of the results (default: ablation)")
    parser.add_argument("--baseline", default=None, metavar="NAME",
                        help="a row (method or variant name) to compare every row with: paired differences")
    parser.add_argument("--eval-variant", nargs="+", action="append", default=[], metavar="NAME METHOD KEY VALUE",
                        help="also evaluate METHOD's trained models with inference-only overrides, as row NAME")
    parser.add_argument("--seed-offset-row", nargs=3, action="append", default=[], metavar=("NAME", "METHOD", "OFFSET"),
                        help="also train METHOD with every seed shifted by OFFSET, as row NAME paired seed by seed "
                             "with METHOD's row: an A/A control whose interval must contain 0")
    parser.add_argument("--skip-prepare", action="store_true",
                        help="do not prepare the default toy world and CLIP up front (for runs on another world: "
                             "what a run needs is then made on first load)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1: train times are measurements)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (default 0: torch's choice, all cores)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every config: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:  # "--seeds 0 1 -- KEY VALUE": the separator ends a list option
        args.opts = args.opts[1:]
    logging.getLogger().setLevel(logging.WARNING)  # open_clip's INFO chatter on the root logger
    for variant in args.eval_variant:
        if len(variant) < 2 or len(variant) % 2:
            parser.error(f"--eval-variant needs NAME METHOD and KEY VALUE pairs, got {variant}")
    configs = {os.path.splitext(os.path.basename(c))[0]: c for c in args.configs}
    rows = list(configs) + [row[0] for row in args.seed_offset_row] + [variant[0] for variant in args.eval_variant]
    if args.baseline and args.baseline not in rows:
        parser.error(f"--baseline {args.baseline!r} is not one of the rows {rows}")
    for name, method, offset in args.seed_offset_row:
        if method not in configs or not offset.lstrip("-").isdigit():
            parser.error(f"--seed-offset-row {name}: needs a trained method of {sorted(configs)} and an integer offset")
    for name, method, *_ in args.eval_variant:
        if method not in configs:
            parser.error(f"--eval-variant {name}: {method!r} is not one of the trained methods {sorted(configs)}")
    prepared = []

    prepare_lock = threading.Lock()

    def prepare_once():  # the default toy world and CLIP, with progress lines, before the first training
        with prepare_lock:
            if not prepared and not args.skip_prepare:
                prepared.append(prepare_toy_world(print_fn=_say))

    runs = {}
    total = len(rows) * len(args.seeds)
    done = 0
    progress = Progress("toy ablation", total, every_s=0, print_fn=_say)

    def record(name, seed, result):
        nonlocal done
        runs.setdefault(name, {})[seed] = result
        done += 1
        progress.update(done, f"{name} seed {seed}{' (read back)' if result.pop('reused') else ''}: " + ", ".join(
            f"{label} {result[key]:.2f}" for key, label in METRICS) + f", {result['train_seconds']:.0f}s"
            + (f"; {_diagnostics_line(result)}" if _diagnostics_line(result) else ""))

    store = RunStore(os.path.join(args.results_dir, "runs"))
    common = dict(before_training=prepare_once, store=store, threads=args.threads)
    lock = threading.Lock()

    def train(row, config_file, seed, shifted):  # recorded under the unshifted seed: it pairs with METHOD's run
        out = os.path.join(args.output_dir, row, f"seed{shifted}")
        result = run_one(config_file, shifted, args.max_iter, out, args.device, args.opts, row=row, **common)
        with lock:
            record(row, seed, result)
        return result

    def evaluate(name, method, overrides, seed, trained_job):
        trained = trained_job.result()
        folder = os.path.join(args.output_dir, method, f"seed{seed}")
        weights = os.path.join(folder, "model_final.pth")
        out = os.path.join(args.output_dir, name, f"seed{seed}")
        opts = list(args.opts) + overrides
        _, cfg, key, legacy = _planned(configs[method], seed, args.max_iter, out, args.device, opts, weights,
                                       trained["key"], trained["legacy_key"])
        if (find_finished(out, key, per_image_path(out, cfg), store, name, seed, legacy) is None
                and not os.path.isfile(weights)):
            _say(f"{method} seed {seed}: weights gone, retraining them for {name}")
            again = run_one(configs[method], seed, args.max_iter, folder, args.device, args.opts, row=method,
                            force=True, **common)
            if abs(again["hIoU"] - trained["hIoU"]) > 0.01:
                _say(f"warning: {method} seed {seed} retrained to hIoU {again['hIoU']:.2f}, "
                     f"stored {trained['hIoU']:.2f} (training is not bit-reproducible here); the new run replaces it")
                with lock:
                    runs[method][seed] = {k: v for k, v in again.items() if k != "reused"}
        result = run_one(configs[method], seed, args.max_iter, out, args.device, opts, eval_weights=weights,
                         trained_key=trained["key"], trained_legacy=trained["legacy_key"], row=name, **common)
        with lock:
            record(name, seed, result)
        return result

    # each method's seeds, then the evaluation variants of its models, then the shifted-seed rows;
    # workers take jobs in this order, so a variant's training is always taken before it
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        jobs = []
        for method, config_file in configs.items():
            trained = {seed: pool.submit(train, method, config_file, seed, seed) for seed in args.seeds}
            jobs += trained.values()
            for name, variant_method, *overrides in args.eval_variant:
                if variant_method == method:
                    jobs += [pool.submit(evaluate, name, method, overrides, seed, trained[seed]) for seed in args.seeds]
        for name, method, offset in args.seed_offset_row:
            jobs += [pool.submit(train, name, configs[method], seed, seed + int(offset)) for seed in args.seeds]
        for job in jobs:
            job.result()  # re-raises a failed run's error
    runs = {row: dict(sorted(runs[row].items())) for row in rows}  # rows and seeds in order, whatever finished first
    table = summarise(runs, args.baseline)
    classes = unseen_class_table(runs)
    header = (f"Toy-world ablation: {args.max_iter} iterations at each config's batch size, seeds {args.seeds}, "
              f"GZS3 on {next(iter(runs[rows[0]].values()))['test_set']} (mean ± std over seeds"
              + (f"; Δ: paired mean difference to {args.baseline} over the same seeds, 95% t-interval)"
                 if args.baseline else ")")
              + (f"; {args.jobs} runs at once, {args.threads or 'default'} thread(s) each: train times are not "
                 f"those of a run alone" if args.jobs > 1 else ""))
    diagnostics = diagnostics_table(runs, args.baseline)
    text = (f"{header}\n\n{table}\n\nUnseen classes, IoU (mean over seeds):\n\n{classes}\n\n"
            f"Diagnostics (mean over seeds; U px: share of unseen ground-truth pixels predicted as the right "
            f"unseen class, another unseen class, a seen class, no class):\n\n{diagnostics}\n")
    if args.baseline:
        meta = MetadataCatalog.get(next(iter(runs[rows[0]].values()))["test_set"])
        metric_fn = functools.partial(zero_shot_metrics, seen_ids=list(meta.seen_classes),
                                      unseen_ids=list(meta.unseen_classes))
        text += ("\nNoise of hIoU (eval SE: root mean square of each run's bootstrap SE over test images; "
                 "eval SE of Δ: the same for the paired difference, both models resampled on the same images; "
                 "training sd of Δ = sqrt(sd of Δ^2 - eval SE of Δ^2)):\n\n"
                 f"{noise_table(runs, args.baseline, metric_fn=metric_fn)}\n")
    os.makedirs(args.results_dir, exist_ok=True)
    atomic_write_text(os.path.join(args.results_dir, f"{args.name}.json"), json.dumps(
        {"max_iter": args.max_iter, "seeds": args.seeds, "device": args.device, "baseline": args.baseline,
         "jobs": args.jobs, "threads": args.threads, "opts": args.opts, "torch": torch.__version__,
         "runs": {row: {seed: {k: v for k, v in result.items() if k != "legacy_key"} for seed, result in seeds.items()}
                  for row, seeds in runs.items()}}, indent=1))
    atomic_write_text(os.path.join(args.results_dir, f"{args.name}.md"), text)
    _say("\n" + text)
    _say(f"results: {os.path.join(args.results_dir, args.name)}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
