"""Registry of inference post-processors, listed in ``MODEL.ZSMASK.POST_PROCESSORS``.

A post-processor refines one image's per-class scores at inference, after the model's own
inference and resizing to the output size; any zsmask model can use it. Interface::

    processor = POST_PROCESSOR_REGISTRY.get(name)(cfg, clip)
    sem_seg = processor(sem_seg, image)   # (K, H, W) scores, image (3, h, w) RGB 0-255

``clip`` is the model's :class:`~zsmask.modeling.clip.CLIPTextImageEncoder`. Post-processors
are not modules of the model: they add no weights to its checkpoints.
"""
from typing import Callable, List

from detectron2.utils.registry import Registry

from ..registries import get_registered

__all__ = ["POST_PROCESSOR_REGISTRY", "build_post_processors"]

POST_PROCESSOR_REGISTRY = Registry("ZSMASK_POST_PROCESSOR")
POST_PROCESSOR_REGISTRY.__doc__ = __doc__


def build_post_processors(cfg, clip) -> List[Callable]:
    """One post-processor per name in ``MODEL.ZSMASK.POST_PROCESSORS``, applied in that order."""
    processors = []
    for name in cfg.MODEL.ZSMASK.POST_PROCESSORS:
        processor = get_registered(POST_PROCESSOR_REGISTRY, name, "post-processor", "MODEL.ZSMASK.POST_PROCESSORS")
        processors.append(processor(cfg, clip))
    return processors
