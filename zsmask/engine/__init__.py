"""Training engine: a launcher that also runs CPU (gloo) processes, zsmask's trainer, slim
checkpoints, and loading trained models for inference."""
from .checkpoint import CheckpointWriteError, ClipReferenceError, SlimCheckpointer, full_checkpoint, upgrade_checkpoint_state
from .inference import default_device, inference_config, load_inference_model
from .launch import launch, uses_cpu_processes
from .setup import build_config, with_zs3_variants
from .trainer import Trainer, build_train_loop, create_ddp_model

__all__ = [
    "ClipReferenceError",
    "CheckpointWriteError",
    "SlimCheckpointer",
    "Trainer",
    "build_config",
    "build_train_loop",
    "default_device",
    "full_checkpoint",
    "inference_config",
    "load_inference_model",
    "create_ddp_model",
    "launch",
    "upgrade_checkpoint_state",
    "uses_cpu_processes",
    "with_zs3_variants",
]
