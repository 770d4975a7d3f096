"""Dataset mapper for zero-shot semantic segmentation (train and test).

Labels are read with the dataset-id -> vocabulary look-up table of the record's registered
variant, so in a ``*_train`` variant unseen pixels become ignore here (files untouched).
"""
import copy
import logging
from typing import List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import Instances
from torch.nn import functional as F

from .augmentations import build_sem_seg_augmentations
from .catalog import label_map_for_dataset
from .image_io import LabelFileError, check_same_size, label_size, read_image, read_sem_seg

__all__ = ["ZeroShotSemSegDatasetMapper"]


class ZeroShotSemSegDatasetMapper:
    """Map a dataset dict to model inputs.

    Output keys: ``image`` (uint8 ``(3, H, W)``), ``height`` / ``width`` (original size),
    ``file_name``, ``dataset_name``; when training also ``sem_seg`` (int64 ``(H, W)``, values
    are vocabulary indices or ``ignore_label``) and ``instances`` (one binary mask per class
    present: ``gt_classes`` ``(K,)``, ``gt_masks`` ``(K, H, W)``) and ``unannotated`` (bool
    ``(H, W)``: the ignore pixels of the image, for pseudo labelers). Training images and labels
    are padded to ``size_divisibility`` (image with 0, label with ``ignore_label``; padding is
    not ``unannotated``).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str = "RGB",
        ignore_label: int = 255,
        size_divisibility: int = -1,
        default_dataset_name: Optional[str] = None,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.default_dataset_name = default_dataset_name
        logging.getLogger(__name__).info(
            f"[{self.__class__.__name__}] {'train' if is_train else 'test'} augmentations: {augmentations}"
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        if names:
            ignore = MetadataCatalog.get(names[0]).get("ignore_label", ignore)
        return {
            "is_train": is_train,
            "augmentations": build_sem_seg_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "default_dataset_name": names[0] if names else None,
        }

    def _label_map(self, dataset_dict) -> np.ndarray:
        name = dataset_dict.get("dataset_name", self.default_dataset_name)
        if name is None:
            raise ValueError(
                f"record {dataset_dict.get('file_name')} has no 'dataset_name' and the mapper has no "
                "default dataset; register data with zsmask.data.register_zero_shot_split"
            )
        return label_map_for_dataset(name)

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        height, width = image.shape[:2]
        gt_path = dataset_dict.get("sem_seg_file_name")
        sem_seg = None
        if self.is_train:
            if gt_path is None:
                raise LabelFileError(f"training record {dataset_dict['file_name']} has no 'sem_seg_file_name'")
            sem_seg = read_sem_seg(gt_path, self._label_map(dataset_dict), self.ignore_label)
            check_same_size(image.shape[:2], sem_seg.shape, dataset_dict["file_name"], gt_path)
        elif gt_path is not None:  # header only: the evaluator reads the pixels
            check_same_size(image.shape[:2], label_size(gt_path), dataset_dict["file_name"], gt_path)

        if sem_seg is not None:
            # detectron2 resizes uint8 labels with PIL and float64 ones with torch (nearest)
            sem_seg = sem_seg.astype(np.uint8 if sem_seg.max(initial=0) <= 255 else np.float64)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        image = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        dataset_dict.update(image=image, height=height, width=width)
        if not self.is_train:
            return dataset_dict

        sem_seg = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        unannotated = sem_seg == self.ignore_label
        if self.size_divisibility > 0:
            h, w = image.shape[-2:]
            pad_h = (-h) % self.size_divisibility
            pad_w = (-w) % self.size_divisibility
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0)
            sem_seg = F.pad(sem_seg, (0, pad_w, 0, pad_h), value=self.ignore_label)
            unannotated = F.pad(unannotated, (0, pad_w, 0, pad_h), value=False)
        dataset_dict["image"] = image
        dataset_dict["sem_seg"] = sem_seg
        dataset_dict["unannotated"] = unannotated

        instances = Instances(tuple(image.shape[-2:]))
        classes = torch.unique(sem_seg)
        classes = classes[classes != self.ignore_label]
        instances.gt_classes = classes.to(torch.int64)
        masks = sem_seg[None] == classes[:, None, None]
        instances.gt_masks = masks
        dataset_dict["instances"] = instances
        return dataset_dict
