"""Generalized zero-shot semantic-segmentation evaluation (GZS3 and ZS3).

A confusion matrix over the dataset variant's vocabulary is accumulated per process,
summed over processes, and turned into per-class IoU / accuracy and the summary metrics

* ``mIoU`` over all vocabulary classes present in the ground truth,
* ``mIoU_seen`` / ``mIoU_unseen`` over the seen / unseen classes present,
* ``hIoU = 2 * mIoU_seen * mIoU_unseen / (mIoU_seen + mIoU_unseen)`` (GZS3 only),
* ``pAcc`` (pixel accuracy), ``mAcc`` (mean class accuracy), ``fwIoU`` (frequency weighted).

Which classes enter the means (``absent_classes``, ``TEST.ZERO_SHOT.ABSENT_CLASSES``):

* ``"exclude"`` (default): only classes present in the ground truth of the evaluated set; a
  class absent from it has ``IoU-<name>`` NaN even when it is predicted (detectron2's
  ``SemSegEvaluator`` on its main branch since July 2022, commit f3c1bc1, in no release; the
  convention of the published FC-CLIP, CAT-Seg and SAN numbers).
* ``"count_predicted"``: a class absent from the ground truth but predicted somewhere enters
  every mean with IoU 0 (``SemSegEvaluator`` of detectron2 v0.6, whose mIoU divides by the
  classes present in the ground truth *or* the prediction; MAFT's and ov-seg's numbers). On a
  set whose test images miss many classes (PASCAL Context-459: 114 of 459) this lowers mIoU by
  points.

Values are percentages.

The same pass accumulates the diagnostics of :mod:`.diagnostics`: where unseen ground-truth
pixels go (``unseen_as_right_unseen`` / ``_other_unseen`` / ``_seen`` / ``_no_class``), the
boundary F-score (``boundary_F``, 3-pixel band) and, for outputs that carry proposals with a
class indicator (``TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS``), ``indicator_AUROC_matched`` /
``_rest``. With ``bootstrap`` resamples (``TEST.ZERO_SHOT.BOOTSTRAP``), per-image confusion
matrices are kept and ``<metric>_bootstrap_se`` gives the standard error over test-image
resamples of mIoU(S), mIoU(U), hIoU and mIoU.
Results are returned as ``{"sem_seg": {...}}``, so the flat keys read ``sem_seg/hIoU`` etc.
"""
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from ..data.catalog import label_map_for_dataset
from ..data.image_io import read_sem_seg
from .diagnostics import (
    bootstrap_standard_errors,
    boundary_counts,
    proposal_region_labels,
    summarise,
    unseen_pixel_outcomes,
)

BOOTSTRAP_KEYS = ("mIoU_seen", "mIoU_unseen", "hIoU", "mIoU")
ABSENT_CLASS_CONVENTIONS = ("exclude", "count_predicted")
SPLIT_KEYS = ("mIoU_seen", "mIoU_unseen", "hIoU")

