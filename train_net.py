#!/usr/bin/env python
"""Train or evaluate a zsmask model (detectron2 launcher).

    python train_net.py --config-file configs/coco/split_matching.yaml --num-gpus 8
    python train_net.py --config-file configs/voc/alignzeg.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/voc/alignzeg.yaml --resume   # continue from last_checkpoint
    python train_net.py --config-file configs/voc/alignzeg.yaml --num-gpus 2 MODEL.DEVICE cpu

With ``MODEL.DEVICE cpu`` (or no CUDA at all) ``--num-gpus N`` starts N CPU processes joined
by a gloo process group (single machine; see :func:`zsmask.engine.launch`). The datasets,
mapper, evaluator, optimizer and LR schedule are zsmask's; the model is built from
``MODEL.META_ARCHITECTURE`` in detectron2's ``META_ARCH_REGISTRY``. Checkpoints are written
atomically and hold what trains, not the frozen CLIP (:mod:`zsmask.engine.checkpoint`).
"""
import logging
from datetime import timedelta

from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import zsmask.data  # noqa: F401  (registers the built-in zero-shot splits)
import zsmask.modeling  # noqa: F401  (registers zsmask's meta-architecture and parts)
from zsmask.engine import SlimCheckpointer, Trainer, build_config, launch
from zsmask.engine.launch import DEFAULT_TIMEOUT


def build_cfg(args):
    """The config of the config file and command-line opts (not frozen, no side effects)."""
    return build_config(args.config_file, args.opts)


def setup(args):
    """Frozen config, output folder, logging and seeding of this process."""
    cfg = build_cfg(args)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="zsmask")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        SlimCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    """Parse ``argv`` (default ``sys.argv``) and launch :func:`main` on every process."""
    parser = default_argument_parser()
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT.total_seconds() / 60, metavar="MINUTES",
                        help="how long a training process waits for the others in a collective before it gives "
                             "up with an error (default %(default)g; a dead process is noticed at once on one machine)")
    args = parser.parse_args(argv)
    if args.dist_timeout <= 0:
        parser.error("--dist-timeout must be positive")
    logging.getLogger("zsmask").info("Command Line Args: %s", args)
    device = build_cfg(args).MODEL.DEVICE  # CPU -> gloo processes, GPU -> detectron2's launch
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        timeout=timedelta(minutes=args.dist_timeout),
        device=device,
    )


if __name__ == "__main__":
    cli()
