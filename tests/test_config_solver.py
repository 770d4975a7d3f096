"""add_zsmask_config, the Base-*.yaml configs, and the optimizer / poly LR schedule."""
import os
import re

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

import zsmask.data  # noqa: F401  (registers the built-in splits)
from zsmask.config import add_zsmask_config
from zsmask.solver import build_lr_scheduler, build_optimizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# config file -> (train, test, crop, test size, iterations) as in the papers
BASES = {
    "configs/voc/Base-VOC.yaml": ("voc_zs_train", "voc_zs_test", 512, 512, 20000),
    "configs/coco/Base-COCOStuff.yaml": ("coco_stuff_zs_train", "coco_stuff_zs_test", 512, 512, 80000),
    "configs/pcontext/Base-PascalContext59.yaml": ("pcontext_zs_train", "pcontext_zs_test", 480, 480, 40000),
}


def _cfg(path=None):
    cfg = add_zsmask_config(get_cfg())
    if path:
        cfg.merge_from_file(os.path.join(ROOT, path))
    return cfg


@pytest.mark.parametrize("path", sorted(BASES))
def test_base_configs(path):
    train, test, crop, test_size, iters = BASES[path]
    cfg = _cfg(path)
    assert cfg.DATASETS.TRAIN == (train,) and cfg.DATASETS.TEST == (test,)
    assert train in DatasetCatalog.list() and test in DatasetCatalog.list()
    assert tuple(cfg.INPUT.CROP.SIZE) == (crop, crop) and cfg.INPUT.MIN_SIZE_TEST == test_size
    assert min(cfg.INPUT.MIN_SIZE_TRAIN) == crop // 2 and max(cfg.INPUT.MIN_SIZE_TRAIN) == 2 * crop
    assert cfg.SOLVER.MAX_ITER == iters and cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    assert cfg.INPUT.FORMAT == "RGB" and cfg.INPUT.DATASET_MAPPER_NAME == "zero_shot_semantic"


def test_every_zsmask_key_has_a_comment():
    lines = open(os.path.join(ROOT, "zsmask", "config.py")).read().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        if re.match(r"\s*cfg\.[A-Z_.]+ = ", line) and not lines[i - 1].strip().startswith("#"):
            uncommented.append(line.strip())
    assert uncommented == []
    cfg = _cfg()
    assert cfg.SOLVER.POLY_LR_POWER == 0.9 and cfg.TEST.ZERO_SHOT.EVAL_ZS3 is False


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
        self.head = torch.nn.Linear(4, 2)
        self.query_embed = torch.nn.Embedding(3, 4)
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_optimizer_param_groups():
    cfg = _cfg("configs/voc/Base-VOC.yaml")
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    opt = build_optimizer(cfg, _Toy())
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"backbone.0.weight", "backbone.0.bias", "backbone.1.weight", "backbone.1.bias",
                           "head.weight", "head.bias", "query_embed.weight"}
    assert groups["backbone.0.weight"]["lr"] == pytest.approx(1e-5)
    assert groups["head.weight"]["lr"] == pytest.approx(1e-4) and groups["head.weight"]["weight_decay"] == 0.05
    assert groups["backbone.1.weight"]["weight_decay"] == 0.0
    assert groups["query_embed.weight"]["weight_decay"] == 0.0
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="ADAMW or SGD"):
        build_optimizer(cfg, _Toy())


