"""CLIP in zsmask: loading open_clip models, prompt templates, and the frozen text/image encoder."""
from .clip_model import CLIPTextImageEncoder, VocabularyError, check_class_names, split_synonyms
from .loader import (
    ClipWeightsError,
    available_clip_architectures,
    load_clip,
    load_clip_from_config,
    load_clip_state_dict,
    register_clip_architecture,
    register_clip_architecture_file,
    register_pretrained_source,
)
from .shared import clip_reference, frozen_clip, weights_digest
from .prompt_learning import HandCraftedPrompts, LearnableContextPrompts, MultiPromptText
from .toy_clip import TOY_CLIP_NAME, TOY_CLIP_TAG, crop_zero_shot_accuracy, toy_clip_report, toy_clip_weights
from .templates import TEMPLATE_SETS, resolve_templates, validate_templates

__all__ = [
    "CLIPTextImageEncoder",
    "ClipWeightsError",
    "HandCraftedPrompts",
    "LearnableContextPrompts",
    "MultiPromptText",
    "TEMPLATE_SETS",
    "VocabularyError",
    "available_clip_architectures",
    "check_class_names",
    "clip_reference",
    "frozen_clip",
    "load_clip",
    "load_clip_from_config",
    "load_clip_state_dict",
    "register_clip_architecture",
    "register_clip_architecture_file",
    "register_pretrained_source",
    "TOY_CLIP_NAME",
    "TOY_CLIP_TAG",
    "crop_zero_shot_accuracy",
    "toy_clip_report",
    "toy_clip_weights",
    "resolve_templates",
    "split_synonyms",
    "validate_templates",
    "weights_digest",
]
