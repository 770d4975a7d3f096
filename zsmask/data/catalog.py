"""Register zero-shot splits in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

:func:`register_zero_shot_split` is the public API; the built-in VOC / COCO-Stuff / Context
splits use it too (``zsmask/data/builtin.py``). From one dataset (image + label folders,
or an already registered detectron2 semantic-segmentation dataset) it registers up to three
*variants*, each with its own vocabulary:

============  ============================  =========================================
variant       name                          vocabulary (``stuff_classes``)
============  ============================  =========================================
train         ``<name>_train``              seen classes only; unseen pixels -> ignore
test (GZS3)   ``<name>_test``               all classes
zs3           ``<name>_test_zs3``           unseen classes only; seen pixels -> ignore
============  ============================  =========================================

Label files are never rewritten: every dataset dict carries ``dataset_name``, and the mapper
and evaluator map dataset ids to vocabulary indices with :func:`label_map_for_dataset`. The
train variant's metadata holds no unseen class name (inductive setting).
"""
import copy
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .splits import ZeroShotSplit, vocabulary_label_map

__all__ = [
    "SemSegFolder",
    "RegisteredSplit",
    "RegisteredSet",
    "DatasetNotFoundError",
    "register_zero_shot_split",
    "register_open_vocabulary_set",
    "label_map_for_dataset",
    "load_sem_seg_folder",
    "EVALUATOR_TYPE",
]

EVALUATOR_TYPE = "zero_shot_sem_seg"
VARIANT_SUFFIX = {"train": "_train", "test": "_test", "zs3": "_test_zs3"}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's folders or files are missing; the message says what layout is expected."""


@dataclass(frozen=True)
class SemSegFolder:
    """A semantic-segmentation dataset on disk: ``image_root/<stem><image_ext>`` paired with
    ``gt_root/<stem><gt_ext>`` (single-channel label PNGs holding dataset class ids).

    ``layout_hint`` and ``prepare_hint`` are shown when folders are missing.
    """

    image_root: str
    gt_root: str
    image_ext: str = ".jpg"
    gt_ext: str = ".png"
    layout_hint: str = ""
    prepare_hint: str = ""


@dataclass(frozen=True)
class RegisteredSplit:
    """What :func:`register_zero_shot_split` registered: the split and the dataset names."""

    split: ZeroShotSplit
    train: Optional[str]
    test: Optional[str]
    zs3: Optional[str]


def _missing_message(what: str, path: str, source: SemSegFolder, dataset_name: str) -> str:
    lines = [f"dataset '{dataset_name}': {what} not found: {path}"]
    if source.layout_hint:
        lines += ["expected layout:", source.layout_hint.rstrip()]
    lines.append(
        "datasets are looked up under $DETECTRON2_DATASETS "
        f"(now: {os.environ.get('DETECTRON2_DATASETS', '<unset> -> ./datasets')})"
    )
    if source.prepare_hint:
        lines.append(f"create the label files with: {source.prepare_hint}")
    return "\n".join(lines)


def load_sem_seg_folder(source: SemSegFolder, dataset_name: str) -> List[dict]:
    """List ``{file_name, sem_seg_file_name, dataset_name}`` dicts of a folder pair.

    Pairs are found from the label files (one image per label, matched by file stem),
    sorted by stem. Missing folders, empty label folders and labels without an image are
    reported with the expected layout.
    """
    for what, root in (("image folder", source.image_root), ("label folder", source.gt_root)):
        if not os.path.isdir(root):
            raise DatasetNotFoundError(_missing_message(what, root, source, dataset_name))
    with os.scandir(source.gt_root) as it:
        stems = sorted(e.name[: -len(source.gt_ext)] for e in it if e.name.endswith(source.gt_ext))
    if not stems:
        raise DatasetNotFoundError(
            _missing_message(f"label files (*{source.gt_ext})", source.gt_root, source, dataset_name)
        )
    with os.scandir(source.image_root) as it:
        images = {e.name for e in it}
    missing = [s for s in stems if s + source.image_ext not in images]
    if missing:
        example = os.path.join(source.image_root, missing[0] + source.image_ext)
        raise DatasetNotFoundError(
            _missing_message(
                f"{len(missing)} of {len(stems)} images for the label files (e.g. {example})",
                source.image_root,
                source,
                dataset_name,
            )
        )
    return [
        {
            "file_name": os.path.join(source.image_root, s + source.image_ext),
            "sem_seg_file_name": os.path.join(source.gt_root, s + source.gt_ext),
        }
        for s in stems
    ]


