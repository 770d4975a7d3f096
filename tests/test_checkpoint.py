"""One frozen CLIP per process and checkpoints without it: the real ZeroShotMaskFormer at toy
size (tiny random-init or file-loaded open_clip CLIP), real files on disk."""
import logging
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import zsmask.data  # noqa: F401  (registers toy_world_*, whose vocabulary the AlignZeg config trains on)
import zsmask.modeling  # noqa: F401
from zsmask.engine import ClipReferenceError, SlimCheckpointer, full_checkpoint, inference_config
from zsmask.modeling.clip import clip_reference, frozen_clip, load_clip, weights_digest
from zsmask.modeling.clip import shared as shared_clip

from conftest import TINY_CLIP_NAME, tiny_model_cfg
from test_alignzeg import _alignzeg_cfg, _batch


def _clip_file(tmp_path, cfg, seed: int, name: str) -> str:
    """A tiny CLIP weight file (open_clip state dict) of random weights drawn from ``seed``."""
    frozen_clip(cfg)  # registers the tiny architecture
    torch.manual_seed(seed)
    path = str(tmp_path / name)
    torch.save(load_clip(TINY_CLIP_NAME, "").state_dict(), path)
    return path


def _unique_bytes(tensors) -> int:
    return sum({t.data_ptr(): t.numel() * t.element_size() for t in tensors if t.numel()}.values())


def _outputs(model, batch):
    model.eval()
    with torch.no_grad():
        return [r["sem_seg"] for r in model(batch)]


def _trained_alignzeg(tmp_path, steps=2, **overrides):
    """An AlignZeg toy-size model after ``steps`` AdamW steps on a fixed batch, and its optimizer."""
    torch.manual_seed(0)
    model = build_model(_alignzeg_cfg(tmp_path, **overrides)).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        _step(model, optimizer, _batch())
    return model, optimizer


