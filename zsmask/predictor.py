"""``Predictor``: a trained zsmask model as a Python function from images to label maps.

    from zsmask import Predictor
    predictor = Predictor("configs/coco/split_matching.yaml", "model_final.pth",
                          vocabulary=["cat", "sofa", "remote control"])
    result = predictor("photo.jpg")              # or an array, a PIL image, a (C, H, W) tensor
    result.label_map, result.scores, result.class_names, result.unseen
    results = predictor(["a.jpg", "b.png"])      # a list in, a list out (run in batches)

The device is CUDA when available, else the CPU, unless given. The vocabulary is the
config's test dataset's (``MODEL.ZSMASK.DEFAULT_TEST_DATASET`` or ``DATASETS.TEST[0]``) unless
one is given, at construction, with :meth:`Predictor.set_vocabulary`, or per call. Its text
classifier is computed once per vocabulary (the CLIP module caches it) and reused for every
image. Images are resized as at test time (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) and
predictions come back at the input's size.
"""
import json
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .data.augmentations import build_sem_seg_augmentations
from .data.image_io import array_to_rgb, pil_to_array, read_image
from .engine.inference import load_inference_model
from .modeling.clip import check_class_names
from .modeling.meta_arch.vocabulary import VocabularyError, vocabulary_of_dataset

__all__ = ["Prediction", "Predictor", "parse_vocabulary"]

ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image, torch.Tensor]


@dataclass
class Prediction:
    """One image's segmentation.

    Attributes:
        label_map: ``(H, W)`` int64 indices into ``class_names`` (CPU).
        scores: ``(K, H, W)`` float per-class scores (CPU); ``label_map`` is their argmax.
        class_names: the K class names used.
        unseen: K bools, True for names outside the training vocabulary (the classes the
            model never saw annotated); all False when the config names no training set.
    """

    label_map: torch.Tensor
    scores: torch.Tensor
    class_names: Tuple[str, ...]
    unseen: Tuple[bool, ...]

    def save_label_map(self, path: str, classes_path: Optional[str] = None) -> None:
        """Write ``label_map`` as a PNG of class indices (8-bit, or 16-bit above 256 classes) with
        the class names in its ``zsmask:class_names`` text chunk, and the names and unseen flags
        to ``classes_path`` as JSON (default: ``classes.json`` beside ``path``)."""
        label = self.label_map.numpy()
        dtype = np.uint8 if len(self.class_names) <= 256 else np.uint16
        info = PngInfo()
        info.add_itxt("zsmask:class_names", json.dumps(list(self.class_names), ensure_ascii=False))
        Image.fromarray(label.astype(dtype)).save(path, format="PNG", pnginfo=info)
        if classes_path is None:
            classes_path = os.path.join(os.path.dirname(path) or ".", "classes.json")
        with open(classes_path, "w", encoding="utf-8") as f:
            json.dump({"class_names": list(self.class_names), "unseen": list(self.unseen)}, f, indent=1,
                      ensure_ascii=False)

    def present_classes(self) -> List[Tuple[int, float]]:
        """``[(class index, fraction of pixels)]`` of the classes in the label map, largest first."""
        counts = torch.bincount(self.label_map.flatten(), minlength=len(self.class_names))
        total = max(int(self.label_map.numel()), 1)
        return [(int(i), float(counts[i]) / total) for i in torch.argsort(counts, descending=True, stable=True)
                if counts[i] > 0]


def parse_vocabulary(vocabulary: Union[None, str, Sequence[str]]) -> Optional[Tuple[str, ...]]:
    """A vocabulary given as a list of names, a comma-separated string ("cat,sofa"), or the path
    of a text file with one name per line (``#`` comments and blank lines skipped), as a checked
    tuple; None stays None. A line of a text file may hold synonyms separated by commas ("tv,
    monitor"), averaged when ``MODEL.CLIP.AVERAGE_SYNONYMS`` is on."""
    if vocabulary is None:
        return None
    if isinstance(vocabulary, (str, os.PathLike)):
        text = str(vocabulary)
        if os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                names = [line.split("#", 1)[0].strip() for line in f]
            names = [n for n in names if n]
            if not names:
                raise VocabularyError(f"vocabulary file {text} holds no class names (one name per line)")
        else:
            names = [n.strip() for n in text.split(",")]
            if any(not n for n in names):
                raise VocabularyError(f"vocabulary {text!r} has an empty name; give comma-separated names such "
                                      "as 'cat,sofa,remote control', or the path of a text file with one per line")
    else:
        names = [str(n).strip() for n in vocabulary]
    return check_class_names(names)


