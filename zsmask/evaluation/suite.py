"""One model on several test sets in one run, and one table (the open-vocabulary suite).

Every set is evaluated with its own vocabulary (its ``stuff_classes``; text embeddings are
computed once per vocabulary by the CLIP module's cache) by the same evaluator as training's,
under one absent-class convention (``TEST.ZERO_SHOT.ABSENT_CLASSES``). The table has one row per
set (mIoU, pAcc, and mIoU(S) / mIoU(U) / hIoU where the set has a seen / unseen split) and,
beside zsmask's mIoU, the published mIoU of the peers with the same CLIP
(:mod:`.published`), each marked with the convention it was computed under.
"""
import json
import math
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..utils import atomic_write_text
from .published import PublishedResult, published_for

__all__ = ["check_datasets", "evaluate_suite", "format_suite_table", "write_suite"]

COLUMNS = ("mIoU", "pAcc", "mIoU_seen", "mIoU_unseen", "hIoU")
TITLES = {"mIoU": "mIoU", "pAcc": "pAcc", "mIoU_seen": "mIoU(S)", "mIoU_unseen": "mIoU(U)", "hIoU": "hIoU"}


def check_datasets(names: Sequence[str], load: bool = False) -> None:
    """Every name must be a registered dataset (the error lists the registered test sets); with
    ``load``, its records are listed too, so a set whose files are missing fails now
    (:class:`~zsmask.data.catalog.DatasetNotFoundError`, naming the layout and the prepare script)
    rather than after the sets before it were evaluated."""
    registered = set(DatasetCatalog.list())
    unknown = [n for n in names if n not in registered]
    if unknown:
        tests = sorted(n for n in registered if n.endswith("_test") or n.endswith("_test_zs3"))
        raise ValueError(f"dataset(s) {unknown} are not registered; registered test sets: {', '.join(tests)} "
                         "(register your own with zsmask.data.register_open_vocabulary_set or "
                         "register_zero_shot_split)")
    if len(set(names)) != len(names):
        raise ValueError(f"a dataset is named twice in {list(names)}")
    if load:
        for name in names:
            DatasetCatalog.get(name)


def evaluate_suite(cfg, model, names: Sequence[str]) -> "OrderedDict[str, Dict[str, float]]":
    """``{dataset: metrics}`` of ``model`` on each of ``names`` (through :meth:`Trainer.test`,
    so ``TEST.SLIDING_WINDOW`` applies); per-dataset JSON files land in ``cfg.OUTPUT_DIR/inference``."""
    from ..engine.trainer import Trainer

    check_datasets(names)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = tuple(names)
    cfg.freeze()
    results = Trainer.test(cfg, model)
    if len(names) == 1 and names[0] not in results:
        results = {names[0]: results}  # detectron2 unwraps a single dataset
    return OrderedDict((n, dict(results[n]["sem_seg"])) for n in names)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _peers(clip_name: str, names: Sequence[str]) -> List[PublishedResult]:
    return [p for p in published_for(clip_name) if any(n in p.miou for n in names)]


def format_suite_table(results: Mapping[str, Mapping[str, float]], clip_name: str, absent_classes: str) -> str:
    """Markdown: one row per dataset, zsmask's numbers, then the peers' published mIoU with the
    same CLIP; a peer computed under another absent-class convention is marked ``*``."""
    peers = _peers(clip_name, list(results))
    header = ["dataset", "classes"] + [TITLES[c] for c in COLUMNS]
    header += [p.method + ("*" if p.absent_classes != absent_classes else "") for p in peers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in results.items():
        row = [name, str(len(MetadataCatalog.get(name).stuff_classes))]
        row += [_fmt(metrics.get(c)) for c in COLUMNS]
        row += [_fmt(p.miou.get(name)) for p in peers]
        lines.append("| " + " | ".join(row) + " |")
    notes = [f"zsmask: CLIP {clip_name}; classes absent from a set's ground truth: {absent_classes} "
             "(TEST.ZERO_SHOT.ABSENT_CLASSES)."]
    if peers:
        notes.append("Published mIoU with the same CLIP; * = computed under the other absent-class convention "
                     "(matters on PASCAL Context-459):")
        notes += [f"- {p.method}: trained on {p.trained_on}, absent classes {p.absent_classes}; {p.source}"
                  for p in peers]
    else:
        notes.append(f"No published numbers with CLIP {clip_name} in zsmask.evaluation.published.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def write_suite(results: Mapping[str, Mapping[str, float]], output_dir: str, clip_name: str, absent_classes: str,
                extra: Optional[Mapping[str, object]] = None) -> Dict[str, str]:
    """``<output_dir>/open_vocabulary.{json,md}`` (written atomically); returns their paths.
    The JSON holds every metric of every set, the convention, the CLIP and the published rows."""
    os.makedirs(output_dir, exist_ok=True)
    table = format_suite_table(results, clip_name, absent_classes)
    payload = {
        "absent_classes": absent_classes,
        "clip": clip_name,
        **dict(extra or {}),
        "results": {n: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
                    for n, m in results.items()},
        "published": [dict(method=p.method, clip=p.clip, trained_on=p.trained_on, absent_classes=p.absent_classes,
                           miou=p.miou, source=p.source) for p in _peers(clip_name, list(results))],
    }
    paths = {"json": os.path.join(output_dir, "open_vocabulary.json"),
             "md": os.path.join(output_dir, "open_vocabulary.md")}
    atomic_write_text(paths["json"], json.dumps(payload, indent=1))
    atomic_write_text(paths["md"], table)
    return paths
