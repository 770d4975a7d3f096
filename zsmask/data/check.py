"""A registered dataset checked file by file before a long run (``tools/check_dataset.py``).

Every image is decoded (a truncated file shows only then) and every label read as raw dataset
ids. Reported: files that cannot be read, label / image size mismatches, label ids that are
neither a class of the dataset nor its ignore label, images without one annotated pixel, and
the pixel count of every class of the vocabulary (seen / unseen), of ignored pixels and, in a
``*_train`` variant, of held-out (unseen) classes' pixels, which training ignores.
"""
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .catalog import label_map_for_dataset
from .image_io import ImageReadError, LabelFileError, read_image, read_sem_seg
from .splits import UNMAPPED

__all__ = ["DatasetReport", "check_dataset", "check_record"]

PROBLEM_KINDS = ("unreadable image", "unreadable label", "size mismatch", "unknown label ids", "no annotated pixel",
                 "no label file")


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found.

    Attributes:
        dataset: the dataset's name; ``class_names`` / ``unseen`` its vocabulary.
        images: records checked.
        problems: ``{kind: [(file, detail), ...]}`` for the kinds in ``PROBLEM_KINDS``.
        class_pixels: ``(K,)`` pixels per vocabulary class.
        ignored_pixels: pixels at the ignore label (held-out classes' pixels included).
        held_out_pixels: pixels of dataset classes outside the vocabulary (a train variant's
            unseen classes), which the mapper turns into ignore.
    """

    dataset: str
    class_names: Tuple[str, ...]
    unseen: Tuple[bool, ...]
    images: int = 0
    problems: Dict[str, List[Tuple[str, str]]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})
    class_pixels: np.ndarray = None
    ignored_pixels: int = 0
    held_out_pixels: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def summary(self, limit: int = 10) -> str:
        """The report as text: problems (the first ``limit`` of each kind), then pixel counts."""
        lines = [f"{self.dataset}: {self.images} images, {len(self.class_names)} classes "
                 f"({sum(self.unseen)} unseen)"]
        for kind, found in self.problems.items():
            if found:
                lines.append(f"  {kind}: {len(found)}")
                lines += [f"    {path}: {detail}" for path, detail in found[:limit]]
                if len(found) > limit:
                    lines.append(f"    ... and {len(found) - limit} more")
        total = int(self.class_pixels.sum()) + self.ignored_pixels
        lines.append(f"  pixels: {total:,} ({100 * self.ignored_pixels / max(total, 1):.1f}% ignored"
                     + (f", of which {100 * self.held_out_pixels / max(total, 1):.1f}% held-out unseen classes"
                        if self.held_out_pixels else "") + ")")
        for flag, label in ((False, "seen"), (True, "unseen")):
            idx = [i for i, u in enumerate(self.unseen) if u == flag]
            if idx:
                absent = [self.class_names[i] for i in idx if self.class_pixels[i] == 0]
                lines.append(f"  {label} classes: {len(idx)}, {int(self.class_pixels[idx].sum()):,} pixels"
                             + (f"; never present: {', '.join(absent)}" if absent else ""))
        lines.append("  OK" if self.ok else f"  {sum(len(v) for v in self.problems.values())} problems")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "images": self.images, "ok": self.ok,
                "problems": {k: [list(p) for p in v] for k, v in self.problems.items()},
                "class_pixels": {n: int(c) for n, c in zip(self.class_names, self.class_pixels)},
                "unseen_classes": [n for n, u in zip(self.class_names, self.unseen) if u],
                "ignored_pixels": self.ignored_pixels, "held_out_pixels": self.held_out_pixels}


def check_record(image_path: str, label_path: Optional[str], lut: np.ndarray, ignore: int,
                 num_classes: int) -> dict:
    """One record: ``{"problems": [(kind, file, detail)], "counts": (K + 2,) or None}`` (the
    last two counts: ignored pixels, held-out pixels)."""
    problems = []
    try:
        image_hw = read_image(image_path).shape[:2]
    except ImageReadError as e:
        problems.append(("unreadable image", image_path, str(e)))
        image_hw = None
    if label_path is None:
        return {"problems": problems + [("no label file", image_path, "the record has no sem_seg_file_name")],
                "counts": None}
    try:
        raw = read_sem_seg(label_path)
    except LabelFileError as e:
        return {"problems": problems + [("unreadable label", label_path, str(e))], "counts": None}
    if image_hw is not None and tuple(raw.shape) != tuple(image_hw):
        problems.append(("size mismatch", label_path, f"label {raw.shape[0]}x{raw.shape[1]}, image "
                                                      f"{image_hw[0]}x{image_hw[1]} ({image_path})"))
    ids, id_counts = np.unique(raw, return_counts=True)
    counts = np.zeros(num_classes + 2, dtype=np.int64)
    unknown = []
    for i, n in zip(ids.tolist(), id_counts.tolist()):
        if i == ignore:
            counts[num_classes] += n
        elif i < 0 or i >= len(lut) or lut[i] == UNMAPPED:
            unknown.append(i)
        elif lut[i] == ignore:
            counts[num_classes] += n
            counts[num_classes + 1] += n
        else:
            counts[lut[i]] += n
    if unknown:
        problems.append(("unknown label ids", label_path, f"ids {unknown[:10]} are neither a class of the dataset "
                                                          f"(0..{int((lut != UNMAPPED).sum()) - 2}) nor the ignore "
                                                          f"label {ignore}"))
    elif counts[:num_classes].sum() == 0:
        problems.append(("no annotated pixel", label_path, "every pixel is ignored"))
    return {"problems": problems, "counts": counts}


def _check(args):
    return check_record(*args)


def check_dataset(dataset: str, workers: int = 1, limit: Optional[int] = None, progress=None) -> DatasetReport:
    """Check every record of ``dataset`` (or its first ``limit``) with ``workers`` processes;
    ``progress(done, total)`` is called as records finish."""
    if dataset not in DatasetCatalog.list():
        raise KeyError(f"dataset {dataset!r} is not registered; registered: {', '.join(sorted(DatasetCatalog.list()))}")
    meta = MetadataCatalog.get(dataset)
    names = tuple(meta.get("stuff_classes", None) or ())
    if not names:
        raise ValueError(f"dataset {dataset!r} has no stuff_classes: not a semantic-segmentation dataset")
    unseen_ids = set(meta.get("unseen_classes", []))
    report = DatasetReport(dataset, names, tuple(i in unseen_ids for i in range(len(names))))
    records: Sequence[dict] = DatasetCatalog.get(dataset)
    if limit is not None:
        records = records[:limit]
    ignore = meta.get("ignore_label", 255)
    lut = label_map_for_dataset(dataset)
    jobs = [(r["file_name"], r.get("sem_seg_file_name"), lut, ignore, len(names)) for r in records]
    totals = np.zeros(len(names) + 2, dtype=np.int64)
    if workers > 1:
        pool = multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers)
        results = pool.imap(_check, jobs, chunksize=16)
    else:
        pool, results = None, map(_check, jobs)
    try:
        for done, result in enumerate(results, 1):
            for kind, path, detail in result["problems"]:
                report.problems[kind].append((path, detail))
            if result["counts"] is not None:
                totals += result["counts"]
            if progress is not None:
                progress(done, len(jobs))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    report.images = len(jobs)
    report.class_pixels = totals[:len(names)]
    report.ignored_pixels, report.held_out_pixels = int(totals[-2]), int(totals[-1])
    return report
