"""The one zsmask meta-architecture (registered in detectron2's ``META_ARCH_REGISTRY``)."""
from .zero_shot_mask_former import ZeroShotMaskFormer
from .vocabulary import VocabularyError, vocabulary_of_input

__all__ = ["ZeroShotMaskFormer", "VocabularyError", "vocabulary_of_input"]