DataSource = Union[str, SemSegFolder, Callable[[], List[dict]]]


def _load_variant(source: DataSource, variant_name: str) -> List[dict]:
    if isinstance(source, SemSegFolder):
        dicts = load_sem_seg_folder(source, variant_name)
    elif callable(source):
        dicts = source()
        if not isinstance(dicts, list):
            raise TypeError(f"the data function of '{variant_name}' must return a list of dicts, got {type(dicts).__name__}")
        dicts = copy.deepcopy(dicts)
    else:
        dicts = copy.deepcopy(DatasetCatalog.get(source))
        bad = [d.get("file_name", "?") for d in dicts if "sem_seg_file_name" not in d]
        if bad:
            raise ValueError(
                f"dataset '{source}' (source of '{variant_name}') has {len(bad)} records without "
                f"'sem_seg_file_name' (e.g. {bad[0]}); a zero-shot split needs semantic labels"
            )
    for d in dicts:
        d["dataset_name"] = variant_name
    return dicts


def _palette(num_classes: int) -> List[List[int]]:
    """Deterministic, well-spread colours, one per dataset class (same in every variant)."""
    rng = np.random.RandomState(2024)
    return rng.randint(30, 256, size=(num_classes, 3)).tolist()


def register_zero_shot_split(
    name: str,
    class_names: Sequence[str],
    unseen_classes: Sequence[str],
    *,
    train: Optional[DataSource] = None,
    test: Optional[DataSource] = None,
    seen_classes: Optional[Sequence[str]] = None,
    ignore_label: int = 255,
    overwrite: bool = False,
) -> RegisteredSplit:
    """Register the train / test / ZS3 variants of a zero-shot split.

    Args:
        name: prefix of the registered names (``<name>_train``, ``<name>_test``, ``<name>_test_zs3``).
        class_names: every class of the dataset, in label-id order.
        unseen_classes: names of the unseen classes.
        train: training data as a :class:`SemSegFolder`, the name of a registered dataset, or
            a function returning ``[{file_name, sem_seg_file_name}, ...]`` (called on first
            load, e.g. to generate data); ``None`` registers no train variant (e.g. a test-only
            cross-dataset target).
        test: evaluation data, same forms; registers the GZS3 test and the ZS3 variants.
        seen_classes: optional explicit seen set (default: every class not unseen).
        ignore_label: label value to ignore; must not be a class id.
        overwrite: replace variants already registered under these names.

    Returns:
        :class:`RegisteredSplit` with the registered dataset names.

    Raises:
        SplitDefinitionError: unknown names, overlap, empty seen or unseen set, duplicates.
        ValueError: no data given, ``ignore_label`` clashing with a class id, name taken.
    """
    split = ZeroShotSplit(class_names, unseen_classes, seen_classes)
    names = _register_variants(
        f"register_zero_shot_split('{name}')", name, split.class_names, split.seen_ids, split.unseen_ids,
        {"train": (train, split.seen_ids), "test": (test, tuple(range(split.num_classes))),
         "zs3": (test, split.unseen_ids)},
        ignore_label, overwrite)
    return RegisteredSplit(split=split, train=names["train"], test=names["test"], zs3=names["zs3"])


@dataclass(frozen=True)
class RegisteredSet:
    """What :func:`register_open_vocabulary_set` registered: the class names and the dataset
    names (``None`` for a variant without data)."""

    class_names: Tuple[str, ...]
    train: Optional[str]
    test: Optional[str]


