"""Training engine: a launcher that also runs CPU (gloo) processes, zsmask's trainer, and loading
trained models for inference."""
from .inference import default_device, inference_config, load_inference_model
from .launch import launch, uses_cpu_processes
from .setup import build_config, with_zs3_variants
from .trainer import AtomicDetectionCheckpointer, Trainer, build_train_loop, create_ddp_model, upgrade_checkpoint_state

__all__ = [
    "AtomicDetectionCheckpointer",
    "Trainer",
    "build_config",
    "build_train_loop",
    "default_device",
    "inference_config",
    "load_inference_model",
    "create_ddp_model",
    "launch",
    "upgrade_checkpoint_state",
    "uses_cpu_processes",
    "with_zs3_variants",
]
