#!/usr/bin/env python
"""Inference latency, throughput and peak memory of trained models, per config and device.

    python tools/benchmark.py --config-file configs/toy/hungarian.yaml [more.yaml ...] [--device cpu cuda]
        [--weights model_final.pth] [--image-size 512 512] [--batch-size 1] [--warmup 3] [--iterations 10]
        [--vocabulary "cat,dog,grass"] [--json out.json] [KEY VALUE ...]

Each (config, device) row builds the model with ``zsmask.engine.load_inference_model`` (weights:
``--weights``, else the config's ``MODEL.WEIGHTS``), feeds seeded random images of
``--image-size`` (the network input size: no test-time resizing) as detectron2 input dicts, runs
``--warmup`` untimed batches (they also fill the text-classifier cache) and times
``--iterations`` batches under ``torch.no_grad()`` with ``time.perf_counter`` (CUDA is
synchronised before each clock read; the host-to-device copy is included, as in detectron2's
``DefaultPredictor``). Reported: latency per batch (mean / median / p90, ms), throughput
(images/s = batch size / mean latency) and peak memory of the timed loop: CUDA
``max_memory_allocated``, on CPU the process peak RSS (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``; elsewhere ``ru_maxrss``, a lifetime peak, as the note column says),
with its increase over the memory in use before the loop. A device that is not available is
reported and skipped, and the exit status is then non-zero. Trailing ``KEY VALUE`` pairs
override every config.
"""
import argparse
import ctypes
import gc
import json
import os
import resource
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import numpy as np
import torch
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from zsmask.engine import default_device, load_inference_model
from zsmask.engine.cli import non_negative_int, positive_int, vocabulary_arg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024.0 ** 2
HEADERS = ["config", "device", "batch", "classes", "mean ms", "median ms", "p90 ms", "images/s", "peak MiB",
           "+MiB in loop", "memory note"]


def _say(text: str) -> None:
    print(text, flush=True)


def device_error(device: str) -> Optional[str]:
    """Why ``device`` (cpu / cuda / cuda:N) cannot be benchmarked here, or None when it can."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        return f"device {device!r} is not a device name; use cpu, cuda or cuda:N"
    if parsed.type == "cpu":
        return None
    if parsed.type != "cuda":
        return f"device {device!r} is not supported by this tool; use cpu, cuda or cuda:N"
    if not torch.cuda.is_available():
        return f"device {device!r} is not available: this torch sees no CUDA device; use --device cpu"
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        return (f"device {device!r} is not available: this torch sees {torch.cuda.device_count()} CUDA "
                f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return None


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that the RSS is the memory
    in use and not what earlier calls freed; a no-op where glibc is not the allocator."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class CpuMemoryProbe:
    """Peak resident memory of this process between :meth:`start` and :meth:`stop`.

    Linux: writing "5" to ``<proc_dir>/clear_refs`` resets the peak RSS (``VmHWM`` in
    ``<proc_dir>/status``) to the current RSS, so the peak covers exactly the measured span.
    Elsewhere (or when ``/proc`` cannot be used) ``resource.getrusage().ru_maxrss`` is read, the
    peak of the whole process lifetime, which cannot be reset: the note says so.
    """

    def __init__(self, proc_dir: str = "/proc/self"):
        self.proc_dir = proc_dir
        self.use_proc = False
        self.before = 0.0

    def _status_bytes(self, key: str) -> float:
        with open(os.path.join(self.proc_dir, "status"), encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) * 1024.0  # reported in kB
        raise KeyError(f"{key} not in {self.proc_dir}/status")

    @staticmethod
    def _maxrss_bytes() -> float:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak) if sys.platform == "darwin" else float(peak) * 1024.0  # bytes on macOS, kB else

    def start(self) -> None:
        release_free_heap()
        try:
            with open(os.path.join(self.proc_dir, "clear_refs"), "w", encoding="ascii") as f:
                f.write("5")
            self.before = self._status_bytes("VmRSS")
            self.use_proc = True
        except (OSError, KeyError, ValueError):
            self.use_proc = False
            self.before = self._maxrss_bytes()

    def stop(self) -> Dict[str, object]:
        """``peak_mib``, ``increase_mib`` (over the RSS at :meth:`start`) and ``memory_note``."""
        if self.use_proc:
            peak = self._status_bytes("VmHWM")
            note = "peak RSS (VmHWM, reset before the loop)"
        else:
            peak = self._maxrss_bytes()
            note = "ru_maxrss: process-lifetime peak RSS, not reset (no /proc)"
        return {"peak_mib": peak / MIB, "increase_mib": max(peak - self.before, 0.0) / MIB, "memory_note": note}


def random_inputs(batch_size: int, height: int, width: int, vocabulary: Optional[Sequence[str]] = None,
                  seed: int = 0) -> List[Dict]:
    """``batch_size`` detectron2 input dicts of seeded random images: ``image`` (3, H, W) float
    with integer values 0-255 (on the CPU, as a data loader gives them), ``height``, ``width``
    and, when given, ``vocabulary``."""
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(batch_size):
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8).float()
        record = {"image": image, "height": height, "width": width}
        if vocabulary:
            record["vocabulary"] = list(vocabulary)
        inputs.append(record)
    return inputs


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure(model, inputs: List[Dict], warmup: int, iterations: int, device: str) -> Dict[str, object]:
    """Time ``model(inputs)`` ``iterations`` times after ``warmup`` untimed calls.

    Returns ``latency_ms`` (the per-batch times), ``mean_ms``, ``median_ms``, ``p90_ms``,
    ``images_per_s`` (= batch size * 1000 / mean_ms), ``peak_mib``, ``increase_mib`` (peak
    minus the memory in use before the timed loop) and ``memory_note``.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    dev = torch.device(device)
    for _ in range(warmup):
        model(inputs)
    _synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    else:
        probe = CpuMemoryProbe()
        probe.start()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        model(inputs)
        _synchronize(dev)
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
        memory = {"peak_mib": peak / MIB, "increase_mib": (peak - before) / MIB,
                  "memory_note": "CUDA max_memory_allocated"}
    else:
        memory = probe.stop()
    latency_ms = np.asarray(times) * 1000.0
    mean_ms = float(latency_ms.mean())
    return dict({"latency_ms": latency_ms.tolist(), "mean_ms": mean_ms, "median_ms": float(np.median(latency_ms)),
                 "p90_ms": float(np.percentile(latency_ms, 90)), "images_per_s": len(inputs) * 1000.0 / mean_ms},
                **memory)


