"""Training engine: a launcher that also runs CPU (gloo) processes, and zsmask's trainer."""
from .launch import launch, uses_cpu_processes
from .trainer import AtomicDetectionCheckpointer, Trainer, build_train_loop, create_ddp_model

__all__ = [
    "AtomicDetectionCheckpointer",
    "Trainer",
    "build_train_loop",
    "create_ddp_model",
    "launch",
    "uses_cpu_processes",
]
