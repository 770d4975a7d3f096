"""Multi-process launcher that also runs on CPU-only machines (gloo).

detectron2's :func:`detectron2.engine.launch` asserts CUDA and uses NCCL. :func:`launch` keeps
its signature and delegates to it on GPUs; on CPU, ``num_gpus_per_machine`` is the number of
CPU processes, joined by a gloo process group.
"""
import contextlib
import logging
import os
import socket
from datetime import timedelta
from typing import Callable, Optional, Union

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "TrainingProcessDied", "launch", "uses_cpu_processes"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def uses_cpu_processes(device: Union[str, torch.device, None] = None) -> bool:
    """Whether :func:`launch` runs CPU (gloo) processes for ``device``.

    ``device`` is the model's device (``cfg.MODEL.DEVICE``); ``None`` means "CPU when CUDA is
    unavailable". A non-CPU device on a machine without CUDA is an error, raised here rather
    than deep inside model construction.
    """
    if device is None:
        return not torch.cuda.is_available()
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is '{device}' but this machine has no usable CUDA device; "
            "run with MODEL.DEVICE cpu (--num-gpus N then starts N CPU processes)"
        )
    return False


def _free_local_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    device: Union[str, torch.device, None] = None,
):
    """Run ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes.

    Same arguments as :func:`detectron2.engine.launch`, plus ``device`` (see
    :func:`uses_cpu_processes`). On GPUs this is detectron2's launcher unchanged (NCCL, one
    process per GPU). On CPU, ``num_gpus_per_machine`` processes are spawned on this machine,
    joined by a gloo group (``dist_url="auto"`` picks a free local port) with detectron2's
    per-machine group set up, and each gets ``cpu_count // num_processes`` torch threads.
    One process calls ``main_func`` directly. CPU runs are single-machine only.
    """
    if num_gpus_per_machine < 1:
        raise ValueError(f"num_gpus_per_machine must be >= 1, got {num_gpus_per_machine}")
    if not uses_cpu_processes(device):
        if num_gpus_per_machine > torch.cuda.device_count():
            raise ValueError(
                f"--num-gpus {num_gpus_per_machine} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        with _reporting_dead_processes(num_gpus_per_machine):
            return d2_launch(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout)

    if num_machines != 1:
        raise ValueError(
            f"multi-machine training (num_machines={num_machines}) needs GPUs; on CPU, "
            "run on one machine with --num-gpus N for N processes"
        )
    if num_gpus_per_machine == 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        dist_url = _free_local_url()
    logging.getLogger(__name__).info(
        "Starting %d CPU processes (gloo, %s)", num_gpus_per_machine, dist_url
    )
    with _reporting_dead_processes(num_gpus_per_machine):
        mp.start_processes(
            _cpu_worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, num_gpus_per_machine, dist_url, args, timeout),
            daemon=False,
            start_method="spawn",
        )


class TrainingProcessDied(RuntimeError):
    """One of the training processes ended abnormally; the others were stopped."""


@contextlib.contextmanager
def _reporting_dead_processes(local_processes: int):
    """torch's "process N terminated" errors as one clear message: which process, how, what next.
    torch stops the other processes as soon as one ends abnormally; a process that cannot reach
    a dead peer gives up after the process group's timeout (``--dist-timeout``)."""
    try:
        yield
    except mp.ProcessExitedException as e:
        how = f"was killed by signal {e.signal_name}" if e.signal_name else f"exited with status {e.exit_code}"
        raise TrainingProcessDied(
            f"training process {e.error_index} of {local_processes} on this machine {how}; the "
            "other processes were stopped. The last checkpoint is intact: continue with --resume "
            "(a kill by signal 9 is often the out-of-memory killer: see dmesg)") from None
    except mp.ProcessRaisedException as e:
        raise TrainingProcessDied(
            f"training process {e.error_index} of {local_processes} on this machine failed; the other "
            "processes were stopped. Its "
            f"error:\n{e.msg}") from None


def _cpu_worker(local_rank, main_func, world_size, dist_url, args, timeout):
    """One CPU process: join the gloo group, set up detectron2's local group, run."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        dist.init_process_group(
            backend="gloo", init_method=dist_url, world_size=world_size, rank=local_rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    try:
        # one machine: the local (per-machine) group holds every rank, as detectron2 builds it
        if hasattr(comm, "create_local_process_group"):
            comm.create_local_process_group(world_size)
        else:
            assert comm._LOCAL_PROCESS_GROUP is None
            comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
        comm.synchronize()
        main_func(*args)
    finally:
        dist.destroy_process_group()
