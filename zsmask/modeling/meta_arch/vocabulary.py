"""Which class names an input is classified against.

An input's vocabulary is, in order of precedence: its own ``"vocabulary"`` (a list of class
names, e.g. from the demo's ``--vocabulary``), the ``stuff_classes`` of the dataset named by
its ``"dataset_name"`` (set on every record of a registered zero-shot split: seen classes for
``*_train``, all classes for ``*_test``, unseen ones for ``*_test_zs3``), or the default
dataset's. Metadata is read when the input arrives, never cached at build time, so splits
registered after the model was built work, and unseen names never reach training.
"""
from typing import Optional, Sequence, Tuple

from detectron2.data import MetadataCatalog

from ..clip import VocabularyError, check_class_names

__all__ = ["VocabularyError", "vocabulary_of_input", "vocabulary_of_dataset"]


def vocabulary_of_dataset(dataset_name: str) -> Tuple[str, ...]:
    """``stuff_classes`` of a registered dataset, as a tuple."""
    metadata = MetadataCatalog.get(dataset_name)
    names = metadata.get("stuff_classes", None)
    if not names:
        raise VocabularyError(
            f"dataset '{dataset_name}' has no 'stuff_classes' in MetadataCatalog; register it with "
            "zsmask.data.register_zero_shot_split (or set MetadataCatalog.get(name).stuff_classes)")
    return tuple(names)


def vocabulary_of_input(record: dict, default_dataset: Optional[str]) -> Tuple[str, ...]:
    """The class names ``record`` is classified against (see the module docstring)."""
    if record.get("vocabulary") is not None:
        names: Sequence[str] = record["vocabulary"]
        if not isinstance(names, str):
            names = [str(n).strip() for n in names]
        return check_class_names(names)
    dataset = record.get("dataset_name") or default_dataset
    if not dataset:
        raise VocabularyError("the input has neither 'vocabulary' nor 'dataset_name', and no default dataset is "
                              "configured (DATASETS.TRAIN / DATASETS.TEST / MODEL.ZSMASK.DEFAULT_TEST_DATASET)")
    return vocabulary_of_dataset(dataset)