def num_classes(model, vocabulary: Optional[Sequence[str]]) -> int:
    """Size of the vocabulary the inputs are classified against (the default: the model's test
    dataset's ``stuff_classes``)."""
    from zsmask.modeling.meta_arch.vocabulary import vocabulary_of_input

    return len(vocabulary_of_input({"vocabulary": vocabulary} if vocabulary else {},
                                   getattr(model, "test_dataset", None)))


def benchmark_one(config_file: str, device: str, args) -> Dict[str, object]:
    """One table row: build the model of ``config_file`` on ``device`` and :func:`measure` it."""
    model, cfg = load_inference_model(config_file, args.weights, device, args.opts)
    try:
        classes = num_classes(model, args.vocabulary)
        inputs = random_inputs(args.batch_size, args.image_size[0], args.image_size[1], args.vocabulary)
        result = measure(model, inputs, args.warmup, args.iterations, cfg.MODEL.DEVICE)
    finally:
        del model
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return dict({"config": _config_label(config_file), "device": device, "batch": args.batch_size,
                 "classes": classes, "weights": cfg.MODEL.WEIGHTS}, **result)


def _config_label(path: str) -> str:
    full = os.path.abspath(path)
    return os.path.relpath(full, ROOT) if full.startswith(ROOT + os.sep) else path


def table(rows: List[Dict]) -> str:
    """The printed table: one line per (config, device)."""
    return tabulate([[r["config"], r["device"], r["batch"], r["classes"], r["mean_ms"], r["median_ms"], r["p90_ms"],
                      r["images_per_s"], r["peak_mib"], r["increase_mib"], r["memory_note"]] for r in rows],
                    headers=HEADERS, floatfmt=".2f")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", nargs="+", required=True, help="one or more config yaml files")
    parser.add_argument("--device", nargs="+", default=[default_device()],
                        help="cpu, cuda or cuda:N, one or more (default: cuda when available, else cpu)")
    parser.add_argument("--weights", default=None, help="model weights for every config (default: MODEL.WEIGHTS)")
    parser.add_argument("--image-size", nargs=2, type=positive_int, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed batches first")
    parser.add_argument("--iterations", type=positive_int, default=10, help="timed batches")
    parser.add_argument("--vocabulary", type=vocabulary_arg, default=None,
                        help="comma-separated class names (default: the config's test dataset vocabulary)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows to this JSON file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="detectron2", abbrev_name="d2")
    setup_logger(name="zsmask")

    height, width = args.image_size
    cuda = "no CUDA"
    if torch.cuda.is_available():
        cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)"
    _say(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {cuda}; image {height}x{width}, "
         f"batch {args.batch_size}, {args.warmup} warm-up + {args.iterations} timed iterations")
    rows, errors = [], []
    for config_file in args.config_file:
        for device in args.device:
            error = device_error(device)
            if error is None:
                try:
                    rows.append(benchmark_one(config_file, device, args))
                except Exception as e:  # noqa: BLE001  (reported; the other rows still run)
                    error = f"{type(e).__name__}: {e}"
            if error is not None:
                errors.append({"config": config_file, "device": device, "error": error})
                _say(f"error: {config_file} on {device}: {error} (row skipped)")
    if rows:
        _say(table(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        summary = {"torch": torch.__version__, "threads": torch.get_num_threads(), "image_size": [height, width],
                   "batch_size": args.batch_size, "warmup": args.warmup, "iterations": args.iterations,
                   "rows": rows, "errors": errors}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
        _say(f"rows written to {args.json}")
    return 1 if errors or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