def test_poly_schedule_values():
    cfg = _cfg("configs/voc/Base-VOC.yaml")
    cfg.SOLVER.MAX_ITER = 100
    opt = build_optimizer(cfg, _Toy())
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[-1]["lr"])  # query_embed.weight: not backbone, base lr 1e-4
        opt.step()
        sched.step()
    head = [g for g in opt.param_groups if g["name"] == "head.weight"][0]
    assert lrs[0] == pytest.approx(1e-4)
    for t in (10, 50, 99):
        assert lrs[t] == pytest.approx(1e-4 * (1 - t / 100) ** 0.9, rel=1e-6)
    assert head["lr"] == pytest.approx(0.0, abs=1e-12)  # decayed to zero at MAX_ITER

    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 10, 0.1
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.2
    opt = build_optimizer(cfg, _Toy())
    sched = build_lr_scheduler(cfg, opt)
    seen = []
    for _ in range(100):
        seen.append(opt.param_groups[-1]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(1e-5)  # warm-up starts at WARMUP_FACTOR
    assert min(seen[10:]) == pytest.approx(2e-5)  # never below the constant ending


METHOD_CONFIGS = sorted(
    os.path.relpath(os.path.join(d, f), ROOT)
    for d, _, files in os.walk(os.path.join(ROOT, "configs")) for f in files
    if f.endswith(".yaml") and not f.startswith("Base-")
)


def _method_file(path: str) -> str:
    """The method's zero-shot config name (``alignzeg_ov.yaml`` is AlignZeg's ``alignzeg.yaml``)."""
    return os.path.basename(path).replace("_ov.yaml", ".yaml")


@pytest.mark.parametrize("path", METHOD_CONFIGS)
def test_method_configs_select_registered_parts(path):
    """Every method config merges and names parts that exist in zsmask's registries."""
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    import zsmask.modeling  # noqa: F401
    from zsmask.modeling.matcher import MATCHER_REGISTRY
    from zsmask.modeling.pixel_decoder import PIXEL_DECODER_REGISTRY
    from zsmask.modeling.transformer_decoder import TRANSFORMER_DECODER_REGISTRY

    cfg = _cfg(path)
    assert cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY
    assert cfg.MODEL.BACKBONE.NAME in BACKBONE_REGISTRY
    assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME in PIXEL_DECODER_REGISTRY
    assert cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME in TRANSFORMER_DECODER_REGISTRY
    from zsmask.modeling.auxiliary_heads import AUXILIARY_HEAD_REGISTRY
    from zsmask.modeling.criterion import CRITERION_LOSS_REGISTRY
    from zsmask.modeling.pseudo_masks import PSEUDO_LABELER_REGISTRY

    assert cfg.MODEL.ZSMASK.MATCHER in MATCHER_REGISTRY
    assert all(name in CRITERION_LOSS_REGISTRY for name in cfg.MODEL.ZSMASK.LOSSES)
    assert all(name in AUXILIARY_HEAD_REGISTRY for name in cfg.MODEL.ZSMASK.AUXILIARY_HEADS)
    assert not cfg.MODEL.ZSMASK.PSEUDO_LABELER or cfg.MODEL.ZSMASK.PSEUDO_LABELER in PSEUDO_LABELER_REGISTRY
    from zsmask.modeling.proposal_embedder import PROPOSAL_EMBEDDER_REGISTRY

    assert not cfg.MODEL.ZSMASK.PROPOSAL_EMBEDDER or cfg.MODEL.ZSMASK.PROPOSAL_EMBEDDER in PROPOSAL_EMBEDDER_REGISTRY
    from zsmask.modeling.pixel_score import PIXEL_SCORE_HEAD_REGISTRY

    assert not cfg.MODEL.ZSMASK.PIXEL_SCORE_HEAD or cfg.MODEL.ZSMASK.PIXEL_SCORE_HEAD in PIXEL_SCORE_HEAD_REGISTRY
    if cfg.MODEL.ZSMASK.PIXEL_SCORE_HEAD:  # OTSeg / ZegOT read CLIP ViT blocks in the joint space
        assert cfg.MODEL.BACKBONE.NAME == "CLIPVisualBackbone" and cfg.MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS
    from zsmask.modeling.post_processing import POST_PROCESSOR_REGISTRY

    assert all(name in POST_PROCESSOR_REGISTRY for name in cfg.MODEL.ZSMASK.POST_PROCESSORS)
    if _method_file(path) == "sazs.yaml":  # SAZS Secs. 3.3-3.5, 4.2: K = 5, 3 x 6 patches
        assert "BoundaryHead" in cfg.MODEL.ZSMASK.AUXILIARY_HEADS
        assert list(cfg.MODEL.ZSMASK.POST_PROCESSORS) == ["EigensegmentFusion"]
        assert cfg.MODEL.SAZS.SPECTRAL.NUM_EIGENVECTORS == 5 and list(cfg.MODEL.SAZS.BOUNDARY.PATCH_GRID) == [3, 6]
    assert len(cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES) == 3
    assert cfg.OUTPUT_DIR.startswith("output/")
    if path.startswith("configs/toy/"):  # the toy world: toy CLIP, toy-size model, toy datasets
        assert cfg.MODEL.CLIP.MODEL_NAME == "zsmask-toy-clip" and cfg.MODEL.CLIP.PRETRAINED == "zsmask-toy"
        assert cfg.DATASETS.TRAIN == ("toy_world_train",) and cfg.DATASETS.TEST == ("toy_world_test",)
        assert not cfg.INPUT.COLOR_AUG_SSD  # colour defines the toy classes
        return
    if _method_file(path) == "alignzeg.yaml":  # AlignZeg's settings (Sec. 4.2, supplementary Sec. 1)
        az = cfg.MODEL.ALIGNZEG
        assert cfg.MODEL.CLIP.MODEL_NAME == "ViT-B-16" and cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 100
        assert (az.IMAGE_ENCODER.DIM, az.IMAGE_ENCODER.DEPTH, az.IMAGE_ENCODER.PATCH_SIZE) == (240, 8, 16)
        assert (az.CLIP.FEATURE_LAYER, az.CLIP.DECODER_LAYERS, az.CLIP.INPUT_SCALE) == (6, 3, 0.5)
        assert tuple(cfg.INPUT.CROP.SIZE) == (640, 640) and cfg.INPUT.MIN_SIZE_TEST == 640
        assert all((az.MRPE.ENABLED, az.PBC.ENABLED, az.FES.ENABLED, az.BDS.ENABLED))
        assert (az.PBC.NEGATIVE_TOP_K, az.PBC.THRESHOLD, az.FES.ALPHA) == (50, 0.3, 3.0)
        weights = (az.PBC.WEIGHT, cfg.MODEL.MASK_FORMER.CLASS_WEIGHT, cfg.MODEL.MASK_FORMER.MASK_WEIGHT,
                   cfg.MODEL.MASK_FORMER.DICE_WEIGHT, az.FES.WEIGHT, az.BDS.WEIGHT)
        assert weights == (1.0, 2.0, 5.0, 5.0, 1e-2, 1e-4)  # Eq. 8
        coco = path.startswith("configs/coco/")
        assert az.BDS.NUM_PROTOTYPES == (20 if coco else 10) and az.CLIP.NUM_DEEP_PROMPTS == (20 if coco else 0)
        assert cfg.MODEL.ZSMASK.BACKGROUND_AT_INFERENCE  # no-object in the softmax (README, AlignZeg)
        return
    name = _method_file(path)
    if name in ("otseg.yaml", "zegot.yaml"):  # OTSeg Sec. 5.2 / Appendix B, F; ZegOT Sec. 5.2
        ot = cfg.MODEL.OTSEG
        assert cfg.MODEL.CLIP.MODEL_NAME == "ViT-B-16" and ot.DECODER.NUM_LAYERS == 3
        assert (ot.LOSS.FOCAL_WEIGHT, ot.LOSS.DICE_WEIGHT, ot.LOSS.CE_WEIGHT, ot.LOSS.FOCAL_GAMMA) == (20, 1, 1, 2)
        assert tuple(cfg.INPUT.CROP.SIZE) == ((480, 480) if path.startswith("configs/pcontext/") else (512, 512))
        if name == "otseg.yaml":
            assert len(ot.PROMPTS.TEMPLATES) == (6 if path.startswith("configs/voc/") else 8)
            assert ot.PROMPTS.NUM_LEARNABLE == 0 and list(cfg.MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS) == [12]
            assert ot.DECODER_WEIGHT == 0.5 and cfg.MODEL.CLIP_BACKBONE.NUM_DEEP_PROMPTS > 0
        else:
            assert (ot.PROMPTS.NUM_LEARNABLE, ot.PROMPTS.CONTEXT_LENGTH) == (4, 8)
            assert list(cfg.MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS) == [9, 10, 11, 12]  # L = 4
            assert ot.DECODER_WEIGHT == 0.2 and cfg.MODEL.CLIP_BACKBONE.NUM_DEEP_PROMPTS == 0  # frozen CLIP
    # the paper defaults: 6 encoder layers over 3 levels, 9 decoder layers, 100 queries (Split
    # Matching adds its candidate queries to them)
    assert cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS == 6
    candidates = cfg.MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES if cfg.MODEL.ZSMASK.MATCHER == "split_matching" else 0
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 9 and cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES - candidates == 100


@pytest.mark.parametrize("depth", [50, 101])
def test_resnet_backbones_feed_the_pixel_decoder(depth):
    """detectron2's ResNet-50/101 (random init) through zsmask's pixel decoder at 64x64."""
    from detectron2.modeling import build_backbone

    from zsmask.modeling.pixel_decoder import build_pixel_decoder

    cfg = _cfg("configs/voc/hungarian_R101.yaml" if depth == 101 else "configs/voc/hungarian.yaml")
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1  # the layer count does not change the shapes
    backbone = build_backbone(cfg)
    assert cfg.MODEL.RESNETS.DEPTH == depth
    assert len(backbone.res4) == {50: 6, 101: 23}[depth]
    shapes = {k: (v.channels, v.stride) for k, v in backbone.output_shape().items()}
    assert shapes == {"res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
    decoder = build_pixel_decoder(cfg, backbone.output_shape())
    with torch.no_grad():
        mask_features, multi_scale = decoder.forward_features(backbone(torch.zeros(1, 3, 64, 64)))
    assert tuple(mask_features.shape) == (1, 256, 16, 16)
    assert [tuple(f.shape[-2:]) for f in multi_scale] == [(2, 2), (4, 4), (8, 8)]


OPEN_VOCABULARY_CONFIGS = sorted(p for p in METHOD_CONFIGS if p.endswith("_ov.yaml"))


@pytest.mark.parametrize("path", OPEN_VOCABULARY_CONFIGS)
def test_open_vocabulary_configs_train_on_all_171_classes_and_change_nothing_else(path):
    zero_shot = path.replace("_ov.yaml", ".yaml")
    cfg, base = _cfg(path), _cfg(zero_shot)
    assert cfg.DATASETS.TRAIN == ("coco_stuff_171_train",) and cfg.DATASETS.TEST == ("coco_stuff_171_test",)
    assert cfg.OUTPUT_DIR == base.OUTPUT_DIR + "_ov"
    for node in (cfg, base):
        node.DATASETS.TRAIN, node.DATASETS.TEST, node.OUTPUT_DIR = (), (), ""
    assert cfg.dump() == base.dump()


def test_every_coco_method_has_an_open_vocabulary_config():
    methods = {os.path.basename(p)[: -len(".yaml")] for p in METHOD_CONFIGS if p.startswith("configs/coco/")}
    zero_shot = {m for m in methods if not m.endswith("_ov") and not m.startswith("hungarian_")}
    assert {m + "_ov" for m in zero_shot} <= methods
