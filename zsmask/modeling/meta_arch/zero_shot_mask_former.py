"""``ZeroShotMaskFormer``: the meta-architecture every zsmask method plugs its parts into.

backbone -> pixel decoder -> masked-attention transformer decoder -> per query a mask and a
class embedding; the embedding is classified against CLIP text embeddings of the current
vocabulary (:class:`~zsmask.modeling.heads.VocabularyClassifier`). Training uses the training
dataset's (seen) vocabulary; inference the vocabulary of each input's dataset (all classes in
GZS3), read from ``MetadataCatalog`` — unseen classes only ever exist as text.
Parts are chosen by config through registries: backbone (detectron2), pixel decoder,
transformer decoder, matcher; the criterion is separate from the matcher (Mask2Former).
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from ..clip import CLIPTextImageEncoder
from ..criterion import SetCriterion, build_criterion
from ..heads import VocabularyClassifier
from ..inference import semantic_inference
from ..matcher import build_matcher
from ..pixel_decoder import build_pixel_decoder
from ..transformer_decoder import build_transformer_decoder
from .vocabulary import VocabularyError, vocabulary_of_input

__all__ = ["ZeroShotMaskFormer"]
logger = logging.getLogger(__name__)


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) with C in {1, 3, 4} -> (3, H, W): grey is repeated, alpha is dropped."""
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected an image tensor (3, H, W) in RGB (1 or 4 channels are converted), "
                         f"got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    return image[:3]


@META_ARCH_REGISTRY.register()
class ZeroShotMaskFormer(nn.Module):
    """Inputs: detectron2's list of dicts with ``image`` (3, H, W) RGB on the 0-255 scale and,
    in training, ``instances`` (``gt_classes`` indexing the training vocabulary, ``gt_masks``
    (N, H, W)); optionally ``height``/``width`` (output size), ``dataset_name`` and
    ``vocabulary`` (see :mod:`.vocabulary`). Training returns the weighted loss dict;
    inference one ``{"sem_seg": (K, height, width)}`` per input over its vocabulary.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, pixel_decoder: nn.Module, transformer_decoder: nn.Module,
                 clip: CLIPTextImageEncoder, classifier: VocabularyClassifier, criterion: SetCriterion,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisibility: int,
                 train_dataset: Optional[str], test_dataset: Optional[str],
                 sem_seg_postprocess_before_inference: bool = False):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.clip = clip
        self.classifier = classifier
        self.criterion = criterion
        self.size_divisibility = max(size_divisibility, getattr(backbone, "size_divisibility", 0) or 0)
        self.train_dataset = train_dataset
        self.test_dataset = test_dataset
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        pixel_decoder = build_pixel_decoder(cfg, backbone.output_shape())
        clip = CLIPTextImageEncoder(cfg)
        transformer_decoder = build_transformer_decoder(
            cfg, in_channels=cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, mask_dim=cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            class_embed_dim=clip.embed_dim)
        classifier = VocabularyClassifier(clip.embed_dim, cfg.MODEL.ZSMASK.LOGIT_SCALE_INIT,
                                          cfg.MODEL.ZSMASK.LOGIT_SCALE_MAX)
        criterion = build_criterion(cfg, build_matcher(cfg))
        test_dataset = cfg.MODEL.ZSMASK.DEFAULT_TEST_DATASET or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
        return {
            "backbone": backbone,
            "pixel_decoder": pixel_decoder,
            "transformer_decoder": transformer_decoder,
            "clip": clip,
            "classifier": classifier,
            "criterion": criterion,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "train_dataset": cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None,
            "test_dataset": test_dataset,
            "sem_seg_postprocess_before_inference":
                cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ shared steps
    def preprocess_images(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the inputs' images into one (B, 3, H', W') batch."""
        images = [(to_rgb(x["image"]).to(self.device).float() - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def predict_queries(self, images: ImageList) -> Dict:
        """Backbone -> pixel decoder -> transformer decoder (see the decoder for the keys)."""
        features = self.backbone(images.tensor)
        mask_features, multi_scale_features = self.pixel_decoder.forward_features(features)
        outputs = self.transformer_decoder(multi_scale_features, mask_features)
        outputs["features"] = features
        return outputs

    def text_embeddings(self, vocabulary: Tuple[str, ...]) -> torch.Tensor:
        """(K, D) L2-normalised class embeddings (cached by the CLIP module)."""
        return self.clip.encode_vocabulary(vocabulary).to(self.device)

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict]):
        if not batched_inputs:
            raise ValueError("ZeroShotMaskFormer got an empty batch")
        images = self.preprocess_images(batched_inputs)
        outputs = self.predict_queries(images)
        if self.training:
            return self.losses(batched_inputs, images, outputs)
        return self.inference(batched_inputs, images, outputs)

    def losses(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> Dict[str, torch.Tensor]:
        vocabularies = {vocabulary_of_input(x, self.train_dataset) for x in batched_inputs}
        if len(vocabularies) != 1:
            raise VocabularyError("a training batch mixes datasets with different vocabularies; their gt_classes "
                                  "index different class lists — train on datasets that share one vocabulary")
        self.classifier.attach_logits(outputs, self.text_embeddings(vocabularies.pop()))
        targets = self.prepare_targets(batched_inputs, images)
        losses = self.criterion(outputs, targets)
        weights = self.criterion.weight_dict
        return {name: value * weights[name] for name, value in losses.items() if name in weights}

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """``instances`` -> ``[{"labels": (T,), "masks": (T, H', W') bool}]`` padded like the images."""
        padded_h, padded_w = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            if "instances" not in x:
                raise ValueError("training inputs need 'instances' (use zsmask's dataset mapper in training mode)")
            instances = x["instances"].to(self.device)
            masks = instances.gt_masks
            masks = masks.tensor if hasattr(masks, "tensor") else masks
            padded = masks.new_zeros((masks.shape[0], padded_h, padded_w), dtype=torch.bool)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks.bool()
            targets.append({"labels": instances.gt_classes.long(), "masks": padded})
        return targets

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        mask_pred = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear",
                                  align_corners=False)
        results = []
        for i, x in enumerate(batched_inputs):
            text = self.text_embeddings(vocabulary_of_input(x, self.test_dataset))
            cls_logits = self.classifier(outputs["pred_embeddings"][i], text)
            image_size = images.image_sizes[i]
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            masks = mask_pred[i]
            if self.sem_seg_postprocess_before_inference:
                masks = sem_seg_postprocess(masks, image_size, height, width)
                sem_seg = semantic_inference(masks, cls_logits)
            else:
                sem_seg = sem_seg_postprocess(semantic_inference(masks, cls_logits), image_size, height, width)
            results.append({"sem_seg": sem_seg})
        return results
