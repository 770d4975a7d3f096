"""A training data stream that a checkpoint can stop and ``--resume`` continue exactly.

detectron2's training loader restarts its sampler and its workers' random streams at every
start, so a resumed run sees other images and other augmentations than the run that was never
stopped. Here every sample is a function of its **stream position** p alone:

- the record index at p comes from a seeded permutation per epoch (``p // len(dataset)``), so
  the stream can start at any position;
- the mapper's randomness (crops, flips, colour) is seeded from ``(seed, p)`` for that one
  call (Python's ``random``, NumPy's and torch's global generators, restored afterwards), so a
  sample does not depend on what was drawn before it or on which worker draws it;
- ranks take the positions ``p % world_size == rank``, and a rank's data-loader workers take
  turns over that rank's positions, which torch's loader returns in order.

:class:`ResumableTrainLoader` batches the stream (by aspect ratio, as detectron2's
``AspectRatioGroupedDataset``) and its :meth:`~ResumableTrainLoader.state_dict` is the next
position and the positions waiting in the aspect-ratio buckets; loaded into a new loader, the
waiting samples are drawn again first (they are functions of their positions) and the stream
continues where it stopped.
"""
import itertools
import os
import random
import re
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

__all__ = ["DataLoaderWorkerDied", "PositionStream", "dead_worker_pids", "ResumableTrainLoader", "sample_seed", "shared_seed"]


class DataLoaderWorkerDied(RuntimeError):
    """A data-loader worker process ended unexpectedly; the message names the sample it was on."""


SAMPLE, EPOCH_ORDER, LOADER = 0, 1, 2  # what a derived seed is for


def sample_seed(seed: int, position: int, purpose: int = SAMPLE) -> int:
    """A 32-bit seed derived from a stream's ``seed``: the sample's at ``position`` (default),
    an epoch's order (``purpose=EPOCH_ORDER``, ``position`` = the epoch) or the loader's own."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, purpose, position]).generate_state(1)[0])


class _SeededCall:
    """``fn(x)`` with the global random generators seeded for one sample, then put back."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.random.default_generator.manual_seed(self.seed)  # the CPU generator only: CUDA's is the model's

    def __exit__(self, *exc):
        random.setstate(self.states[0])
        np.random.set_state(self.states[1])
        torch.set_rng_state(self.states[2])
        return False


_DEAD_WORKER = re.compile(r"DataLoader worker \(pids?(?:\(s\))? ([\d, ]+)\) (?:exited unexpectedly|is killed by signal)")


def dead_worker_pids(error: str) -> Optional[List[int]]:
    """The pids in torch's message about data-loader workers that died, or None when ``error``
    is not such a message (an exception raised inside a worker reads "Caught X in DataLoader
    worker process N" and is not a death)."""
    match = _DEAD_WORKER.search(error)
    return [int(p) for p in re.findall(r"\d+", match.group(1))] if match else None


def _as_is(item):
    """The loader's collate function: items pass unchanged (no conversion of arrays to tensors)."""
    return item


class PositionStream(IterableDataset):
    """Mapped samples ``(position, mapped dict)`` from ``start`` on (see the module docstring);
    ``replay`` positions come first. Infinite."""

    def __init__(self, records: Sequence[dict], mapper: Callable[[dict], dict], seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        if len(records) == 0:
            raise ValueError("the training dataset is empty")
        self.records, self.mapper, self.seed, self.shuffle = records, mapper, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.start, self.replay = 0, []
        self.progress: Optional[torch.Tensor] = None  # (workers, 2) shared [pid, position], set by the loader

    def index_at(self, position: int) -> int:
        """The record index at ``position``: a seeded permutation of the records per epoch."""
        size = len(self.records)
        if not self.shuffle:
            return position % size
        epoch = position // size
        if getattr(self, "_epoch", None) != epoch:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, EPOCH_ORDER))
            self._epoch, self._order = epoch, torch.randperm(size, generator=generator).tolist()
        return self._order[position % size]

    def positions(self) -> Iterator[int]:
        """This rank's positions: the replayed ones, then every ``p >= start`` of this rank."""
        first = self.start + (self.rank - self.start) % self.world_size
        return itertools.chain(self.replay, itertools.count(first, self.world_size))

    def __iter__(self):
        positions = self.positions()
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            positions = itertools.islice(positions, worker.id, None, worker.num_workers)
        slot = worker.id if worker is not None else 0
        for position in positions:
            if self.progress is not None:  # what this worker is on, for the report if it dies
                self.progress[slot, 0], self.progress[slot, 1] = os.getpid(), position
            with _SeededCall(sample_seed(self.seed, position)):
                mapped = self.mapper(self.records[self.index_at(position)])
            yield position, mapped


