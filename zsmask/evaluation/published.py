"""Published open-vocabulary mIoU of the projects users compare zsmask with, by CLIP backbone.

Each entry is one model of one project: its CLIP (as open_clip names it, so it can be matched
with ``MODEL.CLIP.MODEL_NAME``), its training set, the absent-class convention its number was
computed under (:data:`~zsmask.evaluation.zero_shot_evaluator.ABSENT_CLASS_CONVENTIONS`; this
matters for PASCAL Context-459 only, where about a quarter of the classes never occur in the
validation set), mIoU per registered test set, and where the numbers were read. ``voc_20b`` is
CAT-Seg's VOC with background predicted by 39 PASCAL Context class names, a different set from
VOC-21 and not registered here.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

__all__ = ["PublishedResult", "PUBLISHED", "published_for"]


@dataclass(frozen=True)
class PublishedResult:
    method: str
    clip: str  # open_clip model name of the CLIP backbone
    trained_on: str
    absent_classes: str  # "exclude" or "count_predicted"
    miou: Dict[str, float] = field(default_factory=dict)  # registered test set -> mIoU
    source: str = ""


PUBLISHED: Tuple[PublishedResult, ...] = (
    PublishedResult(
        "CAT-Seg (B)", "ViT-B-16", "COCO-Stuff 171", "exclude",
        {"ade20k_847_test": 12.0, "pcontext_459_test": 19.0, "ade20k_150_test": 31.8, "pcontext_59_test": 57.5,
         "voc_20_test": 94.6, "voc_20b": 77.3},
        "cvlab-kaist/CAT-Seg README (commit 6d3a188a); detectron2 from its main branch (requirements.txt)"),
    PublishedResult(
        "CAT-Seg (L)", "ViT-L-14-336", "COCO-Stuff 171", "exclude",
        {"ade20k_847_test": 16.0, "pcontext_459_test": 23.8, "ade20k_150_test": 37.9, "pcontext_59_test": 63.3,
         "voc_20_test": 97.0, "voc_20b": 82.5},
        "cvlab-kaist/CAT-Seg README (commit 6d3a188a); CLIP ViT-L/14 at 336 px (configs/vitl_336.yaml)"),
    PublishedResult(
        "SAN (B)", "ViT-B-16", "COCO-Stuff 171", "exclude",
        {"ade20k_847_test": 10.2, "pcontext_459_test": 16.7, "ade20k_150_test": 27.6, "pcontext_59_test": 54.1,
         "voc_20_test": 93.9},
        "MendelXu/SAN resources/san_vit_b_16.log, final evaluation (commit e19262d1)"),
    PublishedResult(
        "SAN (L)", "ViT-L-14-336", "COCO-Stuff 171", "exclude",
        {"ade20k_847_test": 13.0, "pcontext_459_test": 20.8, "ade20k_150_test": 31.9, "pcontext_59_test": 57.5,
         "voc_20_test": 95.2},
        "MendelXu/SAN resources/san_vit_large_14.log, final evaluation (commit e19262d1); CLIP ViT-L/14 at 336 px "
        "(configs/san_clip_vit_large_res4_coco.yaml)"),
    PublishedResult(
        "FC-CLIP", "convnext_large_d_320", "COCO panoptic", "exclude",
        {"ade20k_847_test": 14.8, "pcontext_459_test": 18.2, "ade20k_150_test": 34.1, "pcontext_59_test": 58.4,
         "voc_20_test": 95.4, "voc_21_test": 81.8},
        "bytedance/fc-clip README and logs/testing/pc-459.log (commit 2b0bbe21)"),
    PublishedResult(
        "MAFT (B)", "ViT-B-16", "COCO-Stuff 171", "count_predicted",
        {"ade20k_847_test": 10.25, "pcontext_459_test": 12.85, "ade20k_150_test": 29.14, "pcontext_59_test": 53.33,
         "voc_20_test": 90.44},
        "jiaosiyu1999/MAFT README (commit bb6e8fee); detectron2 pinned at v0.6 (install.sh)"),
    PublishedResult(
        "MAFT (L)", "ViT-L-14", "COCO-Stuff 171", "count_predicted",
        {"ade20k_847_test": 12.12, "pcontext_459_test": 15.68, "ade20k_150_test": 32.05, "pcontext_59_test": 58.01,
         "voc_20_test": 92.14},
        "jiaosiyu1999/MAFT README (commit bb6e8fee); ViT-L/14 (its input resolution is not stated there)"),
    PublishedResult(
        "ov-seg (R-101c proposals)", "ViT-B-16", "COCO-Stuff 171", "count_predicted",
        {"ade20k_847_test": 7.1, "pcontext_459_test": 11.0, "ade20k_150_test": 24.8, "pcontext_59_test": 53.3,
         "voc_20_test": 92.6},
        "facebookresearch/ov-seg GETTING_STARTED.md (commit 36f49d49); its own evaluator counts predicted absent classes"),
    PublishedResult(
        "ov-seg (Swin-B proposals)", "ViT-L-14", "COCO-Stuff 171", "count_predicted",
        {"ade20k_847_test": 9.0, "pcontext_459_test": 12.4, "ade20k_150_test": 29.6, "pcontext_59_test": 55.7,
         "voc_20_test": 94.5},
        "facebookresearch/ov-seg GETTING_STARTED.md (commit 36f49d49)"),
)


def published_for(clip_model_name: str) -> List[PublishedResult]:
    """The published results whose CLIP is ``clip_model_name`` (open_clip's name, case and
    ``/`` vs ``-`` ignored), in :data:`PUBLISHED` order."""
    def norm(name: str) -> str:
        return name.lower().replace("/", "-")

    return [p for p in PUBLISHED if norm(p.clip) == norm(clip_model_name)]
