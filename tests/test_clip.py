"""CLIP loading, prompt ensembles, the vocabulary cache, dense embeddings and the CLIP backbone.

Everything runs on tiny real open_clip architectures (a 2-layer ViT and a 1-block-per-stage
ModifiedResNet) registered from dicts, with random weights or checkpoints written to tmp_path.
"""
import functools
import json
import os

import open_clip
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from zsmask.config import add_zsmask_config
from zsmask.modeling.backbone import CLIPVisualBackbone
from zsmask.modeling.clip import (
    TEMPLATE_SETS,
    CLIPTextImageEncoder,
    ClipWeightsError,
    load_clip,
    register_clip_architecture,
    resolve_templates,
    validate_templates,
)
from zsmask.modeling.clip.visual_towers import resize_grid_embedding, vit_forward_tokens

VIT = "zsmask-test-clip-vit"
RN = "zsmask-test-clip-rn"
TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
VIT_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": TEXT_CFG,
}
RN_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
    "text_cfg": TEXT_CFG,
}
register_clip_architecture(VIT, VIT_CFG)
register_clip_architecture(RN, RN_CFG)


@functools.lru_cache(maxsize=None)
def _tokenizer(model_name):
    return open_clip.get_tokenizer(model_name)


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer(VIT)


def _encoder(model_name=VIT, templates=("a photo of a {}.", "a {} in the scene."), seed=0, clip_model=None, **kwargs):
    torch.manual_seed(seed)
    return CLIPTextImageEncoder(
        clip_model=clip_model if clip_model is not None else load_clip(model_name),
        tokenizer=_tokenizer(model_name), templates=templates, model_name=model_name, **kwargs)


@functools.lru_cache(maxsize=None)
def _shared_encoder(model_name):
    """One encoder per tower for the read-only image tests."""
    return _encoder(model_name)


def _hand_ensemble(model, tokenizer, names, templates):
    """Reference: tokenizer + encode_text per template, normalise, mean, normalise."""
    with torch.no_grad():
        rows = []
        for name in names:
            per_template = F.normalize(model.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1)
            rows.append(F.normalize(per_template.mean(0), dim=-1))
    return torch.stack(rows)


def _count_text_calls(encoder):
    calls = []
    original = encoder.model.encode_text

    def counting(tokens, *args, **kwargs):
        calls.append(tokens.shape[0])
        return original(tokens, *args, **kwargs)

    encoder.model.encode_text = counting
    return calls


# ------------------------------------------------------------------------------------ loader
def test_random_init_is_float32_eval_and_fresh_each_call():
    first, second = load_clip(VIT), load_clip(VIT)
    assert first is not second
    assert not first.training
    assert all(p.dtype == torch.float32 for p in first.parameters())
    assert first.visual.output_dim == 32


@pytest.mark.parametrize("layout", ["raw.pt", "state_dict.pth", "model.bin", "module_prefix.pt", "raw.safetensors"])
def test_checkpoint_file_round_trip(tmp_path, tokenizer, layout):
    torch.manual_seed(1)
    source = load_clip(VIT)
    state = source.state_dict()
    path = str(tmp_path / layout)
    if layout.startswith("state_dict"):
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif layout.startswith("model"):
        torch.save({"model": state}, path)
    elif layout.startswith("module"):
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif layout.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    loaded = load_clip(VIT, path)
    tokens = tokenizer(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), source.encode_text(tokens), rtol=0, atol=0)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert not torch.equal(load_clip(VIT).state_dict()["token_embedding.weight"], state["token_embedding.weight"])


