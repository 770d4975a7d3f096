#!/usr/bin/env python
"""Parameter counts and FLOPs of a zsmask model, per module, through fvcore (on the CPU).

    python tools/analyze_model.py --config-file configs/toy/hungarian.yaml [--weights model_final.pth]
        [--image-size 512 512] [--vocabulary "cat,dog,grass"] [--depth 2] [--tasks parameter flop] [KEY VALUE ...]

``parameter``: total / trainable (``requires_grad``) / frozen parameters of every module down to
``--depth`` (CLIP is frozen in most configs, so most parameters are frozen). ``flop``: fvcore's
FLOPs of one inference on one image of ``--image-size`` (the network input size) in eval mode,
per module and per operator. As in detectron2 and fvcore, one fused multiply-add counts as one
flop, and elementwise ops (add, mul, softmax, ...) are not counted. Beyond fvcore's handles this
counts the multi-scale deformable attention core (``embedding_bag``: one multiply-add per sampled
weight and channel), ``scaled_dot_product_attention``, the fused ``_native_multi_head_attention``
of CLIP's towers, bicubic upsampling and vector norms; the ops left uncounted are listed. The
text classifier (CLIP's text encoder over the vocabulary) is computed once per vocabulary and
cached, so it is not part of the per-image count. Trailing ``KEY VALUE`` pairs override the config.
"""
import argparse
import contextlib
import sys
import traceback
import warnings
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised by imports below

import numpy as np
import torch
from detectron2.utils.logger import setup_logger
from fvcore.nn import FlopCountAnalysis, flop_count_table, parameter_count
from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape
from tabulate import tabulate
from torch import nn

from zsmask.engine import load_inference_model
from zsmask.engine.cli import positive_int, vocabulary_arg

TASKS = ("parameter", "flop")
# detectron2.utils.analysis._IGNORED_OPS: elementwise and reduction ops that are not counted.
# (detectron2.utils.analysis itself cannot be imported with torch builds that lack caffe2.)
IGNORED_OPS = (
    "aten::add", "aten::add_", "aten::argmax", "aten::argsort", "aten::batch_norm", "aten::constant_pad_nd",
    "aten::div", "aten::div_", "aten::exp", "aten::log2", "aten::max_pool2d", "aten::meshgrid", "aten::mul",
    "aten::mul_", "aten::neg", "aten::nonzero_numpy", "aten::reciprocal", "aten::rsub", "aten::sigmoid",
    "aten::sigmoid_", "aten::softmax", "aten::sort", "aten::sqrt", "aten::sub", "torchvision::nms",
)
# The deformable attention core (zsmask/modeling/pixel_decoder/ops/deformable_attention.py): an
# embedding_bag on CUDA tensors; on the CPU the same sum inside the autograd Function _WeightedRowSum.
EMBEDDING_BAG_OPS = ("aten::embedding_bag", "aten::_embedding_bag", "prim::PythonOp._WeightedRowSum")


def _say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------ flop handles
def embedding_bag_flop_jit(inputs, outputs) -> Counter:
    """``embedding_bag(table (R, D), indices, ...)`` with per-sample weights, mode sum: one
    multiply-add per index and channel, i.e. bags x per_bag x D. Inputs are (table, indices,
    ...) for the aten ops and (table, rows, weights) for ``_WeightedRowSum``."""
    table, indices = get_shape(inputs[0]), get_shape(inputs[1])
    return Counter({"embedding_bag": int(np.prod(indices)) * table[-1]})