def register_open_vocabulary_set(
    name: str,
    class_names: Sequence[str],
    *,
    train: Optional[DataSource] = None,
    test: Optional[DataSource] = None,
    ignore_label: int = 255,
    overwrite: bool = False,
) -> RegisteredSet:
    """Register a dataset without a seen / unseen partition: ``<name>_train`` and / or
    ``<name>_test``, both over every class (the open-vocabulary protocol: train on all of one
    dataset's classes, e.g. COCO-Stuff's 171, and evaluate on other datasets with their own
    vocabularies). Same data forms and label files as :func:`register_zero_shot_split`;
    ``ignore_label`` may be up to 65535 (16-bit label PNGs for more than 255 classes). There is
    no ZS3 variant, and the evaluator reports no mIoU(S) / mIoU(U) / hIoU for these sets.

    Raises:
        SplitDefinitionError: no class names, duplicate names.
        ValueError: no data given, ``ignore_label`` clashing with a class id, name taken.
    """
    split = ZeroShotSplit(class_names, (), allow_no_unseen=True)
    everything = tuple(range(split.num_classes))
    names = _register_variants(
        f"register_open_vocabulary_set('{name}')", name, split.class_names, everything, (),
        {"train": (train, everything), "test": (test, everything)}, ignore_label, overwrite)
    return RegisteredSet(class_names=split.class_names, train=names["train"], test=names["test"])


def _register_variants(caller: str, name: str, class_names: Tuple[str, ...], seen: Sequence[int],
                       unseen: Sequence[int], variants: Dict[str, tuple], ignore_label: int,
                       overwrite: bool) -> Dict[str, Optional[str]]:
    """Register ``<name><suffix>`` for each ``variant: (source, vocabulary ids)`` with a source;
    returns ``{variant: dataset name or None}``."""
    if all(source is None for source, _ in variants.values()):
        raise ValueError(f"{caller}: give train and/or test data")
    num_classes = len(class_names)
    if not num_classes <= ignore_label <= 65535:
        raise ValueError(
            f"ignore_label={ignore_label} is also a class id (the dataset has {num_classes} "
            "classes) or out of the label range; choose an ignore label in "
            f"[{num_classes}, 65535]"
        )
    palette = _palette(num_classes)
    seen_ids, unseen_ids = set(seen), set(unseen)
    names: Dict[str, Optional[str]] = {}
    for variant, (source, vocab) in variants.items():
        if source is None:
            names[variant] = None
            continue
        dataset_name = name + VARIANT_SUFFIX[variant]
        if dataset_name in DatasetCatalog.list():
            if not overwrite:
                raise ValueError(
                    f"dataset '{dataset_name}' is already registered; pick another name "
                    "or pass overwrite=True"
                )
            DatasetCatalog.remove(dataset_name)
            MetadataCatalog.remove(dataset_name)
        DatasetCatalog.register(dataset_name, lambda s=source, n=dataset_name: _load_variant(s, n))
        meta = dict(
            stuff_classes=[class_names[i] for i in vocab],
            stuff_colors=[palette[i] for i in vocab],
            seen_classes=[k for k, i in enumerate(vocab) if i in seen_ids],
            unseen_classes=[k for k, i in enumerate(vocab) if i in unseen_ids],
            class_dataset_ids=list(vocab),
            num_dataset_classes=num_classes,
            ignore_label=ignore_label,
            evaluator_type=EVALUATOR_TYPE,
            zero_shot_split=name,
            split_variant=variant,
            open_vocabulary=not unseen_ids,  # no seen / unseen partition (register_open_vocabulary_set)
        )
        if isinstance(source, SemSegFolder):
            meta.update(image_root=source.image_root, sem_seg_root=source.gt_root)
        MetadataCatalog.get(dataset_name).set(**meta)
        label_map_for_dataset.cache_clear()
        names[variant] = dataset_name
    return names


@lru_cache(maxsize=None)
def label_map_for_dataset(dataset_name: str) -> np.ndarray:
    """The dataset-id -> vocabulary-index look-up table of a registered variant (see
    :func:`~zsmask.data.splits.vocabulary_label_map`). Datasets registered without zsmask
    (no ``class_dataset_ids``) get the identity over ``stuff_classes``."""
    meta = MetadataCatalog.get(dataset_name)
    ignore = meta.get("ignore_label", 255)
    if meta.get("class_dataset_ids") is not None:
        return vocabulary_label_map(meta.num_dataset_classes, meta.class_dataset_ids, ignore)
    n = len(meta.stuff_classes)
    return vocabulary_label_map(n, range(n), ignore)