__all__ = ["GeneralizedZeroShotSemSegEvaluator", "zero_shot_metrics", "harmonic_mean", "ABSENT_CLASS_CONVENTIONS"]


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU = 2SU / (S + U); 0 when both are 0, NaN when either is NaN."""
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    return 0.0 if seen + unseen == 0 else 2.0 * seen * unseen / (seen + unseen)


def _nanmean_over(values: np.ndarray, ids: Sequence[int]) -> float:
    picked = values[list(ids)] if len(ids) else np.array([])
    picked = picked[~np.isnan(picked)]
    return float(picked.mean()) if picked.size else float("nan")


def check_absent_classes(convention: str) -> str:
    if convention not in ABSENT_CLASS_CONVENTIONS:
        raise ValueError(f"absent-class convention {convention!r} is not one of {ABSENT_CLASS_CONVENTIONS} "
                         "(TEST.ZERO_SHOT.ABSENT_CLASSES; see zsmask.evaluation.zero_shot_evaluator)")
    return convention


def zero_shot_metrics(conf: np.ndarray, seen_ids: Sequence[int], unseen_ids: Sequence[int],
                      absent_classes: str = "exclude") -> Dict[str, object]:
    """Metrics from a confusion matrix.

    Args:
        conf: ``(C + 1, C + 1)`` int64, ``conf[pred, gt]``; the last row / column count the
            ignore label (rows: never predicted; column: ignored pixels, excluded).
        seen_ids / unseen_ids: vocabulary indices of seen and unseen classes.
        absent_classes: ``"exclude"`` or ``"count_predicted"`` (module docstring).

    Returns:
        dict with per-class ``iou`` / ``acc`` arrays (fractions; NaN for classes left out of
        the means) and the summary metrics in percent.
    """
    check_absent_classes(absent_classes)
    num_classes = conf.shape[0] - 1
    tp = conf.diagonal()[:-1].astype(np.float64)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(np.float64)
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(np.float64)
    present = pos_gt > 0
    iou = np.full(num_classes, np.nan)
    acc = np.full(num_classes, np.nan)
    union = pos_gt + pos_pred - tp
    acc[present] = tp[present] / pos_gt[present]
    iou[present] = tp[present] / union[present]
    if absent_classes == "count_predicted":
        iou[~present & (pos_pred > 0)] = 0.0
    total = pos_gt.sum()
    out = {
        "iou": iou,
        "acc": acc,
        "mIoU": 100 * _nanmean_over(iou, range(num_classes)),
        "mAcc": 100 * _nanmean_over(acc, range(num_classes)),
        "pAcc": 100 * float(tp.sum() / total) if total else float("nan"),
        "fwIoU": 100 * float(np.sum(iou[present] * pos_gt[present]) / total) if total else float("nan"),
        "mIoU_seen": 100 * _nanmean_over(iou, seen_ids),
        "mIoU_unseen": 100 * _nanmean_over(iou, unseen_ids),
    }
    out["hIoU"] = harmonic_mean(out["mIoU_seen"], out["mIoU_unseen"])
    return out


class GeneralizedZeroShotSemSegEvaluator(DatasetEvaluator):
    """detectron2 ``DatasetEvaluator`` for a registered zero-shot variant (``*_test`` or
    ``*_test_zs3``), an open-vocabulary set (metadata ``open_vocabulary``: no mIoU(S) /
    mIoU(U) / hIoU) or any sem-seg dataset with ``stuff_classes`` (all classes seen).

    ``process`` expects ``outputs[i]["sem_seg"]`` as ``(C, H, W)`` scores over the dataset's
    vocabulary at the ground truth's resolution; the ground truth is read from
    ``inputs[i]["sem_seg_file_name"]`` through the variant's label map.
    """

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None,
                 no_class_score: float = 0.1, boundary_tolerance: int = 3, bootstrap: int = 0,
                 absent_classes: str = "exclude"):
        """``no_class_score``: a pixel whose highest class score is below it counts as predicted
        as no class in ``unseen_as_no_class``; ``boundary_tolerance``: the band of ``boundary_F``;
        ``bootstrap``: test-image resamples for the ``*_bootstrap_se`` keys (0: none, and no
        per-image matrices are kept); ``absent_classes``: which classes enter the means
        (module docstring)."""
        self.absent_classes = check_absent_classes(absent_classes)
        self.bootstrap = bootstrap
        self.no_class_score = no_class_score
        self.boundary_tolerance = boundary_tolerance
        self.dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        meta = MetadataCatalog.get(dataset_name)
        self.class_names: List[str] = list(meta.stuff_classes)
        self.num_classes = len(self.class_names)
        self.ignore_label = meta.get("ignore_label", 255)
        self.seen_ids = list(meta.get("seen_classes", range(self.num_classes)))
        self.unseen_ids = list(meta.get("unseen_classes", []))
        # ZS3: the vocabulary is the unseen classes only; seen metrics and hIoU do not exist.
        self.zs3 = len(self.seen_ids) == 0
        # A set registered without a seen / unseen partition: no split metrics.
        self.open_vocabulary = bool(meta.get("open_vocabulary", False))
        self._label_map = label_map_for_dataset(dataset_name)
        self._logger = logging.getLogger(__name__)
        self.reset()

    def reset(self):
        self._conf = np.zeros((self.num_classes + 1, self.num_classes + 1), dtype=np.int64)
        self._outcomes = np.zeros(4, dtype=np.int64)
        self._boundary = np.zeros(4, dtype=np.int64)
        self._indicator = {"scores": [], "on_unseen": [], "matched": []}
        self._per_image = []
        self._file_names = []

    def _gt(self, inp) -> np.ndarray:
        if "sem_seg_file_name" in inp:
            return read_sem_seg(inp["sem_seg_file_name"], self._label_map, self.ignore_label)
        if "sem_seg_gt" in inp:  # already mapped (e.g. in-memory data)
            return np.asarray(inp["sem_seg_gt"], dtype=np.int64)
        raise KeyError("evaluator inputs need 'sem_seg_file_name' (or 'sem_seg_gt')")

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            scores = out["sem_seg"]
            if scores.shape[0] != self.num_classes:
                raise ValueError(
                    f"prediction for {inp.get('file_name')} scores {scores.shape[0]} classes but the "
                    f"vocabulary of '{self.dataset_name}' has {self.num_classes}"
                )
            best, pred = scores.max(dim=0)
            pred = pred.to("cpu", torch.int64).numpy()
            gt = self._gt(inp)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"prediction for {inp.get('file_name')} is {pred.shape[0]}x{pred.shape[1]} but its "
                    f"ground truth {inp.get('sem_seg_file_name')} is {gt.shape[0]}x{gt.shape[1]}"
                )
            no_class = (best < self.no_class_score).cpu().numpy()
            self._outcomes += unseen_pixel_outcomes(pred, no_class, gt, self.unseen_ids)
            self._boundary += boundary_counts(pred, gt, self.boundary_tolerance, self.ignore_label)
            if "proposals" in out:
                self._add_proposals(out["proposals"], gt)
            gt = np.where(gt == self.ignore_label, self.num_classes, gt)
            n = self.num_classes + 1
            conf = np.bincount(n * pred.reshape(-1) + gt.reshape(-1), minlength=n * n).reshape(n, n)
            self._conf += conf
            if self.bootstrap:
                self._per_image.append(conf)
                self._file_names.append(str(inp.get("file_name", "")))

    def _add_proposals(self, proposals: Dict[str, torch.Tensor], gt: np.ndarray) -> None:
        """Records for the indicator AUROC: ``proposals["masks"]`` (Q, H, W) bool at the ground
        truth's resolution, ``proposals["indicator"]`` (Q,) class-indicator probabilities."""
        on_unseen, matched, valid = proposal_region_labels(proposals["masks"], gt, self.unseen_ids, self.ignore_label)
        self._indicator["scores"].append(proposals["indicator"].float().cpu().numpy()[valid])
        self._indicator["on_unseen"].append(on_unseen[valid])
        self._indicator["matched"].append(matched[valid])

    def evaluate(self):
        state = (self._conf, self._outcomes, self._boundary, self._indicator, self._per_image, self._file_names)
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather(state)
            if not comm.is_main_process():
                return None
            state = (
                np.sum(np.stack([g[0] for g in gathered]), axis=0),
                np.sum(np.stack([g[1] for g in gathered]), axis=0),
                np.sum(np.stack([g[2] for g in gathered]), axis=0),
                {k: [x for g in gathered for x in g[3][k]] for k in self._indicator},
                [x for g in gathered for x in g[4]],
                [x for g in gathered for x in g[5]],
            )
        conf = state[0]
        m = zero_shot_metrics(conf, self.seen_ids, self.unseen_ids, self.absent_classes)
        res = OrderedDict()
        for key in ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "pAcc", "mAcc", "fwIoU"):
            if (self.zs3 and key in ("mIoU_seen", "hIoU")) or (self.open_vocabulary and key in SPLIT_KEYS):
                continue
            res[key] = m[key]
        for i, name in enumerate(self.class_names):
            res[f"IoU-{name}"] = 100 * m["iou"][i]
        for i, name in enumerate(self.class_names):
            res[f"ACC-{name}"] = 100 * m["acc"][i]
        res.update(summarise(state[1], state[2], state[3]))
        if self.bootstrap and state[4]:
            errors = bootstrap_standard_errors(
                np.stack(state[4]), lambda c: zero_shot_metrics(c, self.seen_ids, self.unseen_ids, self.absent_classes),
                [k for k in BOOTSTRAP_KEYS if k in res], self.bootstrap)
            res.update({f"{k}_bootstrap_se": v for k, v in errors.items()})
        self._logger.info("\n" + self.format_table(m))
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            if self.bootstrap and state[4]:
                self._save_per_image(np.stack(state[4]), state[5])
            path = os.path.join(self._output_dir, f"zero_shot_sem_seg_{self.dataset_name}.json")
            with open(path + ".tmp", "w") as f:
                json.dump({"absent_classes": self.absent_classes,
                           **{k: (None if np.isnan(v) else v) for k, v in res.items()}}, f, indent=1)
            os.replace(path + ".tmp", path)
        return OrderedDict(sem_seg=res)

    def per_image_path(self) -> str:
        """``<output_dir>/per_image_confusion_<dataset>.npz``: with ``bootstrap``, the per-image
        confusion matrices ``confusion`` (N, C + 1, C + 1) int32 in the order of ``file_names``,
        for paired bootstraps of two models on the same images
        (:func:`~.diagnostics.paired_bootstrap_standard_errors`)."""
        return os.path.join(self._output_dir, f"per_image_confusion_{self.dataset_name}.npz")

    def _save_per_image(self, per_image: np.ndarray, file_names: List[str]) -> None:
        path = self.per_image_path()
        with open(path + ".tmp", "wb") as f:
            np.savez_compressed(f, confusion=per_image.astype(np.int32), file_names=np.array(file_names))
        os.replace(path + ".tmp", path)

    def format_table(self, m: Dict[str, object]) -> str:
        """Per-class table (class, seen/unseen, IoU, Acc) followed by the summary rows."""
        unseen = set(self.unseen_ids)
        rows = [
            [name, "-" if self.open_vocabulary else "unseen" if i in unseen else "seen", 100 * m["iou"][i],
             100 * m["acc"][i]]
            for i, name in enumerate(self.class_names)
        ]
        per_class = tabulate(rows, headers=["class", "split", "IoU", "Acc"], floatfmt=".2f", missingval="-")
        if self.zs3:
            keys, mode = ["mIoU_unseen", "mIoU", "pAcc"], "ZS3 (unseen vocabulary)"
        elif self.open_vocabulary:
            keys, mode = ["mIoU", "pAcc", "mAcc", "fwIoU"], "open vocabulary (no seen / unseen split)"
        else:
            keys, mode = ["mIoU_seen", "mIoU_unseen", "hIoU", "mIoU", "pAcc", "fwIoU"], "GZS3 (full vocabulary)"
        summary = tabulate([[m[k] for k in keys]], headers=keys, floatfmt=".2f")
        return (f"Zero-shot evaluation on {self.dataset_name} [{mode}; absent classes: {self.absent_classes}]\n"
                f"{per_class}\n\n{summary}")
