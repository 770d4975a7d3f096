#!/usr/bin/env python
"""What a model holds in memory and in its checkpoint, per config: this tree against an older
revision (the reference, measured by the same code on that revision's package).

Each config is built on CPU with a random-init CLIP (``MODEL.CLIP.PRETRAINED ""``; the sizes do
not depend on the weights) in a fresh process, which then takes one real training step (AdamW
of ``SOLVER``, a synthetic 256x256 image with two annotated regions) so that the optimizer has
its moments, and saves a checkpoint with the revision's own checkpointer, as ``train_net.py``
does. Columns:

- state_dict, trainable, frozen: MiB of the state dict's entries (an entry reachable under two
  names counts twice, as a naive checkpoint would store it); frozen = entries that do not train;
- unique: MiB of distinct storages among them (what the process really holds);
- RSS: resident set of the process after building the model (MiB);
- checkpoint: MiB of the saved file (model + optimizer + trainer state), and its ratio to the
  trainable parameters plus the optimizer state.

    .venv/bin/python benchmarks/bench_checkpoint.py [--before REV] [--configs configs/voc/hungarian.yaml ...]

``--before`` (default: the revision before the frozen CLIP was shared) is checked out into a
temporary git worktree; without git history the before rows are skipped.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DEFAULT_CONFIGS = ("configs/voc/hungarian.yaml", "configs/coco/split_matching.yaml", "configs/coco/alignzeg.yaml",
                   "configs/voc/otseg.yaml")
DEFAULT_BEFORE = "ae94caf"  # main before one frozen CLIP per process and slim checkpoints
MIB = 2 ** 20


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def _batch(size: int = 256):
    import torch
    from detectron2.structures import Instances

    generator = torch.Generator().manual_seed(0)
    instances = Instances((size, size))
    instances.gt_classes = torch.tensor([0, 1])
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, : size // 2], masks[1, size // 2:] = True, True
    instances.gt_masks = masks
    image = torch.randint(0, 256, (3, size, size), generator=generator).float()
    return [{"image": image, "instances": instances, "height": size, "width": size}]


def measure(config: str, package_root: str) -> dict:
    """Build ``config`` with the zsmask package under ``package_root``, train one step, save."""
    sys.path.insert(0, package_root)
    import torch
    from detectron2.modeling import build_model

    import zsmask.data  # noqa: F401
    import zsmask.engine as engine
    from zsmask.engine import build_config
    from zsmask.solver import build_optimizer

    if not os.path.abspath(zsmask.data.__file__).startswith(os.path.abspath(package_root) + os.sep):
        raise RuntimeError(f"imported zsmask from {zsmask.data.__file__}, not from {package_root}")
    torch.set_num_threads(2)
    cfg = build_config(os.path.join(ROOT, config), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.CLIP.PRETRAINED",
                                                   "", "MODEL.CLIP.PROMPT_TEMPLATE_SET", "single"])
    torch.manual_seed(0)
    model = build_model(cfg)
    rss = _rss_mib()
    state = model.state_dict()
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    nbytes = {k: v.numel() * v.element_size() for k, v in state.items()}
    unique = {v.data_ptr(): nbytes[k] for k, v in state.items() if v.numel()}
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)

    optimizer = build_optimizer(cfg, model)
    model.train()
    loss = sum(model(_batch()).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    optimizer_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                          if torch.is_tensor(v) and v.dim())
    checkpointer_class = getattr(engine, "SlimCheckpointer", None) or getattr(engine, "AtomicDetectionCheckpointer")
    with tempfile.TemporaryDirectory() as folder:
        checkpointer_class(model, save_dir=folder, optimizer=optimizer).save("model_final", iteration=0)
        checkpoint = os.path.getsize(os.path.join(folder, "model_final.pth"))
    return {
        "state_dict": sum(nbytes.values()) / MIB,
        "trainable": trainable / MIB,
        "frozen": sum(b for k, b in nbytes.items() if k not in trainable_names) / MIB,
        "unique": sum(unique.values()) / MIB,
        "rss": rss,
        "optimizer": optimizer_bytes / MIB,
        "checkpoint": checkpoint / MIB,
        "ratio": checkpoint / (trainable + optimizer_bytes),
    }


def _run(config: str, package_root: str) -> dict:
    """:func:`measure` in a fresh process (so RSS and the CLIP instances are its own)."""
    code = (f"import json, sys; sys.path.insert(0, {HERE!r}); import bench_checkpoint as b; "
            f"print('RESULT ' + json.dumps(b.measure({config!r}, {package_root!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=package_root)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{config} at {package_root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _worktree(rev: str, folder: str) -> bool:
    proc = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", folder, rev], capture_output=True,
                          text=True)
    if proc.returncode:
        print(f"(no before rows: cannot check out {rev}: {proc.stderr.strip()})")
        return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    p.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of the reference rows ('' to skip)")
    args = p.parse_args(argv)

    trees = [("this tree", ROOT)]
    scratch = tempfile.mkdtemp(prefix="zsmask_before_")
    before = os.path.join(scratch, "tree")
    if args.before and _worktree(args.before, before):
        trees.insert(0, (f"before ({args.before})", before))
    try:
        rows = []
        for config in args.configs:
            for label, root in trees:
                m = _run(config, root)
                rows.append((config, label, m))
                print(f"{config} [{label}]: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()), flush=True)
    finally:
        if len(trees) > 1:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", before], capture_output=True)

    print("\n| config | tree | state_dict | trainable | frozen | unique | RSS after build | optimizer | checkpoint "
          "| checkpoint / (trainable + optimizer) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config, label, m in rows:
        print(f"| `{config}` | {label} | {m['state_dict']:,.0f} MiB | {m['trainable']:,.0f} MiB | {m['frozen']:,.0f} MiB "
              f"| {m['unique']:,.0f} MiB | {m['rss']:,.0f} MiB | {m['optimizer']:,.0f} MiB | {m['checkpoint']:,.0f} MiB "
              f"| {m['ratio']:.2f}x |")
    by_config = {}
    for config, label, m in rows:
        by_config.setdefault(config, []).append(m)
    if len(trees) > 1:
        print("\n| config | checkpoint after / before | RSS after / before | unique after / before |")
        print("|---|---|---|---|")
        for config, (old, new) in by_config.items():
            print(f"| `{config}` | {new['checkpoint'] / old['checkpoint']:.3f} | {new['rss'] / old['rss']:.3f} "
                  f"| {new['unique'] / old['unique']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