def _step(model, optimizer, batch) -> float:
    torch.manual_seed(123)  # the criterion's point sampling
    loss = sum(model(batch).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# ----------------------------------------------------------------------------- one frozen CLIP
def test_every_part_reads_one_frozen_clip_loaded_from_disk_once(tmp_path, monkeypatch):
    cfg = _alignzeg_cfg(tmp_path)
    cfg.MODEL.CLIP.PRETRAINED = _clip_file(tmp_path, cfg, 5, "clip_a.pt")
    loads = []
    monkeypatch.setattr(shared_clip, "load_clip", lambda *a: loads.append(a) or load_clip(*a))
    model = build_model(cfg)
    assert len(loads) == 1  # text classifier, side adapter and semantic decoder: one read
    visual = model.clip.model.visual
    blocks = visual.transformer.resblocks
    assert model.backbone.blocks[0].attn.in_proj_weight is blocks[0].attn.in_proj_weight
    assert model.backbone.conv1.weight is visual.conv1.weight
    assert model.proposal_embedder.blocks[0].mlp.c_fc.weight is blocks[-1].mlp.c_fc.weight
    assert model.proposal_embedder.proj is visual.proj
    clip_bytes = _unique_bytes(model.clip.model.state_dict().values())
    trained = [p for p in model.parameters() if p.requires_grad]
    buffers = [b for n, b in model.named_buffers() if not n.startswith("clip.model.")]
    # no storage held twice: all the model's tensors take one CLIP plus what trains and its own buffers
    assert _unique_bytes(model.state_dict().values()) <= clip_bytes + _unique_bytes(trained + buffers)
    assert all(not p.requires_grad for p in model.clip.model.parameters())

    second = build_model(cfg)  # another model in the process: the same CLIP, nothing read again
    assert second.clip.model is model.clip.model and len(loads) == 1


def test_a_fine_tuned_clip_backbone_trains_its_own_copy(tmp_path):
    cfg = tiny_model_cfg(tmp_path)
    frozen = build_model(cfg)
    assert frozen.backbone.visual is frozen.clip.model.visual
    cfg.MODEL.CLIP_BACKBONE.FREEZE = False
    tuned = build_model(cfg)
    assert tuned.backbone.visual is not tuned.clip.model.visual
    assert tuned.clip.model is frozen.clip.model
    assert all(p.requires_grad for p in tuned.backbone.visual.parameters())
    assert not any(p.requires_grad for p in tuned.clip.model.parameters())
    assert torch.equal(tuned.backbone.visual.conv1.weight, tuned.clip.model.visual.conv1.weight)  # starts as CLIP


def test_a_modified_clip_is_not_handed_out_again(tmp_path):
    cfg = tiny_model_cfg(tmp_path)
    cfg.MODEL.CLIP.PRETRAINED = _clip_file(tmp_path, cfg, 5, "clip_modified.pt")
    first = frozen_clip(cfg)
    assert frozen_clip(cfg) is first
    with torch.no_grad():
        first.visual.conv1.weight.add_(1.0)
    second = frozen_clip(cfg)
    assert second is not first and frozen_clip(cfg) is second
    assert not torch.equal(second.visual.conv1.weight, first.visual.conv1.weight)


def test_a_random_init_clip_is_the_same_in_every_build_and_leaves_the_global_rng_alone(tmp_path):
    cfg = tiny_model_cfg(tmp_path)
    digest = weights_digest(frozen_clip(cfg))
    shared_clip.release_frozen_clips()
    torch.manual_seed(1)
    state = torch.get_rng_state()
    rebuilt = frozen_clip(cfg)
    assert torch.equal(torch.get_rng_state(), state)
    assert weights_digest(rebuilt) == digest


# ----------------------------------------------------------------------------- slim checkpoints
def test_a_saved_checkpoint_holds_what_trained_and_names_its_clip(tmp_path):
    model, optimizer = _trained_alignzeg(tmp_path)
    SlimCheckpointer(model, save_dir=str(tmp_path), optimizer=optimizer).save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved["model"]) == trainable  # no CLIP key under any name, nothing else
    assert not any(k.startswith(("clip.model.", "backbone.blocks.", "proposal_embedder.blocks."))
                   for k in saved["model"])
    assert saved["clip_reference"] == [{"model_name": TINY_CLIP_NAME, "pretrained": "",
                                        "sha256": weights_digest(model.clip.model)}]
    trained_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    optimizer_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values()
                          for v in s.values() if torch.is_tensor(v))
    size = os.path.getsize(tmp_path / "model_final.pth")
    clip_bytes = _unique_bytes(model.clip.model.state_dict().values())
    assert size <= 1.2 * (trained_bytes + optimizer_bytes) + 100_000, (size, trained_bytes, optimizer_bytes, clip_bytes)
    assert clip_bytes > trained_bytes  # the file would otherwise be dominated by CLIP


def test_resume_from_a_slim_checkpoint_continues_with_the_losses_of_an_unbroken_run(tmp_path):
    model, optimizer = _trained_alignzeg(tmp_path)
    SlimCheckpointer(model, save_dir=str(tmp_path), optimizer=optimizer).save("model_0000001")
    unbroken = _step(model, optimizer, _batch())

    torch.manual_seed(7)  # another initialisation: everything that counts must come from the file
    resumed = build_model(_alignzeg_cfg(tmp_path)).train()
    resumed_optimizer = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-3)
    SlimCheckpointer(resumed, optimizer=resumed_optimizer).load(str(tmp_path / "model_0000001.pth"))
    assert _step(resumed, resumed_optimizer, _batch()) == unbroken
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name


def test_eval_from_a_slim_checkpoint_equals_the_model_in_memory(tmp_path):
    model, _ = _trained_alignzeg(tmp_path)
    SlimCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    torch.manual_seed(7)
    loaded = build_model(_alignzeg_cfg(tmp_path))
    checkpointer, reported = SlimCheckpointer(loaded), []
    checkpointer._log_incompatible_keys = reported.append  # what detectron2 would log as missing/unexpected
    checkpointer.load(str(tmp_path / "model_final.pth"))
    assert reported[0].missing_keys == [] and reported[0].unexpected_keys == []  # the CLIP is not "missing"
    for a, b in zip(_outputs(model, _batch()), _outputs(loaded, _batch())):
        assert torch.equal(a, b)