def scaled_dot_product_attention_flop_jit(inputs, outputs) -> Counter:
    """q (..., L, E), k (..., S, E), v (..., S, Ev): Q K^T (L S E) + A V (L S Ev) per batch/head."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = int(np.prod(q[:-2]))
    return Counter({"scaled_dot_product_attention": batch * q[-2] * k[-2] * (q[-1] + v[-1])})


def native_multi_head_attention_flop_jit(inputs, outputs) -> Counter:
    """``nn.MultiheadAttention``'s fused eval path: query (B, L, E), key/value (B, S, E): the q, k,
    v and output projections (L E^2 + 2 S E^2 + L E^2) and the attention (2 L S E), per batch."""
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch = int(np.prod(q[:-2])) if len(q) > 2 else 1
    length, source, dim = q[-2], k[-2], q[-1]
    return Counter({"_native_multi_head_attention": batch * (2 * length * dim * dim + 2 * source * dim * dim
                                                             + 2 * length * source * dim)})


EXTRA_HANDLES = dict(
    {name: embedding_bag_flop_jit for name in EMBEDDING_BAG_OPS},
    **{
        "aten::scaled_dot_product_attention": scaled_dot_product_attention_flop_jit,
        "aten::_native_multi_head_attention": native_multi_head_attention_flop_jit,
        "aten::upsample_bicubic2d": elementwise_flop_counter(0, 16),  # 4 x 4 taps per output
        "aten::linalg_vector_norm": elementwise_flop_counter(1, 0),  # one multiply-add per element
    },
)


class ImageToSemSeg(nn.Module):
    """The model as a tensor-in, tensor-out function for tracing: image (3, H, W) -> the
    ``sem_seg`` (K, H, W) of ``model([{"image", "height", "width"[, "vocabulary"]}])``."""

    def __init__(self, model: nn.Module, vocabulary: Optional[Sequence[str]] = None):
        super().__init__()
        self.model = model
        self.vocabulary = list(vocabulary) if vocabulary else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        record = {"image": image, "height": image.shape[-2], "width": image.shape[-1]}
        if self.vocabulary:
            record["vocabulary"] = self.vocabulary
        return self.model([record])[0]["sem_seg"]


def flop_analysis(model: nn.Module, image_size: Tuple[int, int], vocabulary: Optional[Sequence[str]] = None,
                  seed: int = 0) -> FlopCountAnalysis:
    """fvcore's FlopCountAnalysis (not yet run: ``.total()`` traces) of one inference of
    ``model`` (eval mode) on a seeded random image of ``image_size``, with detectron2's ignored
    ops and :data:`EXTRA_HANDLES`. One forward pass runs first to fill the text-classifier cache."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, *image_size), generator=generator, dtype=torch.uint8).float()
    wrapper = ImageToSemSeg(model, vocabulary).eval()
    with torch.no_grad():
        wrapper(image)
    analysis = FlopCountAnalysis(wrapper, (image,))
    analysis.set_op_handle(**{name: None for name in IGNORED_OPS})
    analysis.set_op_handle(**EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called")


@contextlib.contextmanager
def hooks_restored(model: nn.Module):
    """Remove, on the way out, every forward hook added to ``model``'s modules inside the block.
    fvcore's trace registers scope hooks on each module and leaves them there when the trace
    fails; the frozen CLIP is shared by every model of the process, so a later trace of another
    model (an export) would run them and break (``IndexError: unordered_map::at``)."""
    before = {id(m): {d: set(getattr(m, d, {})) for d in _HOOK_DICTS} for m in model.modules()}
    try:
        yield
    finally:
        for m in model.modules():
            kept = before.get(id(m), {})
            for d in _HOOK_DICTS:
                hooks = getattr(m, d, None)
                if hooks is not None:
                    for key in [k for k in hooks if k not in kept.get(d, ())]:
                        del hooks[key]


def failing_part(model: nn.Module, error: BaseException) -> str:
    """Where in ``model`` ``error`` was raised: the innermost submodule (or post-processor) on the
    traceback and the innermost zsmask source line."""
    modules = {id(m): name for name, m in model.named_modules() if name}
    post_processors = {id(p): f"post-processor {type(p).__name__}" for p in getattr(model, "post_processors", ())}
    part, line = None, None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        owner = id(frame.f_locals.get("self"))
        part = modules.get(owner, post_processors.get(owner, part))
        filename = frame.f_code.co_filename.replace("\\", "/")
        if "/zsmask/" in filename:
            line = f"zsmask/{filename.rsplit('/zsmask/', 1)[1]}:{lineno} in {frame.f_code.co_name}"
    part = part or f"{type(model).__name__} itself"
    return f"{part} ({line})" if line else part


# ------------------------------------------------------------------ parameters
def parameter_rows(model: nn.Module, depth: int) -> List[Tuple[str, int, int, int]]:
    """``(module, total, trainable, frozen)`` for the whole model ("model") and every submodule
    down to ``depth`` levels, in definition order. Shared parameters count once (as in
    ``model.parameters()``), under the first name that holds them."""
    total = parameter_count(model)
    trainable = Counter()
    for name, p in model.named_parameters():
        if p.requires_grad:
            parts = name.split(".")
            for k in range(len(parts) + 1):
                trainable[".".join(parts[:k])] += p.numel()
    rows = []
    for name, _ in model.named_modules():
        if name.count(".") < depth and (name == "" or total.get(name, 0) > 0):
            rows.append((name or "model", total[name], trainable[name], total[name] - trainable[name]))
    return rows


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def parameter_table(rows: List[Tuple[str, int, int, int]]) -> str:
    return tabulate([(name, f"{t:,}", f"{tr:,}", f"{fr:,}") for name, t, tr, fr in rows],
                    headers=["module", "parameters", "trainable", "frozen"],
                    colalign=("left", "right", "right", "right"), disable_numparse=True)


def operator_table(analysis: FlopCountAnalysis) -> str:
    by_operator = analysis.by_operator()
    total = max(analysis.total(), 1)
    rows = [(op, _count(flops), f"{100.0 * flops / total:.1f}") for op, flops in by_operator.most_common()]
    return tabulate(rows, headers=["operator", "flops", "%"], colalign=("left", "right", "right"),
                    disable_numparse=True)


def uncounted_ops(analysis: FlopCountAnalysis) -> Dict[str, int]:
    """Ops of the traced graph that no handle counts (besides the ignored elementwise ones), with
    how often they ran."""
    return dict(analysis.unsupported_ops().most_common())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a config yaml file")
    parser.add_argument("--weights", default=None, help="model weights (default: the config's MODEL.WEIGHTS)")
    parser.add_argument("--image-size", nargs=2, type=positive_int, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--vocabulary", type=vocabulary_arg, default=None,
                        help="comma-separated class names (default: the config's test dataset vocabulary)")
    parser.add_argument("--depth", type=positive_int, default=2, help="module levels in the tables")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="detectron2", abbrev_name="d2")
    setup_logger(name="zsmask")

    try:
        model, cfg = load_inference_model(args.config_file, args.weights, "cpu", args.opts)
    except (FileNotFoundError, RuntimeError, KeyError, ValueError) as e:
        _say(f"error: cannot build the model of {args.config_file}: {type(e).__name__}: {e}")
        return 1
    _say(f"{args.config_file} ({type(model).__name__}, weights: {cfg.MODEL.WEIGHTS or 'none (initialisation)'}); "
         f"torch {torch.__version__}, CPU")

    if "parameter" in args.tasks:
        rows = parameter_rows(model, args.depth)
        _, total, trainable, frozen = rows[0]
        _say(f"\nparameters (modules down to depth {args.depth}; trainable = requires_grad; CLIP is frozen in "
             "most configs)")
        _say(parameter_table(rows))
        _say(f"total {total:,} ({_count(total)}): trainable {trainable:,} ({_count(trainable)}), "
             f"frozen {frozen:,} ({_count(frozen)})")

    if "flop" in args.tasks:
        height, width = args.image_size
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            try:
                with hooks_restored(model):
                    analysis = flop_analysis(model, (height, width), args.vocabulary)
                    total = analysis.total()
            except Exception as e:  # noqa: BLE001  (any failure of the trace is reported the same way)
                part = failing_part(model, e)
                _say(f"error: FLOP counting of {args.config_file} failed: running (tracing) the model on a "
                     f"{height}x{width} image broke in {part}: {type(e).__name__}: {e}")
                if part.startswith("post-processor"):
                    _say("hint: count the model without post-processing with MODEL.ZSMASK.POST_PROCESSORS '[]'")
                return 1
            table = flop_count_table(analysis, max_depth=args.depth, show_param_shapes=False)
        _say(f"\nFLOPs of one {height}x{width} image (eval mode; one fused multiply-add = one flop, as in "
             "detectron2/fvcore; elementwise ops not counted; the cached text classifier is not included)")
        _say(table)
        _say("\nby operator")
        _say(operator_table(analysis))
        _say(f"total {total / 1e9:.4f} GFLOPs")
        uncounted = uncounted_ops(analysis)
        listed = ", ".join(f"{op} x{count}" for op, count in uncounted.items()) or "none"
        _say(f"uncounted ops (no flop handle; elementwise, reduction or indexing): {listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