class Predictor:
    """Runs a trained model on images (see the module docstring)."""

    def __init__(self, config: Union[str, CfgNode], weights: Optional[str] = None, *,
                 device: Optional[str] = None, vocabulary: Union[None, str, Sequence[str]] = None,
                 opts: Sequence[str] = (), batch_size: int = 4, input_format: str = "RGB"):
        """
        Args:
            config: a yaml config path or a CfgNode.
            weights: the trained weights (default: the config's ``MODEL.WEIGHTS``).
            device: "cpu", "cuda", "cuda:1", ...; default CUDA when available, else CPU.
            vocabulary: class names (list, comma string or text file, see
                :func:`parse_vocabulary`) replacing the test dataset's.
            opts: config overrides ``["KEY", "value", ...]``.
            batch_size: images per forward pass when :meth:`predict` gets a list.
            input_format: channel order of 3-channel arrays and tensors passed in ("RGB", or
                "BGR" for OpenCV images); files and PIL images are always read correctly.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.model, self.cfg = load_inference_model(config, weights, device, opts)
        self.batch_size = batch_size
        self.input_format = input_format
        self.resize = T.AugmentationList(build_sem_seg_augmentations(self.cfg, is_train=False))
        self.seen_names = self._training_vocabulary()
        self.class_names: Tuple[str, ...] = ()
        self.set_vocabulary(vocabulary)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _training_vocabulary(self) -> Optional[frozenset]:
        if not self.cfg.DATASETS.TRAIN:
            return None
        return frozenset(n.strip() for n in vocabulary_of_dataset(self.cfg.DATASETS.TRAIN[0]))

    def set_vocabulary(self, vocabulary: Union[None, str, Sequence[str]] = None) -> Tuple[str, ...]:
        """Classify against ``vocabulary`` from now on (None: the test dataset's); its text
        classifier is computed here, once. Returns the class names."""
        names = parse_vocabulary(vocabulary)
        if names is None:
            if not self.model.test_dataset:
                raise VocabularyError("no vocabulary was given and the config names no test dataset "
                                      "(DATASETS.TEST / MODEL.ZSMASK.DEFAULT_TEST_DATASET); pass vocabulary=[...]")
            names = vocabulary_of_dataset(self.model.test_dataset)
        with torch.no_grad():
            self.model.text_embeddings(names)
        self.class_names = names
        return names

    def unseen_flags(self, class_names: Sequence[str]) -> Tuple[bool, ...]:
        """Per name: True when it is not in the training vocabulary."""
        if self.seen_names is None:
            return tuple(False for _ in class_names)
        return tuple(name.strip() not in self.seen_names for name in class_names)

    # ------------------------------------------------------------------ inputs
    def to_rgb_array(self, image: ImageInput) -> np.ndarray:
        """Any supported input as ``(H, W, 3)`` uint8 RGB (files raise ImageReadError)."""
        if isinstance(image, (str, os.PathLike)):
            return read_image(os.fspath(image), "RGB")
        if isinstance(image, Image.Image):
            return pil_to_array(image, "RGB")
        if isinstance(image, torch.Tensor):
            if image.dim() == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
                image = image.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
            image = image.detach().cpu().numpy()
        if isinstance(image, np.ndarray):
            return array_to_rgb(image, self.input_format)
        raise TypeError(f"cannot predict on a {type(image).__name__}; give a file path, a numpy array (H, W, C), "
                        "a PIL image or a tensor (C, H, W)")

    def model_input(self, rgb: np.ndarray, class_names: Tuple[str, ...]) -> dict:
        """The model's input dict for one ``(H, W, 3)`` uint8 RGB image: resized as at test
        time, predictions requested at the original size."""
        height, width = rgb.shape[:2]
        resized = T.AugInput(rgb)
        self.resize(resized)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width, "vocabulary": list(class_names)}

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, images: Union[ImageInput, Sequence[ImageInput]],
                vocabulary: Union[None, str, Sequence[str]] = None) -> Union[Prediction, List[Prediction]]:
        """Segment one image (returns a :class:`Prediction`) or a list of images (returns a list in
        the same order; images that have the same size after the test-time resize are run
        ``batch_size`` at a time). ``vocabulary`` applies to this call only."""
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        names = self.class_names if vocabulary is None else parse_vocabulary(vocabulary)
        unseen = self.unseen_flags(names)
        inputs = [self.model_input(self.to_rgb_array(image), names) for image in batch]
        # Only images of one size share a forward pass: padding others to a common size would
        # change what the backbone sees, so a result would depend on its batch-mates.
        by_size = {}
        for index, x in enumerate(inputs):
            by_size.setdefault(tuple(x["image"].shape), []).append(index)
        results: List[Optional[Prediction]] = [None] * len(inputs)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for index, output in zip(chunk, self.model([inputs[i] for i in chunk])):
                    scores = output["sem_seg"].float().cpu()
                    results[index] = Prediction(scores.argmax(dim=0), scores, names, unseen)
        return results[0] if single else results

    __call__ = predict