def test_an_old_full_checkpoint_loads_to_the_same_outputs_with_a_notice(tmp_path, caplog):
    model, _ = _trained_alignzeg(tmp_path)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("old")  # the whole state dict, CLIP included
    assert any(k.startswith("clip.model.") for k in torch.load(tmp_path / "old.pth", weights_only=True)["model"])
    torch.manual_seed(7)
    loaded = build_model(_alignzeg_cfg(tmp_path))
    logger = logging.getLogger("zsmask.engine.checkpoint")  # detectron2's setup may stop propagation above it
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            SlimCheckpointer(loaded).load(str(tmp_path / "old.pth"))
    finally:
        logger.removeHandler(caplog.handler)
    records = {id(r): r for r in caplog.records}.values()  # seen by our handler and, if it propagates, caplog's
    notices = [r.getMessage() for r in records if "holds the frozen CLIP" in r.getMessage()]
    assert len(notices) == 1 and "identical to the configured one" in notices[0] and "\n" not in notices[0]
    for a, b in zip(_outputs(model, _batch()), _outputs(loaded, _batch())):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_clip_is_refused_with_both_names(tmp_path):
    model, _ = _trained_alignzeg(tmp_path)
    SlimCheckpointer(model, save_dir=str(tmp_path)).save("slim")
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("old")
    cfg = _alignzeg_cfg(tmp_path)
    cfg.MODEL.CLIP.PRETRAINED = _clip_file(tmp_path, cfg, 11, "other_clip.pt")
    other = build_model(cfg)
    ours, theirs = clip_reference(model.clip.model), clip_reference(other.clip.model)
    with pytest.raises(ClipReferenceError) as slim_error:
        SlimCheckpointer(other).load(str(tmp_path / "slim.pth"))
    message = str(slim_error.value)
    assert "random init" in message and "other_clip.pt" in message
    assert ours["sha256"][:12] in message and theirs["sha256"][:12] in message
    with pytest.raises(ClipReferenceError, match="differ from the configured CLIP"):
        SlimCheckpointer(other).load(str(tmp_path / "old.pth"))


def test_a_self_contained_checkpoint_needs_no_other_clip_file(tmp_path):
    cfg = _alignzeg_cfg(tmp_path)
    clip_path = _clip_file(tmp_path, cfg, 5, "clip_for_sharing.pt")
    model, _ = _trained_alignzeg(tmp_path, **{"MODEL.CLIP.PRETRAINED": clip_path})
    torch.save(full_checkpoint(model, model_cfg := _alignzeg_cfg(tmp_path, **{"MODEL.CLIP.PRETRAINED": clip_path})),
               tmp_path / "shared.pth")
    os.remove(clip_path)  # the receiver has only the config and the shared file
    receiver = inference_config(model_cfg, weights=str(tmp_path / "shared.pth"), device="cpu")
    assert receiver.MODEL.CLIP.PRETRAINED == str(tmp_path / "shared.pth")
    loaded = build_model(receiver)
    assert loaded.clip.model is not model.clip.model
    SlimCheckpointer(loaded).load(receiver.MODEL.WEIGHTS)
    assert weights_digest(loaded.clip.model) == weights_digest(model.clip.model)
    for a, b in zip(_outputs(model, _batch()), _outputs(loaded, _batch())):
        assert torch.equal(a, b)


def test_a_plain_backbone_weights_file_still_loads(tmp_path):
    """MODEL.WEIGHTS of a detectron2 / ImageNet backbone (no CLIP entries, no reference)."""
    cfg = tiny_model_cfg(tmp_path, resnet18=True)
    torch.manual_seed(1)
    source = build_model(cfg)
    backbone = {k: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": backbone}, tmp_path / "R-18.pth")
    torch.manual_seed(2)
    model = build_model(cfg)
    checkpointer, reported = SlimCheckpointer(model), []
    checkpointer._log_incompatible_keys = reported.append
    checkpointer.load(str(tmp_path / "R-18.pth"))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in backbone.items())
    assert reported[0].unexpected_keys == [] and not any(k.startswith("clip.model.") for k in reported[0].missing_keys)
    assert any(k.startswith("pixel_decoder.") for k in reported[0].missing_keys)  # the rest is reported as usual
