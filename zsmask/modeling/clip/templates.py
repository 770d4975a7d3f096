"""Prompt templates for CLIP text classifiers (each a format string with one "{}").

Named sets (``MODEL.CLIP.PROMPT_TEMPLATE_SET``):

- ``"vild"``: the 14 templates of ViLD (Gu et al., 2022) as used by ZegFormer / FC-CLIP.
- ``"imagenet"``: the 80 ImageNet templates of CLIP (Radford et al., 2021), taken from
  open_clip's ``OPENAI_IMAGENET_TEMPLATES``.
- ``"single"``: ``"a photo of a {}."``.
"""
from typing import Dict, Optional, Sequence, Tuple

from open_clip import OPENAI_IMAGENET_TEMPLATES

__all__ = ["TEMPLATE_SETS", "resolve_templates", "validate_templates"]

VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

IMAGENET_TEMPLATES = tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)

SINGLE_TEMPLATE = ("a photo of a {}.",)

TEMPLATE_SETS: Dict[str, Tuple[str, ...]] = {
    "vild": VILD_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
    "single": SINGLE_TEMPLATE,
}


def validate_templates(templates: Sequence[str]) -> Tuple[str, ...]:
    """Return ``templates`` as a tuple after checking each is a string with exactly one "{}"."""
    if isinstance(templates, str):
        raise ValueError(f"Prompt templates must be a list of strings, got the string {templates!r}")
    templates = tuple(templates)
    if not templates:
        raise ValueError("Prompt template list is empty; give at least one template with one '{}'")
    for template in templates:
        if not isinstance(template, str) or not template.strip():
            raise ValueError(f"Prompt template {template!r} must be a non-empty string")
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            raise ValueError(
                f"Prompt template {template!r} must contain exactly one '{{}}' (the class name) "
                "and no other braces"
            )
    return templates


def resolve_templates(set_name: str, explicit_templates: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """Templates from ``MODEL.CLIP.PROMPT_TEMPLATES`` when non-empty, else the named set."""
    if explicit_templates:
        return validate_templates(explicit_templates)
    if set_name not in TEMPLATE_SETS:
        raise ValueError(
            f"Unknown prompt template set {set_name!r} (MODEL.CLIP.PROMPT_TEMPLATE_SET); "
            f"valid sets: {sorted(TEMPLATE_SETS)}, or list templates in MODEL.CLIP.PROMPT_TEMPLATES"
        )
    return TEMPLATE_SETS[set_name]