class ResumableTrainLoader:
    """Batches of ``batch_size`` mapped dicts from a :class:`PositionStream` through a torch
    ``DataLoader`` with ``num_workers``; ``aspect_ratio_grouping`` batches landscape and
    portrait images apart. ``state_dict`` / ``load_state_dict`` describe what this loader's
    consumer has taken so far; load before iterating."""

    def __init__(self, stream: PositionStream, batch_size: int, num_workers: int = 0,
                 aspect_ratio_grouping: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch size per process must be >= 1, got {batch_size}")
        self.stream, self.batch_size, self.num_workers = stream, batch_size, num_workers
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self._next, self._pending = stream.start, [[], []]

    def _bucket(self, mapped: dict) -> int:
        if not self.aspect_ratio_grouping:
            return 0
        return int(mapped["width"] > mapped["height"])

    def __iter__(self) -> Iterator[List[dict]]:
        # its own generator: starting the loader must not draw from the model's torch generator
        self.stream.progress = torch.full((max(1, self.num_workers), 2), -1, dtype=torch.int64).share_memory_()
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, collate_fn=_as_is,
                            generator=torch.Generator().manual_seed(sample_seed(self.stream.seed, 0, LOADER)))
        buckets: List[List[dict]] = [[], []]
        self._pending = [[], []]
        for position, mapped in self._reporting_dead_workers(loader):
            self._next = max(self._next, position + 1)
            index = self._bucket(mapped)
            buckets[index].append(mapped)
            self._pending[index].append(position)
            if len(buckets[index]) == self.batch_size:
                batch, buckets[index], self._pending[index] = buckets[index], [], []
                yield batch

    def _reporting_dead_workers(self, loader):
        """``loader``'s items; a worker that dies (killed, out of memory, a crash in C code) is
        reported with the sample it was on."""
        iterator = iter(loader)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except RuntimeError as e:
                if dead_worker_pids(str(e)) is None:
                    raise
                raise DataLoaderWorkerDied(self.dead_worker_report(str(e))) from e
            yield item

    def dead_worker_report(self, error: str) -> str:
        """The message of :class:`DataLoaderWorkerDied` for torch's ``error`` about a dead worker."""
        dead = set(dead_worker_pids(error) or ())
        lines = []
        for pid, position in self.stream.progress.tolist():
            if position < 0 or (dead and pid not in dead):
                continue
            record = self.stream.records[self.stream.index_at(position)]
            lines.append(f"  worker pid {pid}: stream position {position}, {record.get('file_name')}")
        where = ("it was on (or had just finished):\n" + "\n".join(lines)) if lines else "it had not started a sample"
        return (f"a data-loader worker died ({error.strip()}); {where}\nThe usual causes: the memory limit (fewer "
                "DATALOADER.NUM_WORKERS, a smaller batch) or a crash while decoding that file (check it with "
                "python tools/check_dataset.py). Continue with --resume: the stream restarts where the last "
                "checkpoint left it.")

    def state_dict(self) -> Dict:
        """``{"seed", "next", "pending"}``: the stream's seed, the first position not yet taken,
        and the taken positions still waiting in the buckets (by bucket, in order)."""
        return {"seed": self.stream.seed, "next": self._next, "pending": [list(p) for p in self._pending]}

    def load_state_dict(self, state: Dict) -> None:
        self.stream.seed = int(state["seed"])  # a run with a random seed (SEED < 0) resumes on its own stream
        self.stream._epoch = None
        self.stream.start = self._next = int(state["next"])
        self.stream.replay = [p for bucket in state["pending"] for p in bucket]
        self._pending = [list(bucket) for bucket in state["pending"]]

    @property
    def position(self) -> int:
        return self._next


def shared_seed(seed: Optional[int]) -> int:
    """``seed`` when it is >= 0, else one random seed shared by every process."""
    if seed is not None and seed >= 0:
        return int(seed)
    from detectron2.utils import comm

    return int(comm.shared_random_seed())
