"""configs/*/zsmask.yaml: Split Matching's training, OTSeg's pixel score path and SAZS's fusion in one model."""
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_real_data_configs_combine_split_matching_with_the_pixel_score_path(dataset):
    from zsmask.engine import build_config

    cfg = build_config(os.path.join(ROOT, "configs", dataset, "zsmask.yaml"))
    z, sm = cfg.MODEL.ZSMASK, cfg.MODEL.SPLIT_MATCHING
    assert z.MATCHER == "split_matching" and z.PSEUDO_LABELER == "clip_kmeans" and z.CLASS_SCORE == "sigmoid"
    assert list(z.LOSSES) == ["focal_labels", "iou_dice_masks", "candidate_cosine"]
    assert list(z.AUXILIARY_HEADS) == ["MultiScaleFeatureEnhancement"] and z.RANDOM_QUERIES.NUM == 0
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES - sm.NUM_CANDIDATE_QUERIES == 100 and sm.NUM_CANDIDATE_QUERIES == 50
    # the pixel score path reads CLIP's block embeddings: the backbone is CLIP's visual tower
    assert z.PIXEL_SCORE_HEAD == "MultiPromptSinkhornHead" and z.PIXEL_SCORE_WEIGHT == 0.5
    assert cfg.MODEL.BACKBONE.NAME == "CLIPVisualBackbone" and list(cfg.MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS) == [12]
    assert cfg.MODEL.CLIP.MODEL_NAME == "ViT-B-16" and cfg.MODEL.WEIGHTS == ""
    # no DINO weights on a fresh machine: the fusion is an opt-in there
    assert list(z.POST_PROCESSORS) == [] and cfg.OUTPUT_DIR == f"output/{dataset}/zsmask"


def test_toy_zsmask_trains_every_part_and_evaluates_with_the_fusion(tmp_path):
    from conftest import train_on_smoke_world

    logged = train_on_smoke_world(tmp_path, "zsmask.yaml", "toy_world_zsmask_smoke", "SOLVER.MAX_ITER", "6",
                                  "MODEL.SPLIT_MATCHING.PSEUDO_MASKS.CACHE_DIR", str(tmp_path / "pseudo_cache"))
    rows = [row for row in logged if "loss_cos" in row]
    assert rows
    for key in ("loss_cos", "loss_mfe_ce", "loss_pixel_score_focal", "loss_pixel_decoder_dice"):
        assert all(math.isfinite(row[key]) and row[key] >= 0 for row in rows), key
    assert any((tmp_path / "pseudo_cache").rglob("*.pt"))  # candidate queries had pseudo masks to match
    with open(tmp_path / "config.yaml") as f:
        text = f.read()
    assert "EigensegmentFusion" in text and "MultiPromptSinkhornHead" in text and "split_matching" in text