def test_missing_file_names_the_expected_model(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_clip(VIT, str(tmp_path / "nope.pt"))
    message = str(err.value)
    assert "nope.pt" in message and repr(VIT) in message and "MODEL.CLIP.PRETRAINED" in message


def test_wrong_architecture_file_names_expected_model_and_suggests_model_name(tmp_path):
    path = str(tmp_path / "rn.pt")
    torch.save(load_clip(RN).state_dict(), path)
    with pytest.raises(ClipWeightsError) as err:
        load_clip(VIT, path)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert repr(VIT) in message and "MODEL.CLIP.MODEL_NAME" in message
    assert "missing keys" in message and "unexpected keys" in message and "visual.conv1.weight" in message
    assert repr(RN) in message  # the registered architecture the checkpoint matches


def test_shape_mismatch_is_reported(tmp_path):
    state = load_clip(VIT).state_dict()
    state["text_projection"] = torch.zeros(64, 16)
    path = str(tmp_path / "narrow.pt")
    torch.save(state, path)
    expected = r"1 shape mismatch keys: text_projection: checkpoint \(64, 16\) vs model \(64, 32\)"
    with pytest.raises(ClipWeightsError, match=expected):
        load_clip(VIT, path)


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""])
def test_corrupt_file_names_the_expected_model(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(ClipWeightsError) as err:
        load_clip(VIT, str(path))
    assert "broken.pth" in str(err.value) and repr(VIT) in str(err.value)


def test_file_without_state_dict_is_rejected(tmp_path):
    path = str(tmp_path / "list.pt")
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ClipWeightsError, match="holds no state dict"):
        load_clip(VIT, path)


def test_unknown_model_name_lists_similar_names():
    with pytest.raises(ValueError) as err:
        load_clip("ViT-B-61")
    assert "'ViT-B-61'" in str(err.value) and "ViT-B-16" in str(err.value)
    assert "register_clip_architecture" in str(err.value)


def test_unknown_tag_lists_valid_tags_without_downloading():
    with pytest.raises(ValueError) as err:
        load_clip("ViT-B-16", "opneai")
    assert "'opneai'" in str(err.value) and "'openai'" in str(err.value) and "'ViT-B-16'" in str(err.value)


def test_register_architecture_rules(tmp_path):
    register_clip_architecture(VIT, VIT_CFG)  # same config again: no-op
    with pytest.raises(ValueError, match="built-in"):
        register_clip_architecture("ViT-B-16", VIT_CFG)
    with pytest.raises(ValueError, match="text_cfg"):
        register_clip_architecture("zsmask-test-incomplete", {"embed_dim": 8, "vision_cfg": {}})
    wider = json.loads(json.dumps(VIT_CFG))
    wider["embed_dim"] = 48
    register_clip_architecture("zsmask-test-replaced", VIT_CFG)
    register_clip_architecture("zsmask-test-replaced", wider)
    assert load_clip("zsmask-test-replaced").visual.output_dim == 48


# ------------------------------------------------------------------------------------ templates
def test_template_sets_and_validation():
    assert len(TEMPLATE_SETS["vild"]) == 14 and len(TEMPLATE_SETS["imagenet"]) == 80
    assert TEMPLATE_SETS["single"] == ("a photo of a {}.",)
    for templates in TEMPLATE_SETS.values():
        assert validate_templates(templates) == templates
    assert "itap of a {}." in TEMPLATE_SETS["imagenet"]
    assert resolve_templates("vild", ["{} here"]) == ("{} here",)
    assert resolve_templates("single", []) == ("a photo of a {}.",)
    with pytest.raises(ValueError, match="valid sets"):
        resolve_templates("nope", [])
    for bad in (["no slot"], ["{} and {}"], [""], [], "a {}", ["a {x}"]):
        with pytest.raises(ValueError):
            validate_templates(bad)


