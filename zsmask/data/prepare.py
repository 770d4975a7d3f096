"""Helpers shared by ``datasets/prepare_*.py``: id lists, atomic PNG writes, parallel conversion.

Every converter maps raw label ids to the dataset's contiguous class ids with a look-up table
(``255`` = ignore), writes single-channel PNGs atomically (a killed run never leaves a half
written file) and skips outputs that already exist, so an interrupted run can be resumed.
"""
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "RawDatasetError", "read_id_list", "write_label_png", "apply_lut", "convert_all", "require_dir", "run_reporting_errors",
]


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


def apply_lut(raw: np.ndarray, lut: np.ndarray, source: str) -> np.ndarray:
    """Map raw ids through ``lut`` (uint8, 255 = ignore); ids beyond it are an error."""
    if raw.size and raw.max() >= len(lut):
        raise ValueError(f"{source}: label id {int(raw.max())} is outside the expected range 0..{len(lut) - 1}")
    return lut[raw]


def write_label_png(path: str, label: np.ndarray) -> None:
    """Write an ``(H, W)`` uint8 label map as a mode-L PNG, atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    Image.fromarray(np.asarray(label, dtype=np.uint8), mode="L").save(tmp)
    os.replace(tmp, path)


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
