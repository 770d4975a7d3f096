"""Training goes on past samples that cannot be read, and stops when there are too many.

:class:`SkipBadSamples` wraps the training mapper: a record whose image or label cannot be read
(:class:`~zsmask.data.image_io.ImageReadError`, :class:`~zsmask.data.image_io.LabelFileError`)
is logged once with its path and the reason, recorded in the run's ``bad_samples.txt``, and
replaced by another record of the dataset, chosen from the bad file's name and the attempt, so
a run is repeatable. (detectron2 0.6's own fallback for a mapper that returns None fails on
Python >= 3.11: it samples from a set.) The file is shared by every data-loader worker and rank, so the count is the run's:
above ``DATALOADER.MAX_BAD_SAMPLES`` distinct files the run stops with
:class:`BadSampleLimitError`, which lists them. Evaluation does not use this: a test file that
cannot be read stops evaluation with its path, since metrics over a different set are not the
benchmark's.
"""
import logging
import os
import random

try:
    import fcntl
except ImportError:  # Windows: appends of whole short lines, without a lock
    fcntl = None
from typing import Callable, Dict, Optional, Sequence

from .image_io import ImageReadError, LabelFileError

__all__ = ["BadSampleLimitError", "BadSampleLog", "SkipBadSamples"]

logger = logging.getLogger(__name__)


class BadSampleLimitError(RuntimeError):
    """More training samples could not be read than ``DATALOADER.MAX_BAD_SAMPLES`` allows."""


class BadSampleLog:
    """The run's unreadable samples, one ``path<TAB>reason`` line each in ``path`` (appended by
    every process; a file counts once however often it is drawn)."""

    def __init__(self, path: str, max_bad: int):
        if max_bad < 0:
            raise ValueError(f"DATALOADER.MAX_BAD_SAMPLES must be >= 0, got {max_bad}")
        self.path = path
        self.max_bad = max_bad

    def entries(self) -> Dict[str, str]:
        """``{file: reason}`` recorded so far, in the order first seen."""
        found: Dict[str, str] = {}
        if not os.path.isfile(self.path):
            return found
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                name, _, reason = line.rstrip("\n").partition("\t")
                if name:
                    found.setdefault(name, reason)
        return found

    def record(self, file_name: str, reason: str) -> bool:
        """Add ``file_name``; True when it is new. Raises BadSampleLimitError above the limit.
        The read and the append hold an exclusive lock on the file (every worker and process of
        the run counts the same entries)."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            known = self.entries()
            new = file_name not in known
            if new:
                f.write(f"{file_name}\t{' '.join(reason.split())}\n")
                f.flush()
                known[file_name] = reason
        if len(known) > self.max_bad:
            listed = "\n".join(f"  {name}: {why}" for name, why in known.items())
            raise BadSampleLimitError(
                f"{len(known)} training samples could not be read, more than DATALOADER.MAX_BAD_SAMPLES "
                f"{self.max_bad}:\n{listed}\nFix or remove them (python tools/check_dataset.py --dataset NAME lists "
                f"every problem), or raise DATALOADER.MAX_BAD_SAMPLES. The list is in {self.path}.")
        return new

    def reset(self) -> None:
        """Forget earlier runs' entries (a run that starts over, not one that resumes)."""
        if os.path.isfile(self.path):
            os.remove(self.path)


class SkipBadSamples:
    """A training mapper that replaces a record it cannot read by another (see the module docstring)."""

    MAX_ATTEMPTS = 64

    def __init__(self, mapper: Callable[[dict], dict], log: BadSampleLog, records: Sequence[dict]):
        """
        Args:
            mapper: the mapper wrapped.
            log: the run's record of bad samples.
            records: the dataset the replacements are drawn from (the loader's own, shared).
        """
        if len(records) == 0:
            raise ValueError("the training dataset is empty")
        self.mapper = mapper
        self.log = log
        self.records = records

    def __call__(self, record: dict) -> dict:
        for attempt in range(self.MAX_ATTEMPTS):
            try:
                return self.mapper(record)
            except (ImageReadError, LabelFileError) as e:
                name = record.get("file_name", "<record without file_name>")
                if self.log.record(name, str(e)):
                    logger.warning(f"skipping a training sample that cannot be read: {name} ({e}); another sample "
                                   f"takes its place ({len(self.log.entries())} so far, at most "
                                   f"{self.log.max_bad}: DATALOADER.MAX_BAD_SAMPLES)")
                rng = random.Random(f"{name}#{attempt}")
                record = self.records[rng.randrange(len(self.records))]
        raise BadSampleLimitError(f"{self.MAX_ATTEMPTS} samples in a row could not be read (the list is in "
                                  f"{self.log.path}); is the dataset's folder readable?")
