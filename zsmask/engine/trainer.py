"""zsmask's detectron2 trainer: its data pipeline, evaluator and solver, DDP that also runs on
CPU (gloo), AMP only where it exists (CUDA), and slim checkpoints written atomically."""
import inspect
import logging
import os
import random
import weakref

import numpy as np
import torch
from detectron2.data import DatasetFromList, MetadataCatalog, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer, TrainerBase
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data import ZeroShotSemSegDatasetMapper
from ..data.bad_samples import BadSampleLog, SkipBadSamples
from ..data.resumable_loader import (DataLoaderWorkerDied, PositionStream, ResumableTrainLoader, dead_worker_pids,
                                     shared_seed)
from ..data.catalog import EVALUATOR_TYPE
from ..evaluation import GeneralizedZeroShotSemSegEvaluator
from ..solver import build_lr_scheduler, build_optimizer
from .. import modeling  # noqa: F401  (registers ZeroShotMaskFormer and its parts)
from .checkpoint import SlimCheckpointer
from .sliding_window import maybe_sliding_window

__all__ = ["Trainer", "build_train_loop", "create_ddp_model"]

logger = logging.getLogger(__name__)


def create_ddp_model(model: torch.nn.Module, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """Wrap ``model`` in :class:`DistributedDataParallel` when there are several processes.

    Unlike :func:`detectron2.engine.create_ddp_model`, ``device_ids`` follows the model's
    device: ``[local_rank]`` for a GPU model, ``None`` for a CPU model (gloo). Buffers are not
    synchronised in forward (detectron2's ``broadcast_buffers=False``).
    """
    if comm.get_world_size() == 1:
        return model
    on_gpu = any(p.is_cuda for p in model.parameters())
    # torch >= 2.15 deprecates broadcast_buffers=False for forward_sync_buffers=False (which
    # still syncs buffers once at construction, harmless here)
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        no_buffer_sync = {"forward_sync_buffers": False}
    else:
        no_buffer_sync = {"broadcast_buffers": False}
    return DistributedDataParallel(
        model,
        device_ids=[comm.get_local_rank()] if on_gpu else None,
        find_unused_parameters=find_unused_parameters,
        **no_buffer_sync,
    )


def build_train_loop(model, data_loader, optimizer, amp: bool) -> SimpleTrainer:
    """:class:`AMPTrainer` when ``amp`` and the model is on a GPU, else :class:`SimpleTrainer`
    (fp32); AMP requested for a CPU model logs a warning instead of failing."""
    if amp and not any(p.is_cuda for p in model.parameters()):
        logger.warning("SOLVER.AMP.ENABLED is set but the model is not on a GPU: training in fp32 without AMP")
        amp = False
    return (AMPTrainer if amp else SimpleTrainer)(model, data_loader, optimizer)


METRIC_WINDOW = 20  # detectron2's writers smooth over the last 20 values


def random_states() -> dict:
    """This process's Python, NumPy, torch CPU and CUDA generator states (what
    :func:`set_random_states` puts back)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
              "torch": torch.get_rng_state()}  # plain types and tensors: checkpoints load with weights_only
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["gpu"] = torch.cuda.get_rng_state()  # the current device only (another machine may have fewer)
    return states


def set_random_states(states: dict) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "gpu" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["gpu"])


def process_resume_state(trainer) -> dict:
    """What this process needs to continue exactly: its data-stream state and random states."""
    return {"rank": comm.get_rank(), "data": trainer.data_loader.state_dict(), "random": random_states()}


class ExactResumeHook(HookBase):
    """Before each checkpoint: gathers every process's :func:`process_resume_state` into the
    trainer (the checkpointer runs on the main process only); after a resume: puts the saved
    metric windows back, so the logged (smoothed) losses are those of the run never stopped."""

    def before_train(self):
        windows, smoothing = getattr(self.trainer, "_metric_windows", ({}, {}))
        for name, values in windows.items():
            for value, iteration in values:
                self.trainer.storage._history[name].update(value, iteration)
            if name in smoothing:
                self.trainer.storage._smoothing_hints[name] = smoothing[name]

    def after_step(self):
        period = self.trainer.cfg.SOLVER.CHECKPOINT_PERIOD
        next_iter = self.trainer.iter + 1
        if (period > 0 and next_iter % period == 0) or next_iter >= self.trainer.max_iter:
            self.trainer._resume_states = (self.trainer.iter, comm.all_gather(process_resume_state(self.trainer)))


def bad_sample_log(cfg) -> BadSampleLog:
    """The run's record of training samples that could not be read (``OUTPUT_DIR/bad_samples.txt``)."""
    return BadSampleLog(os.path.join(cfg.OUTPUT_DIR, "bad_samples.txt"), cfg.DATALOADER.MAX_BAD_SAMPLES)


def _mapper(cfg, is_train: bool) -> ZeroShotSemSegDatasetMapper:
    if cfg.INPUT.DATASET_MAPPER_NAME != "zero_shot_semantic":
        raise ValueError(
            f"unknown INPUT.DATASET_MAPPER_NAME {cfg.INPUT.DATASET_MAPPER_NAME!r}; use 'zero_shot_semantic'"
        )
    return ZeroShotSemSegDatasetMapper(cfg, is_train)


class Trainer(DefaultTrainer):
    """detectron2's :class:`DefaultTrainer` with zsmask's data pipeline, evaluator and solver,
    DDP on CPU or GPU (:func:`create_ddp_model`), AMP on GPU only (:func:`build_train_loop`)
    and a :class:`~zsmask.engine.checkpoint.SlimCheckpointer` whose checkpoints hold the
    trained weights (not the frozen CLIP) and the optimizer state. ``resume_or_load`` is detectron2's."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)  # DefaultTrainer.__init__ with the changes above
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, find_unused_parameters=cfg.MODEL.ZSMASK.DDP_FIND_UNUSED_PARAMETERS)
        self._trainer = build_train_loop(model, data_loader, optimizer, amp=cfg.SOLVER.AMP.ENABLED)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SlimCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """detectron2's; a run that starts over also forgets the bad samples of an earlier run
        in the same ``OUTPUT_DIR``."""
        if not (resume and self.checkpointer.has_checkpoint()) and comm.is_main_process():
            bad_sample_log(self.cfg).reset()
        comm.synchronize()
        super().resume_or_load(resume)

    def train(self):
        """Run training; return the last evaluation's results (``{dataset: {"sem_seg": {...}}}``,
        from ``TEST.EVAL_PERIOD`` or the final evaluation) or None if nothing was evaluated.
        (detectron2 returns them only when ``TEST.EXPECTED_RESULTS`` is set.)"""
        try:
            super().train()
        except RuntimeError as e:  # torch's SIGCHLD handler raises wherever the main thread is
            if isinstance(e, DataLoaderWorkerDied) or dead_worker_pids(str(e)) is None:
                raise
            raise DataLoaderWorkerDied(self.data_loader.dead_worker_report(str(e))) from e
        skipped = bad_sample_log(self.cfg).entries()
        if skipped and comm.is_main_process():
            logger.warning(f"{len(skipped)} training sample(s) could not be read and were skipped (listed in "
                           f"{bad_sample_log(self.cfg).path}): {', '.join(skipped)}")
        results = getattr(self, "_last_eval_results", None)
        if results and len(self.cfg.DATASETS.TEST) == 1 and self.cfg.DATASETS.TEST[0] not in results:
            results = {self.cfg.DATASETS.TEST[0]: results}  # detectron2 unwraps a single dataset
        return results

    def build_hooks(self):
        """detectron2's hooks, with :class:`ExactResumeHook` first (it captures each process's
        data-stream position and random states before the checkpointer saves them)."""
        if self.cfg.TEST.PRECISE_BN.ENABLED:
            logger.warning("TEST.PRECISE_BN.ENABLED: PreciseBN runs the model in training mode between the "
                           "capture of the random states and the checkpoint, so --resume is not exact")
        return [ExactResumeHook()] + super().build_hooks()

    def state_dict(self):
        """Iteration and hook states (LR scheduler) as detectron2's, plus what ``--resume`` needs
        to continue exactly: the inner loop's state (optimizer, AMP grad scaler), every
        process's data-stream position and random generators, and the recent values of the
        logged metrics (their smoothing windows)."""
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        captured = getattr(self, "_resume_states", None)
        if captured is None or captured[0] != self.iter:  # a save outside the checkpoint period
            captured = (self.iter, [process_resume_state(self)])
        ret["resume_states"] = captured[1]
        storage = getattr(self, "storage", None)
        if storage is not None:
            ret["metric_windows"] = {name: list(history.values()[-METRIC_WINDOW:])
                                     for name, history in storage.histories().items()}
            ret["metric_smoothing"] = dict(storage.smoothing_hints())
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state; resuming with a fresh optimizer")
        states = state_dict.get("resume_states")
        world, rank = comm.get_world_size(), comm.get_rank()
        if not states:
            logger.warning("The checkpoint has no data-stream state (an older zsmask): the data stream starts over, "
                           "so the resumed run is not the run that was never stopped")
            return
        if len(states) != world:
            logger.warning(f"The checkpoint was saved by {len(states)} training processes and {world} resume it: "
                           "each continues from the saved stream position, but the run is not exactly the "
                           "one that was never stopped")
            state = {"data": dict(states[0]["data"], pending=[[], []]), "random": None}  # own seeding kept
        else:
            state = states[rank]
        self.data_loader.load_state_dict(state["data"])
        self._trainer._data_loader_iter = iter(self.data_loader)  # starts at the loaded position
        if state["random"] is not None:
            set_random_states(state["random"])
        self._metric_windows = (state_dict.get("metric_windows") or {}, state_dict.get("metric_smoothing") or {})

    @property
    def data_loader(self):
        return self._trainer.data_loader

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation of every ``DATASETS.TEST`` set, each with its own vocabulary;
        the model runs on sliding windows when ``TEST.SLIDING_WINDOW.ENABLED``. The random
        generators are left as they were, so a periodic evaluation does not change training."""
        states = random_states()
        try:
            return super().test(cfg, maybe_sliding_window(cfg, model), evaluators)
        finally:
            set_random_states(states)

    @classmethod
    def build_train_loader(cls, cfg):
        """The training stream on zsmask's mapper, resumable to the sample
        (:class:`~zsmask.data.resumable_loader.ResumableTrainLoader`); a sample that cannot be
        read is skipped and recorded (:class:`~zsmask.data.bad_samples.SkipBadSamples`)."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported: zsmask's "
                             "resumable training stream shuffles every epoch like detectron2's TrainingSampler")
        world = comm.get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH % world:
            raise ValueError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
                             f"{world} training processes")
        dataset = DatasetFromList(get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS), copy=False)
        mapper = SkipBadSamples(_mapper(cfg, True), bad_sample_log(cfg), dataset)
        stream = PositionStream(dataset, mapper, shared_seed(cfg.SEED), rank=comm.get_rank(), world_size=world)
        return ResumableTrainLoader(stream, cfg.SOLVER.IMS_PER_BATCH // world, cfg.DATALOADER.NUM_WORKERS,
                                    cfg.DATALOADER.ASPECT_RATIO_GROUPING)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=_mapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", EVALUATOR_TYPE)
        if evaluator_type not in (EVALUATOR_TYPE, "sem_seg"):
            raise ValueError(
                f"dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; zsmask evaluates semantic segmentation"
            )
        return DatasetEvaluators([GeneralizedZeroShotSemSegEvaluator(
            dataset_name, output_dir=output_folder, bootstrap=cfg.TEST.ZERO_SHOT.BOOTSTRAP,
            absent_classes=cfg.TEST.ZERO_SHOT.ABSENT_CLASSES)])

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)
