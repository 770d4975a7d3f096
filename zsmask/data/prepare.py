"""Helpers shared by ``datasets/prepare_*.py``: id lists, atomic PNG writes, parallel conversion.

Every converter maps raw label ids to the dataset's contiguous class ids with a look-up table
(``255`` = ignore; ``65535`` for the sets with more than 255 classes, written as 16-bit PNGs),
writes single-channel PNGs atomically (a killed run never leaves a half written file) and
skips outputs that already exist, so an interrupted run can be resumed.
"""
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, List, Sequence, Tuple

import numpy as np
from PIL import Image

TMP_MARK = ".tmp-"  # in the names of files being written

__all__ = [
    "RawDatasetError", "read_id_list", "write_label_png", "apply_lut", "convert_all", "require_dir", "run_reporting_errors",
    "read_pascal_context_labels", "remove_leftovers", "TMP_MARK", "PASCAL_CONTEXT_HELP", "PascalContextMat",
    "convert_pascal_context",
]

PASCAL_CONTEXT_HELP = (
    "Extract VOC 2010 (VOCtrainval_03-May-2010.tar) under --root and PASCAL-Context's "
    "trainval.tar.gz into VOCdevkit/VOC2010 (giving trainval/*.mat and labels.txt)."
)


class RawDatasetError(FileNotFoundError):
    """The raw release is missing or not in the documented layout."""


def require_dir(path: str, what: str, help_text: str) -> None:
    if not os.path.isdir(path):
        raise RawDatasetError(f"{what} not found: {path}\n{help_text}")


def read_id_list(path: str, what: str, help_text: str) -> List[str]:
    """Read an image-id list (one id per line, blank lines skipped)."""
    if not os.path.isfile(path):
        raise RawDatasetError(f"{what} not found: {path}\n{help_text}")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def read_pascal_context_labels(path: str, help_text: str) -> dict:
    """PASCAL-Context's ``labels.txt`` (``"<id>: <name>"`` lines, ids 1..459) as ``{name: id}``."""
    if not os.path.isfile(path):
        raise RawDatasetError(f"PASCAL-Context labels.txt not found: {path}\n{help_text}")
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*(\d+)\s*:\s*(.+?)\s*$", line)
            if m:
                out[m.group(2)] = int(m.group(1))
    return out


class PascalContextMat:
    """``<id>.mat`` path -> its ``LabelMap`` (459-class ids) mapped through ``lut``."""

    def __init__(self, lut: np.ndarray):
        self.lut = lut

    def __call__(self, path: str) -> np.ndarray:
        from scipy.io import loadmat

        return apply_lut(np.asarray(loadmat(path)["LabelMap"], dtype=np.int64), self.lut, path)


def convert_pascal_context(voc: str, split_dir: str, splits: Sequence[str], out_name: str,
                           convert: Callable[[str], np.ndarray], workers: int) -> None:
    """Convert ``VOC2010/trainval/<id>.mat`` of every id of ``<split_dir>/<split>.txt`` into
    ``VOC2010/<out_name>/<split>/<id>.png``; ids without a ``.mat`` are skipped and counted."""
    mat_dir = os.path.join(voc, "trainval")
    for split in splits:
        ids = read_id_list(os.path.join(split_dir, f"{split}.txt"), f"{split} list", PASCAL_CONTEXT_HELP)
        have = [i for i in ids if os.path.exists(os.path.join(mat_dir, i + ".mat"))]
        out_dir = os.path.join(voc, out_name, split)
        jobs = [(os.path.join(mat_dir, i + ".mat"), os.path.join(out_dir, i + ".png")) for i in have]
        n = convert_all(jobs, convert, workers, desc=split)
        print(f"{split}: {len(have)} labels in {out_dir} ({n} written now; {len(ids) - len(have)} ids without .mat skipped)")


def apply_lut(raw: np.ndarray, lut: np.ndarray, source: str) -> np.ndarray:
    """Map raw ids through ``lut`` (uint8 with 255 = ignore, or uint16 with 65535 = ignore);
    negative ids and ids beyond it are an error."""
    if raw.size and (raw.max() >= len(lut) or raw.min() < 0):
        bad = int(raw.max()) if raw.max() >= len(lut) else int(raw.min())
        raise ValueError(f"{source}: label id {bad} is outside the expected range 0..{len(lut) - 1}")
    return lut[raw]


def write_label_png(path: str, label: np.ndarray) -> None:
    """Write an ``(H, W)`` label map atomically: uint8 as a mode-L PNG, uint16 (ids above
    255) as a 16-bit grey PNG."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}{TMP_MARK}{os.getpid()}"  # not *.png: a killed run's leftover is never taken for a label
    label = np.asarray(label)
    if label.dtype == np.uint16:
        Image.fromarray(label).save(tmp, format="PNG")  # mode I;16
    else:
        Image.fromarray(np.asarray(label, dtype=np.uint8), mode="L").save(tmp, format="PNG")
    os.replace(tmp, path)


def remove_leftovers(folders: Iterable[str]) -> int:
    """Delete the temporary files a killed run left in ``folders``; returns how many."""
    removed = 0
    for folder in set(folders):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if TMP_MARK in name:
                    os.remove(os.path.join(folder, name))
                    removed += 1
    return removed


def _run_job(args):
    fn, src, dst = args
    if os.path.exists(dst):
        return 0
    write_label_png(dst, fn(src))
    return 1


def convert_all(
    jobs: Sequence[Tuple[str, str]], fn: Callable[[str], np.ndarray], workers: int = 0, desc: str = "labels"
) -> int:
    """Run ``fn(src) -> label`` for every ``(src, dst)`` job and write ``dst``; returns the
    number of files written (existing outputs are kept). ``workers=0`` uses all CPUs."""
    workers = workers or os.cpu_count() or 1
    remove_leftovers(os.path.dirname(dst) for _, dst in jobs)
    total = len(jobs)
    done = written = 0
    step = max(total // 20, 1)
    items: Iterable = ((fn, s, d) for s, d in jobs)
    if workers == 1:
        results = map(_run_job, items)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_run_job, items, chunksize=64)
    try:
        for w in results:
            done += 1
            written += w
            if done % step == 0 or done == total:
                print(f"  {desc}: {done}/{total}", flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    return written


def run_reporting_errors(body: Callable[[], None]) -> int:
    """Run a prepare script's body; print raw-data problems as ``error: ...`` and return the
    exit status (0 ok, 1 failed) instead of a traceback."""
    try:
        body()
    except (RawDatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
