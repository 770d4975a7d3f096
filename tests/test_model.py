"""ZeroShotMaskFormer end to end at toy size: shapes, overfitting, inference, vocabularies, bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import Instances

import zsmask.modeling  # noqa: F401  (registers the meta-architecture and its parts)
from zsmask.data import SemSegFolder, register_zero_shot_split
from zsmask.modeling.inference import semantic_inference
from zsmask.modeling.meta_arch import VocabularyError

from conftest import tiny_model_cfg, write_sem_seg_folder

VOCAB = ("red square", "green square", "blue sky")


def _training_input(seed: int, size: int = 64, vocabulary=VOCAB, empty: bool = False):
    """An image with up to two coloured rectangles on a third class, and its instances."""
    g = torch.Generator().manual_seed(seed)
    label = torch.full((size, size), 2, dtype=torch.long)
    y0, x0 = (4 * torch.randint(0, size // 8, (2,), generator=g)).tolist()  # on the 1/4 grid
    label[y0:y0 + size // 2, x0:x0 + size // 2] = seed % 2
    colours = torch.tensor([[220, 30, 30], [30, 220, 30], [40, 80, 230]], dtype=torch.float32)
    image = colours[label].permute(2, 0, 1).contiguous()
    if empty:  # no seen pixel: everything is ignore
        label[:] = 255
    classes = torch.unique(label)
    classes = classes[classes != 255]
    instances = Instances((size, size))
    instances.gt_classes = classes
    instances.gt_masks = label[None] == classes[:, None, None]
    return {"image": image, "instances": instances, "vocabulary": list(vocabulary), "height": size, "width": size}


@pytest.fixture(scope="module")
def model_cfg(tmp_path_factory):
    return tiny_model_cfg(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def model(model_cfg):
    torch.manual_seed(0)
    return build_model(model_cfg)


def test_shapes_through_the_whole_model(model, model_cfg):
    images = model.preprocess_images([_training_input(0), _training_input(1, size=48)])
    assert tuple(images.tensor.shape) == (2, 3, 64, 64)  # padded to size divisibility 32
    features = model.backbone(images.tensor)
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {
        "res2": (16, 16), "res3": (8, 8), "res4": (4, 4), "res5": (2, 2)}
    mask_features, multi_scale = model.pixel_decoder.forward_features(features)
    assert tuple(mask_features.shape) == (2, 32, 16, 16)
    assert [tuple(f.shape) for f in multi_scale] == [(2, 32, 2, 2), (2, 32, 4, 4), (2, 32, 8, 8)]
    outputs = model.transformer_decoder(multi_scale, mask_features)
    assert tuple(outputs["pred_masks"].shape) == (2, 8, 16, 16)
    assert tuple(outputs["pred_embeddings"].shape) == (2, 8, 32)  # CLIP embed dim
    assert len(outputs["aux_outputs"]) == model_cfg.MODEL.MASK_FORMER.DEC_LAYERS
    text = model.text_embeddings(VOCAB)
    logits = model.classifier(outputs["pred_embeddings"], text)
    assert tuple(logits.shape) == (2, 8, len(VOCAB) + 1)
    # cosine logits are bounded by the learned scale
    scale = model.classifier.logit_scale.exp().item()
    assert logits.abs().max().item() <= scale + 1e-4

    model.train()
    losses = model([_training_input(0), _training_input(1)])
    n_aux = model_cfg.MODEL.MASK_FORMER.DEC_LAYERS
    expected = {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in [""] + [f"_{i}" for i in range(n_aux)]}
    assert set(losses) == expected
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())

    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": _training_input(2)["image"][:, :40, :56], "height": 80, "width": 112,
                            "vocabulary": ["cat", "dog"]}])
    assert tuple(result["sem_seg"].shape) == (2, 80, 112)
    assert (result["sem_seg"] >= 0).all() and (result["sem_seg"].sum(0) <= 8 + 1e-4).all()


def test_a_fixed_batch_overfits(model_cfg):
    # Uniform loss points: importance sampling deliberately picks the most uncertain (boundary)
    # points, where bilinearly upsampled 1/4-resolution masks stay ambiguous, so its loss value
    # measures boundaries rather than fit.
    cfg = model_cfg.clone()
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.0
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 1.0
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    batch = [_training_input(0), _training_input(1)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=4e-3, weight_decay=0.0)
    history = []
    for _ in range(50):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < history[0] / 10, history[::5]


def test_semantic_inference_hand_made_case():
    # 2 queries, 2 classes + no-object; masks of 1 x 2 pixels
    cls_logits = torch.log(torch.tensor([[0.7, 0.1, 0.2], [0.1, 0.6, 0.3]]))
    mask_logits = torch.tensor([[[10.0, -10.0]], [[0.0, 10.0]]])
    out = semantic_inference(mask_logits, cls_logits)
    s = torch.sigmoid
    expected = torch.tensor([
        [[0.7 * s(torch.tensor(10.0)) + 0.1 * 0.5, 0.7 * s(torch.tensor(-10.0)) + 0.1 * s(torch.tensor(10.0))]],
        [[0.1 * s(torch.tensor(10.0)) + 0.6 * 0.5, 0.1 * s(torch.tensor(-10.0)) + 0.6 * s(torch.tensor(10.0))]],
    ])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out.argmax(0).tolist() == [[0, 1]]


def test_inference_uses_the_current_vocabulary_every_call(model):
    """The text cache must never serve stale embeddings when the vocabulary changes."""
    model.eval()
    image = _training_input(3)["image"]
    runs = [("cat", "dog", "sky"), ("sheep",), ("cat", "dog", "sky"), ("dog", "cat", "sky")]
    outputs = []
    with torch.no_grad():
        for vocab in runs:
            (result,) = model([{"image": image, "vocabulary": list(vocab)}])
            outputs.append(result["sem_seg"])
        # reference: the same computation with embeddings encoded from scratch by open_clip
        queries = model.predict_queries(model.preprocess_images([{"image": image}]))
        for vocab, got in zip(runs, outputs):
            assert got.shape[0] == len(vocab)
            fresh = _encode_uncached(model.clip, vocab)
            logits = model.classifier(queries["pred_embeddings"][0], fresh)
            masks = F.interpolate(queries["pred_masks"], size=(64, 64), mode="bilinear", align_corners=False)[0]
            torch.testing.assert_close(got, semantic_inference(masks, logits), atol=1e-5, rtol=1e-5)
    # one-class vocabulary: scores are p(class) * mask, bounded by the query count
    assert outputs[1].shape[0] == 1 and torch.isfinite(outputs[1]).all()
    # swapping two names swaps the two score maps
    torch.testing.assert_close(outputs[3][[1, 0, 2]], outputs[0], atol=1e-5, rtol=1e-5)


def _encode_uncached(clip_module, names):
    import open_clip

    tokenizer = open_clip.get_tokenizer(clip_module.model_name)
    templates = clip_module.templates
    with torch.no_grad():
        rows = []
        for name in names:
            tokens = tokenizer([t.format(name) for t in templates])
            emb = F.normalize(clip_module.model.encode_text(tokens), dim=-1).mean(0)
            rows.append(F.normalize(emb, dim=-1))
    return torch.stack(rows)


def test_image_without_seen_pixels_trains(model):
    model.train()
    losses = model([_training_input(0, empty=True), _training_input(1, empty=True)])
    total = sum(losses.values())
    assert torch.isfinite(total)
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    assert losses["loss_ce"].item() > 0.0
    total.backward()
    grads = [p.grad for p in model.transformer_decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_grey_and_rgba_inputs_are_converted(model):
    model.eval()
    rgb = _training_input(4)["image"]
    grey = rgb.mean(0, keepdim=True)
    rgba = torch.cat((rgb, torch.full_like(rgb[:1], 255)), 0)
    with torch.no_grad():
        out_rgb = model([{"image": rgb, "vocabulary": ["a", "b"]}])[0]["sem_seg"]
        out_rgba = model([{"image": rgba, "vocabulary": ["a", "b"]}])[0]["sem_seg"]
        out_grey = model([{"image": grey, "vocabulary": ["a", "b"]}])[0]["sem_seg"]
        out_grey3 = model([{"image": grey.expand(3, -1, -1), "vocabulary": ["a", "b"]}])[0]["sem_seg"]
    torch.testing.assert_close(out_rgba, out_rgb)
    torch.testing.assert_close(out_grey, out_grey3)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model([{"image": torch.zeros(5, 32, 32), "vocabulary": ["a"]}])


def test_vocabulary_errors(model):
    model.eval()
    image = _training_input(5)["image"]
    with pytest.raises(VocabularyError, match="non-empty"):
        model([{"image": image, "vocabulary": []}])
    with pytest.raises(VocabularyError, match="duplicate"):
        model([{"image": image, "vocabulary": ["cat", "cat"]}])
    with pytest.raises(VocabularyError, match="list of class names"):
        model([{"image": image, "vocabulary": "cat,dog"}])
    with pytest.raises(VocabularyError, match="neither 'vocabulary' nor 'dataset_name'"):
        model([{"image": image}])


def test_vocabularies_come_from_the_registered_split(tmp_path, unique_name):
    labels = [np.array([[0, 1], [2, 3]], dtype=np.uint8).repeat(16, 0).repeat(16, 1)] * 2
    folder = SemSegFolder(*write_sem_seg_folder(str(tmp_path / "data"), labels))
    classes = ["cat", "dog", "grass", "sheep"]
    register_zero_shot_split(unique_name, classes, unseen_classes=["sheep"], train=folder, test=folder)
    cfg = tiny_model_cfg(tmp_path, train_dataset=f"{unique_name}_train", test_dataset=f"{unique_name}_test")
    torch.manual_seed(0)
    model = build_model(cfg)
    seen_text = model.text_embeddings(("cat", "dog", "grass"))
    model.train()
    batch = [_training_input(0, vocabulary=("cat", "dog", "grass"))]
    del batch[0]["vocabulary"]
    batch[0]["dataset_name"] = f"{unique_name}_train"
    losses = model(batch)
    assert torch.isfinite(sum(losses.values()))
    # the classifier saw exactly the 3 seen classes + no-object
    outputs = model.predict_queries(model.preprocess_images(batch))
    assert model.classifier(outputs["pred_embeddings"], seen_text).shape[-1] == 4
    model.eval()
    image = batch[0]["image"]
    with torch.no_grad():
        full = model([{"image": image, "dataset_name": f"{unique_name}_test"}])[0]["sem_seg"]
        zs3 = model([{"image": image, "dataset_name": f"{unique_name}_test_zs3"}])[0]["sem_seg"]
        default = model([{"image": image}])[0]["sem_seg"]  # DATASETS.TEST[0]
    assert full.shape[0] == 4 and zs3.shape[0] == 1 and default.shape[0] == 4
    # a training batch that mixes vocabularies is refused
    model.train()
    mixed = [dict(batch[0]), _training_input(1)]
    with pytest.raises(VocabularyError, match="mixes"):
        model(mixed)


def test_one_class_vocabulary_trains_and_infers(model):
    model.train()
    batch = [_training_input(0, vocabulary=("red square",)), _training_input(2, vocabulary=("red square",))]
    for x in batch:  # keep only class 0 as a target; the rest is ignore
        keep = x["instances"].gt_classes == 0
        x["instances"] = x["instances"][keep]
    losses = model(batch)
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": batch[0]["image"], "vocabulary": ["red square"]}])
    assert out["sem_seg"].shape == (1, 64, 64) and (out["sem_seg"] >= 0).all()
