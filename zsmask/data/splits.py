"""Zero-shot split definitions: which classes of a dataset are seen and which are unseen.

A :class:`ZeroShotSplit` is pure data (names in dataset order). It validates itself on
construction, so a typo in a class name, an overlap of seen and unseen, or an empty set is
rejected before anything is registered, with the list of valid names in the message.

A *vocabulary* is an ordered subset of the dataset's classes. Each registered variant of a
split (train: seen only, test: all, zs3: unseen only) has one; label files keep dataset ids,
and :func:`vocabulary_label_map` turns them into vocabulary indices (others become ignore).
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["ZeroShotSplit", "SplitDefinitionError", "vocabulary_label_map", "UNMAPPED"]

# Sentinel in a label map for ids that are neither a dataset class nor the ignore label.
UNMAPPED = -1


class SplitDefinitionError(ValueError):
    """A split definition is invalid (unknown names, overlap, empty sets, duplicates)."""


def _fmt_names(names: Sequence[str], limit: int = 200) -> str:
    text = ", ".join(repr(n) for n in names)
    return text if len(names) <= limit else text[:4000] + ", ..."


@dataclass(frozen=True)
class ZeroShotSplit:
    """Seen / unseen partition of a dataset's classes.

    Args:
        class_names: all class names, in dataset-id order (label value i is class_names[i]).
        unseen_names: names of the unseen classes (any order; stored in dataset order).
        seen_names: optional; defaults to every class that is not unseen. When given, seen
            and unseen must be disjoint and together cover every class.
        allow_no_unseen: accept an empty unseen set (every class seen: an open-vocabulary
            dataset, :func:`~zsmask.data.catalog.register_open_vocabulary_set`).
    """

    class_names: Tuple[str, ...]
    unseen_names: Tuple[str, ...]
    seen_names: Tuple[str, ...] = ()

    def __init__(
        self,
        class_names: Sequence[str],
        unseen_names: Sequence[str],
        seen_names: Optional[Sequence[str]] = None,
        allow_no_unseen: bool = False,
    ):
        class_names = tuple(str(c) for c in class_names)
        if isinstance(unseen_names, str) or (seen_names is not None and isinstance(seen_names, str)):
            raise SplitDefinitionError("class lists must be sequences of names, not one string")
        unseen_names = tuple(str(c) for c in unseen_names)
        if not class_names:
            raise SplitDefinitionError("a zero-shot split needs at least one class name; got none")
        dups = sorted({c for c in class_names if class_names.count(c) > 1})
        if dups:
            raise SplitDefinitionError(f"duplicate class names in the dataset: {_fmt_names(dups)}")
        valid = set(class_names)
        unknown = [c for c in unseen_names if c not in valid]
        if seen_names is not None:
            seen_names = tuple(str(c) for c in seen_names)
            unknown += [c for c in seen_names if c not in valid]
        if unknown:
            raise SplitDefinitionError(
                f"unknown class names {_fmt_names(unknown)}; valid names are: {_fmt_names(class_names)}"
            )
        if not unseen_names and not allow_no_unseen:
            raise SplitDefinitionError(
                "the unseen set is empty; name at least one unseen class among: " + _fmt_names(class_names)
            )
        if seen_names is None:
            seen_names = tuple(c for c in class_names if c not in set(unseen_names))
        overlap = sorted(set(seen_names) & set(unseen_names), key=class_names.index)
        if overlap:
            raise SplitDefinitionError(
                f"classes {_fmt_names(overlap)} are both seen and unseen; a class must be one or the other"
            )
        if not seen_names:
            raise SplitDefinitionError(
                "the seen set is empty (every class is unseen); keep at least one seen class among: "
                + _fmt_names(class_names)
            )
        missing = [c for c in class_names if c not in set(seen_names) | set(unseen_names)]
        if missing:
            raise SplitDefinitionError(
                f"classes {_fmt_names(missing)} are neither seen nor unseen; every class must be one of them"
            )
        order = {c: i for i, c in enumerate(class_names)}
        object.__setattr__(self, "class_names", class_names)
        object.__setattr__(self, "unseen_names", tuple(sorted(set(unseen_names), key=order.get)))
        object.__setattr__(self, "seen_names", tuple(sorted(set(seen_names), key=order.get)))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def seen_ids(self) -> Tuple[int, ...]:
        """Dataset ids of the seen classes, ascending."""
        return tuple(self.class_names.index(c) for c in self.seen_names)

    @property
    def unseen_ids(self) -> Tuple[int, ...]:
        """Dataset ids of the unseen classes, ascending."""
        return tuple(self.class_names.index(c) for c in self.unseen_names)


def vocabulary_label_map(num_dataset_classes: int, vocabulary_ids: Sequence[int], ignore_label: int) -> np.ndarray:
    """Look-up table from dataset label ids to vocabulary indices.

    Returns an int32 array ``lut`` of length ``max(256, num_dataset_classes, ignore_label + 1)``:
    ``lut[vocabulary_ids[k]] = k``; other dataset classes and ``ignore_label`` map to
    ``ignore_label``; any other id maps to :data:`UNMAPPED` so readers can report it.
    """
    size = max(256, num_dataset_classes, ignore_label + 1)
    lut = np.full(size, UNMAPPED, dtype=np.int32)
    lut[:num_dataset_classes] = ignore_label
    lut[ignore_label] = ignore_label
    lut[np.asarray(vocabulary_ids, dtype=np.int64)] = np.arange(len(vocabulary_ids), dtype=np.int32)
    return lut