# ------------------------------------------------------------------------------------ text
def test_vocabulary_embeddings_are_the_normalised_template_ensemble(tokenizer):
    templates = TEMPLATE_SETS["vild"]
    encoder = _encoder(templates=templates)
    names = ["cat", "traffic light", "sky"]
    embeddings = encoder.encode_vocabulary(names)
    assert embeddings.shape == (3, encoder.embed_dim) == (3, 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    reference = _hand_ensemble(encoder.model, tokenizer, names, templates)
    torch.testing.assert_close(embeddings, reference, atol=1e-6, rtol=0)
    assert not embeddings.requires_grad


def test_synonyms_are_averaged(tokenizer):
    encoder = _encoder()
    both = encoder.encode_vocabulary(["tv, monitor"])[0]
    parts = _hand_ensemble(encoder.model, tokenizer, ["tv", "monitor"], encoder.templates)
    torch.testing.assert_close(both, F.normalize(parts.mean(0), dim=-1), atol=1e-6, rtol=0)
    kept = _encoder(average_synonyms=False).encode_vocabulary(["tv, monitor"])[0]
    whole = _hand_ensemble(encoder.model, tokenizer, ["tv, monitor"], encoder.templates)[0]
    torch.testing.assert_close(kept, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("vocabulary, message", [
    ([], "empty"), (["cat", " "], "empty"), (["cat", "dog", "cat "], "duplicate"), ("cat", "string"),
    (["a,"], "synonym"),
])
def test_bad_vocabulary_is_rejected(vocabulary, message):
    with pytest.raises(ValueError, match=message):
        _shared_encoder(VIT).encode_vocabulary(vocabulary)


def test_cache_hits_misses_and_is_never_stale(tokenizer):
    encoder = _encoder()
    calls = _count_text_calls(encoder)
    first = encoder.encode_vocabulary(["cat", "dog"])
    assert calls == [4]  # 2 names x 2 templates, one batch
    assert encoder.encode_vocabulary(("cat", "dog")) is first and calls == [4]

    changed = encoder.encode_vocabulary(["cat", "sheep"])
    assert calls == [4, 4]
    torch.testing.assert_close(changed, _hand_ensemble(encoder.model, tokenizer, ["cat", "sheep"], encoder.templates))
    torch.testing.assert_close(changed[0], first[0])
    assert not torch.allclose(changed[1], first[1])
    reordered = encoder.encode_vocabulary(["dog", "cat"])
    torch.testing.assert_close(reordered, first[[1, 0]])
    other_templates = encoder.encode_vocabulary(["cat", "dog"], templates=["{}"])
    torch.testing.assert_close(other_templates, _hand_ensemble(encoder.model, tokenizer, ["cat", "dog"], ["{}"]))


def test_loading_new_weights_invalidates_the_cache(tokenizer):
    encoder = _encoder(seed=0)
    before = encoder.encode_vocabulary(["cat", "dog"])
    other = _encoder(seed=1)
    encoder.load_state_dict(other.state_dict())  # as DetectionCheckpointer loading MODEL.WEIGHTS
    after = encoder.encode_vocabulary(["cat", "dog"])
    assert not torch.allclose(after, before, atol=1e-3)
    reference = _hand_ensemble(other.model, tokenizer, ["cat", "dog"], other.templates)
    torch.testing.assert_close(after, reference, atol=1e-6, rtol=0)

    # weights changed in place, bypassing the module's hooks
    with torch.no_grad():
        encoder.model.text_projection.mul_(-1)
    torch.testing.assert_close(encoder.encode_vocabulary(["cat", "dog"]), -after, atol=1e-6, rtol=0)


def test_moving_or_casting_invalidates_the_cache():
    encoder = _encoder()
    calls = _count_text_calls(encoder)
    float32 = encoder.encode_vocabulary(["cat"])
    encoder.to(torch.float64)
    float64 = encoder.encode_vocabulary(["cat"])
    assert float64.dtype == torch.float64 and len(calls) == 2
    torch.testing.assert_close(float64.float(), float32, atol=1e-5, rtol=0)


def test_cache_is_bounded_lru():
    encoder = _encoder(cache_size=2)
    calls = _count_text_calls(encoder)
    for vocabulary in (["a"], ["b"], ["a"], ["c"], ["a"], ["b"]):
        encoder.encode_vocabulary(vocabulary)
    # "a" stays (recently used), "b" is evicted by "c" and re-encoded
    assert len(calls) == 4


def test_clip_stays_frozen_and_in_eval_mode():
    encoder = _encoder()
    encoder.train()
    assert encoder.training and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


# ------------------------------------------------------------------------------------ image
def _images(h, w, batch=2, seed=0):
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("model_name, size, grid", [
    (VIT, (64, 64), (4, 4)), (VIT, (64, 96), (4, 6)), (VIT, (50, 70), (4, 5)),  # stride 16
    (RN, (64, 64), (2, 2)), (RN, (64, 96), (2, 3)), (RN, (50, 70), (2, 3)),  # stride 32
])
def test_dense_embeddings_shapes_and_norms(model_name, size, grid):
    encoder = _shared_encoder(model_name)
    assert encoder.dense_stride == (16 if model_name == VIT else 32)
    out = encoder.encode_image_dense(_images(*size))
    assert out["patch_embeddings"].shape == (2, 32, *grid)
    assert out["cls_embedding"].shape == (2, 32)
    torch.testing.assert_close(out["patch_embeddings"].norm(dim=1), torch.ones(2, *grid), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["cls_embedding"].norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_name", [VIT, RN])
def test_cls_embedding_equals_open_clip_at_native_size(model_name):
    encoder = _shared_encoder(model_name)
    images = _images(64, 64)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = encoder.model.encode_image((images / 255 - mean) / std, normalize=True)
    torch.testing.assert_close(encoder.encode_image_dense(images)["cls_embedding"], expected, atol=1e-5, rtol=0)


def test_vit_cls_embedding_at_other_size_uses_interpolated_positions():
    encoder = _shared_encoder(VIT)
    images = _images(64, 96)
    resized = open_clip.create_model(VIT, force_image_size=(64, 96))
    state = encoder.model.state_dict()
    state["visual.positional_embedding"] = resize_grid_embedding(state["visual.positional_embedding"], (4, 4), (4, 6))
    resized.load_state_dict(state)
    with torch.no_grad():
        expected = resized.eval().encode_image(encoder.normalize_images(images), normalize=True)
    torch.testing.assert_close(encoder.encode_image_dense(images)["cls_embedding"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("route", ["maskclip", "value_only"])
def test_vit_dense_route_is_self_only_attention_in_the_last_block(route):
    """MaskCLIP's value path equals the last block with each token attending only to itself."""
    encoder = _encoder(VIT, clip_model=_shared_encoder(VIT).model, vit_dense_route=route)
    images = _images(64, 96)
    visual = encoder.model.visual
    x = encoder.normalize_images(images)
    with torch.no_grad():
        tokens = visual.conv1(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([visual.class_embedding.expand(2, 1, -1), tokens], dim=1)
        tokens = tokens + resize_grid_embedding(visual.positional_embedding, (4, 4), (4, 6))
        tokens = visual.transformer.resblocks[0](visual.ln_pre(tokens))
        last = visual.transformer.resblocks[-1]
        self_only = torch.full((25, 25), float("-inf")).fill_diagonal_(0.0)
        if route == "maskclip":
            out = last(tokens, attn_mask=self_only)
        else:
            out = last.attention(last.ln_1(tokens), attn_mask=self_only)
        expected = F.normalize(visual.ln_post(out[:, 1:]) @ visual.proj, dim=-1)
    expected = expected.transpose(1, 2).reshape(2, 32, 4, 6)
    torch.testing.assert_close(encoder.encode_image_dense(images)["patch_embeddings"], expected, atol=1e-5, rtol=0)


def test_resnet_dense_is_attnpool_value_path_per_location():
    encoder = _shared_encoder(RN)
    images = _images(64, 96)
    visual = encoder.model.visual
    pool = visual.attnpool
    with torch.no_grad():
        x = encoder.normalize_images(images)
        res5 = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
        v = F.conv2d(res5, pool.v_proj.weight[:, :, None, None], pool.v_proj.bias)
        expected = F.normalize(F.conv2d(v, pool.c_proj.weight[:, :, None, None], pool.c_proj.bias), dim=1)
    torch.testing.assert_close(encoder.encode_image_dense(images)["patch_embeddings"], expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ config
def _cfg(tmp_path, model_name=VIT, config=VIT_CFG, **clip):
    arch = tmp_path / f"{model_name}-file.json"
    arch.write_text(json.dumps(config))
    cfg = add_zsmask_config(get_cfg())
    cfg.MODEL.CLIP.MODEL_NAME = model_name + "-file"
    cfg.MODEL.CLIP.ARCHITECTURE_FILE = str(arch)
    cfg.MODEL.BACKBONE.NAME = "CLIPVisualBackbone"
    for key, value in clip.items():
        cfg.MODEL.CLIP[key] = value
    return cfg


def test_encoder_from_config_with_architecture_file_and_checkpoint(tmp_path, tokenizer):
    torch.manual_seed(3)
    register_clip_architecture(VIT + "-file", VIT_CFG)
    source = load_clip(VIT + "-file")
    weights = str(tmp_path / "clip.pth")
    torch.save({"state_dict": source.state_dict()}, weights)
    cfg = _cfg(tmp_path, PRETRAINED=weights, PROMPT_TEMPLATE_SET="single", CONTEXT_LENGTH=77)
    encoder = CLIPTextImageEncoder(cfg)
    assert encoder.model_name == VIT + "-file" and encoder.templates == ("a photo of a {}.",)
    reference = _hand_ensemble(source, tokenizer, ["cat"], encoder.templates)
    torch.testing.assert_close(encoder.encode_vocabulary(["cat"]), reference)
    cfg.MODEL.CLIP.PROMPT_TEMPLATE_SET = "nope"
    with pytest.raises(ValueError, match="PROMPT_TEMPLATE_SET"):
        CLIPTextImageEncoder(cfg)


def test_shorter_context_length_truncates_prompts(tmp_path):
    cfg = _cfg(tmp_path, PROMPT_TEMPLATE_SET="single", CONTEXT_LENGTH=4)
    encoder = CLIPTextImageEncoder(cfg)
    # "a photo of a cat." and "a photo of a dog." agree in their first 2 tokens (+ start/end)
    cat, dog = encoder.encode_vocabulary(["cat", "dog"])
    torch.testing.assert_close(cat, dog)
    cfg.MODEL.CLIP.CONTEXT_LENGTH = 78
    with pytest.raises(ValueError, match="CONTEXT_LENGTH"):
        CLIPTextImageEncoder(cfg)


# ------------------------------------------------------------------------------------ backbone
@pytest.mark.parametrize("model_name, config, channels", [
    (VIT, VIT_CFG, {"res2": 16, "res3": 32, "res4": 64, "res5": 64}),
    (RN, RN_CFG, {"res2": 32, "res3": 64, "res4": 128, "res5": 256}),
])
def test_backbone_outputs_and_frozen_gradients(tmp_path, model_name, config, channels):
    cfg = _cfg(tmp_path, model_name, config)
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert isinstance(backbone, CLIPVisualBackbone) and backbone.size_divisibility == 32
    strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert backbone.output_shape() == {k: ShapeSpec(channels=channels[k], stride=strides[k]) for k in strides}
    backbone.train()
    assert not backbone.visual.training
    running = {k: v.clone() for k, v in backbone.visual.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 64, 96)
    features = backbone(x)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        k: (2, channels[k], 64 // s, 96 // s) for k, s in strides.items()}
    assert {k: tuple(v.shape[-2:]) for k, v in backbone(torch.randn(1, 3, 50, 70)).items()} == {
        k: (64 // s, 96 // s) for k, s in strides.items()}  # padded to 64 x 96
    assert all(torch.equal(backbone.visual.state_dict()[k], v) for k, v in running.items())  # BN stats untouched
    pyramid = [p for n, p in backbone.named_parameters() if not n.startswith("visual.")]
    if model_name == RN:  # nothing trainable: the features carry no graph
        assert not pyramid and not any(f.requires_grad for f in features.values())
        return
    sum(f.square().mean() for f in features.values()).backward()
    assert all(p.grad is None for p in backbone.visual.parameters())
    assert pyramid and all(p.grad is not None and p.grad.abs().sum() > 0 for p in pyramid)


def test_vit_backbone_res4_is_the_normed_last_block_grid(tmp_path):
    torch.manual_seed(0)
    backbone = CLIPVisualBackbone(visual=load_clip(VIT).visual, out_features=["res5", "res4"])
    assert list(backbone.output_shape()) == ["res4", "res5"]
    assert not any(n.startswith("pyramid.") for n, _ in backbone.named_parameters())
    x = torch.randn(1, 3, 64, 96)
    visual = backbone.visual
    with torch.no_grad():
        tokens = visual.conv1(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([visual.class_embedding.view(1, 1, -1), tokens], dim=1)
        tokens = visual.ln_pre(tokens + resize_grid_embedding(visual.positional_embedding, (4, 4), (4, 6)))
        tokens = visual.ln_post(visual.transformer(tokens))
        res4 = tokens[:, 1:].transpose(1, 2).reshape(1, 64, 4, 6)
    features = backbone(x)
    torch.testing.assert_close(features["res4"], res4, atol=1e-5, rtol=0)
    torch.testing.assert_close(features["res5"], F.max_pool2d(res4, 2), atol=1e-5, rtol=0)


def test_unfrozen_backbone_trains_the_tower(tmp_path):
    cfg = _cfg(tmp_path, RN, RN_CFG)
    cfg.MODEL.CLIP_BACKBONE.FREEZE = False
    cfg.MODEL.CLIP_BACKBONE.OUT_FEATURES = ["res3", "res5"]
    backbone = build_backbone(cfg)
    backbone.train()
    assert backbone.visual.training
    features = backbone(torch.randn(2, 3, 64, 64))
    assert list(features) == ["res3", "res5"]
    features["res5"].sum().backward()
    assert backbone.visual.layer4[0].conv1.weight.grad is not None
    cfg.MODEL.CLIP_BACKBONE.OUT_FEATURES = ["res6"]
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        build_backbone(cfg)


def test_missing_architecture_file_is_reported(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.MODEL.CLIP.ARCHITECTURE_FILE = str(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match="ARCHITECTURE_FILE"):
        build_backbone(cfg)
    assert os.path.exists(tmp_path / f"{VIT}-file.json")


def test_patch8_vit_backbone_keeps_its_native_stride_8_grid():
    """A patch-8 tower (the toy CLIP's kind) is not resampled to stride 16: res3 is its token
    grid, res2 one transposed convolution of it, res4 / res5 max-pools of it."""
    torch.manual_seed(0)
    config = dict(VIT_CFG, vision_cfg=dict(VIT_CFG["vision_cfg"], patch_size=8))
    register_clip_architecture(VIT + "-p8", config)
    backbone = CLIPVisualBackbone(visual=load_clip(VIT + "-p8").visual)
    assert backbone.base_stride == 8
    assert {k: (v.channels, v.stride) for k, v in backbone.output_shape().items()} == {
        "res2": (32, 4), "res3": (64, 8), "res4": (64, 16), "res5": (64, 32)}
    assert sorted(backbone.pyramid) == ["res2"] and len(backbone.pyramid["res2"]) == 1
    x = torch.randn(1, 3, 64, 96)
    features = backbone(x)
    with torch.no_grad():
        tokens, (h, w) = vit_forward_tokens(backbone.visual, x)
        grid = backbone.visual.ln_post(tokens[:, 1:]).transpose(1, 2).reshape(1, -1, h, w)
    assert (h, w) == (8, 12)
    torch.testing.assert_close(features["res3"], grid, atol=1e-5, rtol=0)
    torch.testing.assert_close(features["res4"], F.max_pool2d(grid, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(features["res5"], F.max_pool2d(grid, 4), atol=1e-5, rtol=0)
    assert features["res2"].shape == (1, 32, 16, 24)
