"""``ZeroShotMaskFormer``: the meta-architecture every zsmask method plugs its parts into.

backbone -> pixel decoder -> masked-attention transformer decoder -> per query a mask and a
class embedding; the embedding is classified against CLIP text embeddings of the current
vocabulary (:class:`~zsmask.modeling.heads.VocabularyClassifier`). Training uses the training
dataset's (seen) vocabulary; inference the vocabulary of each input's dataset (all classes in
GZS3), read from ``MetadataCatalog`` — unseen classes only ever exist as text.
Parts are chosen by config through registries: backbone (detectron2), pixel decoder,
transformer decoder, matcher, criterion losses; the criterion is separate from the matcher
(Mask2Former). Optional parts: a pseudo labeler that adds targets for the unannotated pixels of
training images (their classes join the seen ones as per-image extra classes), training-only
auxiliary heads with their own losses, extra random queries at inference, a proposal embedder
that gives the queries' class embeddings instead of the decoder (AlignZeg's CLIP semantic
decoder), a class indicator whose flagged proposals lose their seen-class scores at
inference (AlignZeg's Predictive Bias Correction), and a pixel score head: a per-pixel path
trained on the dense ground truth next to the query path and mixed with it at inference
(OTSeg / ZegOT's multi-prompt Sinkhorn paths). Inference post-processors refine each
image's final scores (SAZS's eigensegment fusion).
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from ..auxiliary_heads import build_auxiliary_heads
from ..clip import CLIPTextImageEncoder
from ..criterion import SetCriterion, build_criterion, configured_losses
from ..heads import ClassIndicatorHead, VocabularyClassifier
from ..inference import semantic_inference, suppress_seen_scores
from ..matcher import build_matcher, split_query_counts
from ..pixel_decoder import build_pixel_decoder
from ..pixel_score import build_pixel_score_head, dense_targets
from ..post_processing import build_post_processors
from ..proposal_embedder import build_proposal_embedder
from ..pseudo_masks import PseudoMasks, build_pseudo_labeler
from ..transformer_decoder import build_transformer_decoder
from .vocabulary import VocabularyError, vocabulary_of_dataset, vocabulary_of_input

__all__ = ["ZeroShotMaskFormer", "add_pseudo_targets", "draw_random_queries", "fit_random_queries", "random_query_noise",
           "unannotated_pixels"]
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


def unannotated_pixels(record: Dict, ignore_value: int) -> torch.Tensor:
    """(H, W) bool pixels of a training input without annotation: its ``unannotated`` entry
    (zsmask's mapper), else ``sem_seg == ignore_value``, else those outside every gt mask."""
    if "unannotated" in record:
        return record["unannotated"].bool()
    if "sem_seg" in record:
        return record["sem_seg"] == ignore_value
    masks = record["instances"].gt_masks
    masks = masks.tensor if hasattr(masks, "tensor") else masks
    return ~masks.bool().any(dim=0)


def random_query_noise(num: int, dim: int, seed: int) -> torch.Tensor:
    """(num, dim) N(0, 1) draws from ``torch.Generator().manual_seed(seed)`` on the CPU (so
    identical on every device)."""
    return torch.randn(num, dim, generator=torch.Generator().manual_seed(seed))


def fit_random_queries(noise: torch.Tensor, learned: torch.Tensor, distribution: str) -> torch.Tensor:
    """Random query vectors (R, C) from ``noise`` (R, C) N(0, 1) for learned queries ``learned``
    (Q, C): "normal" keeps N(0, 1) (``nn.Embedding``'s initialisation of the learned queries),
    "fitted" is N(mean, std) with the learned queries' per-dimension mean and standard deviation."""
    if distribution == "fitted":
        reference = learned.detach().float()
        noise = reference.mean(0) + reference.std(0, unbiased=False) * noise.to(reference.device)
    elif distribution != "normal":
        raise ValueError(f"MODEL.ZSMASK.RANDOM_QUERIES.DISTRIBUTION must be 'normal' or 'fitted', got {distribution!r}")
    return noise.to(device=learned.device, dtype=learned.dtype)


def draw_random_queries(num: int, learned: torch.Tensor, seed: int, distribution: str) -> torch.Tensor:
    """``num`` random query vectors (num, C) for learned queries ``learned`` (Q, C): the noise of
    :func:`random_query_noise` shaped by :func:`fit_random_queries`."""
    return fit_random_queries(random_query_noise(num, learned.shape[1], seed), learned, distribution)


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
                 sem_seg_postprocess_before_inference: bool = False,
                 pseudo_labeler: Optional[nn.Module] = None, auxiliary_heads: Sequence[nn.Module] = (),
                 ignore_value: int = 255, num_random_queries: int = 0, random_query_seed: int = 0,
                 random_query_distribution: str = "normal", proposal_embedder: Optional[nn.Module] = None,
                 class_indicator: Optional[nn.Module] = None, bias_correction_threshold: float = 0.3,
                 background_at_inference: bool = True, pixel_score_head: Optional[nn.Module] = None,
                 pixel_score_weight: float = 0.5, post_processors: Sequence = (),
                 proposal_diagnostics: bool = False, num_candidate_queries: int = 0,
                 candidate_calibration: bool = False, alignment_masks: int = 512):
        """Parts as named; optional ones: ``pseudo_labeler`` (training targets for unannotated
        pixels, which are ``ignore_value`` in the label), ``auxiliary_heads`` (training-only
        losses), ``num_random_queries`` extra queries at inference (see
        :func:`draw_random_queries`), ``proposal_embedder`` (class embeddings from the
        backbone features and the decoder outputs), ``class_indicator`` (per-query logits
        ``pred_indicator``; at inference queries with sigmoid > ``bias_correction_threshold``
        lose their seen-class scores, AlignZeg Eq. 7) and ``background_at_inference`` (see
        :meth:`VocabularyClassifier.scores`), ``pixel_score_head`` (see
        :mod:`zsmask.modeling.pixel_score`; its probabilities get weight ``pixel_score_weight``
        at inference, the query path's scores ``1 - pixel_score_weight``), ``post_processors``
        (callables ``(sem_seg (K, H, W), image (3, h, w) RGB 0-255) -> sem_seg`` applied in order
        to each image's output, see :mod:`zsmask.modeling.post_processing`); with
        ``proposal_diagnostics`` and a class indicator, each output also holds ``"proposals"``:
        ``{"masks": (Q, height, width) bool, "indicator": (Q,)}`` (for the evaluator).
        ``num_candidate_queries`` K_u (Split Matching): with a pseudo labeler, training measures
        kappa, the cosine of annotated regions' embeddings (made as C_u) with their class text, on
        ``alignment_masks`` regions; ``candidate_calibration`` divides the candidate and random
        queries' text cosines by it at inference (:meth:`calibrate_candidates`)."""
        super().__init__()
        if num_random_queries and not all(hasattr(transformer_decoder, a) for a in ("query_feat", "query_embed")):
            raise ValueError("MODEL.ZSMASK.RANDOM_QUERIES.NUM > 0 needs a transformer decoder with learned "
                             "'query_feat' / 'query_embed' embeddings")
        if not 0.0 <= pixel_score_weight <= 1.0:
            raise ValueError(f"MODEL.ZSMASK.PIXEL_SCORE_WEIGHT must be in [0, 1], got {pixel_score_weight}")
        self.pixel_score_head = pixel_score_head
        self.pixel_score_weight = pixel_score_weight
        self.post_processors = list(post_processors)
        self.pseudo_labeler = pseudo_labeler
        self.proposal_embedder = proposal_embedder
        self.class_indicator = class_indicator
        self.proposal_diagnostics = proposal_diagnostics
        self.bias_correction_threshold = bias_correction_threshold
        self.background_at_inference = background_at_inference
        self.auxiliary_heads = nn.ModuleList(auxiliary_heads)
        self.ignore_value = ignore_value
        self.num_random_queries = num_random_queries
        self.random_query_distribution = random_query_distribution
        if num_random_queries:
            fit_random_queries(torch.zeros(1, 1), torch.zeros(2, 1), random_query_distribution)  # checks the name
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.register_buffer("random_query_noise", torch.zeros(2, 0, 0), persistent=False)
        self.random_query_seed = random_query_seed  # draws random_query_noise
        self.clip = clip
        self.classifier = classifier
        self.criterion = criterion
        self.size_divisibility = max(size_divisibility, getattr(backbone, "size_divisibility", 0) or 0)
        self.train_dataset = train_dataset
        self.test_dataset = test_dataset
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.num_candidate_queries = num_candidate_queries
        self.candidate_calibration = candidate_calibration
        self.alignment_masks = alignment_masks
        if candidate_calibration and not (num_candidate_queries and pseudo_labeler is not None):
            raise ValueError("MODEL.SPLIT_MATCHING.CANDIDATE_CALIBRATION needs split matching's candidate queries "
                             "and pseudo labeler (MODEL.ZSMASK.MATCHER 'split_matching')")
        # [sum of cosines, count] of annotated regions' embeddings with their class text (kappa)
        if num_candidate_queries and pseudo_labeler is not None:
            self.register_buffer("region_text_alignment", torch.zeros(2, dtype=torch.float64))
        else:
            self.region_text_alignment = None
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        pixel_decoder = build_pixel_decoder(cfg, backbone.output_shape())
        clip = CLIPTextImageEncoder(cfg)
        proposal_embedder = build_proposal_embedder(cfg, query_dim=cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
        transformer_decoder = build_transformer_decoder(
            cfg, in_channels=cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, mask_dim=cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            class_embed_dim=0 if proposal_embedder is not None else clip.embed_dim)
        zs, az = cfg.MODEL.ZSMASK, cfg.MODEL.ALIGNZEG
        losses = configured_losses(cfg)
        if zs.CLASS_SCORE == "sigmoid" and "labels" in losses:
            raise ValueError("MODEL.ZSMASK.CLASS_SCORE='sigmoid' has no 'no object' class, which the softmax "
                             "'labels' loss needs; use a sigmoid loss such as 'focal_labels' in MODEL.ZSMASK.LOSSES")
        # A loss brings the part it trains (its switch, e.g. MODEL.ALIGNZEG.PBC.ENABLED, adds the loss).
        bias_correction = "class_indicator" in losses
        classifier = VocabularyClassifier(clip.embed_dim, zs.LOGIT_SCALE_INIT, zs.LOGIT_SCALE_MAX,
                                          zs.LOGIT_BIAS_INIT, zs.CLASS_SCORE,
                                          az.BDS.NUM_PROTOTYPES if "background_diversity" in losses else 1)
        criterion = build_criterion(cfg, build_matcher(cfg))
        test_dataset = zs.DEFAULT_TEST_DATASET or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
        ignore_value = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        if cfg.DATASETS.TRAIN:
            ignore_value = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", ignore_value)
        return {
            "proposal_embedder": proposal_embedder,
            "class_indicator": ClassIndicatorHead(clip.embed_dim, clip.embed_dim) if bias_correction else None,
            "bias_correction_threshold": az.PBC.THRESHOLD,
            "background_at_inference": zs.BACKGROUND_AT_INFERENCE,
            "pixel_score_head": build_pixel_score_head(cfg, clip),
            "pixel_score_weight": zs.PIXEL_SCORE_WEIGHT,
            "post_processors": build_post_processors(cfg, clip),
            "proposal_diagnostics": cfg.TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS,
            "num_candidate_queries": split_query_counts(cfg)[1] if zs.MATCHER == "split_matching" else 0,
            "candidate_calibration": cfg.MODEL.SPLIT_MATCHING.CANDIDATE_CALIBRATION,
            "alignment_masks": cfg.MODEL.SPLIT_MATCHING.ALIGNMENT_MASKS,
            "pseudo_labeler": build_pseudo_labeler(cfg, clip.embed_dim),
            "auxiliary_heads": build_auxiliary_heads(cfg, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, clip.embed_dim),
            "ignore_value": ignore_value,
            "num_random_queries": zs.RANDOM_QUERIES.NUM,
            "random_query_seed": zs.RANDOM_QUERIES.SEED,
            "random_query_distribution": zs.RANDOM_QUERIES.DISTRIBUTION,
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
    def preprocess_images(self, batched_inputs: List[Dict], normalize: bool = True) -> ImageList:
        """Normalise (unless ``normalize`` is False: RGB on the 0-255 scale) and pad the inputs'
        images into one (B, 3, H', W') batch."""
        images = [to_rgb(x["image"]).to(self.device).float() for x in batched_inputs]
        if normalize:
            images = [(image - self.pixel_mean) / self.pixel_std for image in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def predict_queries(self, images: ImageList) -> Dict:
        """Backbone -> pixel decoder -> transformer decoder (see the decoder for the keys; the
        intermediate features are kept under ``features``, ``multi_scale_features`` and
        ``mask_features``) -> proposal embedder and class indicator (``pred_indicator`` (B, Q)
        logits), if any. At inference the random queries, if any, follow the learned ones."""
        features = self.backbone(images.tensor)
        mask_features, multi_scale_features = self.pixel_decoder.forward_features(features)
        queries = {}
        if not self.training and self.num_random_queries > 0:
            queries = self.inference_queries()
        outputs = self.transformer_decoder(multi_scale_features, mask_features, **queries)
        if self.proposal_embedder is not None:
            outputs.update(self.proposal_embedder(features, outputs))
        if self.class_indicator is not None:
            outputs["pred_indicator"] = self.class_indicator(outputs.get("proposal_features", outputs["pred_embeddings"]))
        outputs.update(features=features, multi_scale_features=multi_scale_features, mask_features=mask_features)
        return outputs

    @property
    def random_query_seed(self) -> int:
        return self._random_query_seed

    @random_query_seed.setter
    def random_query_seed(self, seed: int) -> None:
        """Setting the seed draws the random queries' noise (2, R, C) once, not per call, so that
        a traced model holds it as a constant."""
        self._random_query_seed = seed
        if self.num_random_queries:
            noise = [random_query_noise(self.num_random_queries, getattr(self.transformer_decoder, name).weight.shape[1],
                                        seed + offset) for offset, name in enumerate(("query_feat", "query_embed"))]
            self.random_query_noise = torch.stack(noise).to(self.random_query_noise.device)

    def inference_queries(self) -> Dict[str, torch.Tensor]:
        """The learned queries followed by ``num_random_queries`` random ones (Split Matching
        Sec. 3.4): ``query_feat`` and ``query_embed``, each (Q + R, C). The content and position
        parts come from seeds ``seed`` and ``seed + 1`` (:func:`draw_random_queries`): the same
        queries on every call."""
        decoder = self.transformer_decoder
        queries = {}
        for noise, name in zip(self.random_query_noise, ("query_feat", "query_embed")):
            learned = getattr(decoder, name).weight
            random = fit_random_queries(noise, learned, self.random_query_distribution)
            queries[name] = torch.cat((learned, random), dim=0)
        return queries

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
        vocabulary = vocabularies.pop()
        text = self.text_embeddings(vocabulary)
        targets = self.prepare_targets(batched_inputs, images)
        weights = dict(self.criterion.weight_dict)
        pixel_losses = {}
        if self.pixel_score_head is not None:
            pixel_losses = self.pixel_score_losses(images, outputs, targets, vocabulary)
            weights.update(self.pixel_score_head.weight_dict)
        extra, extra_valid = None, None
        if self.pseudo_labeler is not None:
            raw = self.preprocess_images(batched_inputs, normalize=False).tensor
            if self.region_text_alignment is not None and self.region_text_alignment[1] < self.alignment_masks:
                self.measure_region_text_alignment(raw, targets, text)
            pseudo = self.pseudo_labeler(self.clip, raw, torch.stack([t["unannotated"] for t in targets]))
            targets, extra, extra_valid = add_pseudo_targets(targets, pseudo, text)

        def classify(embeddings: torch.Tensor) -> torch.Tensor:
            return self.classifier.joint_logits(embeddings, text, extra, extra_valid)

        for prediction in [outputs] + list(outputs.get("aux_outputs", [])):
            prediction["pred_logits"] = classify(prediction["pred_embeddings"])
        # For losses on the classifier itself (AlignZeg's L_vir, L_reg), final prediction only.
        outputs.update(classifier=self.classifier, text_embeddings=text)
        losses = self.criterion(outputs, targets)
        losses.update(pixel_losses)
        for head in self.auxiliary_heads:
            losses.update(head(outputs, targets, classify))
            weights.update(head.weight_dict)
        return {name: value * weights[name] for name, value in losses.items() if name in weights}

    def pixel_score_losses(self, images: ImageList, outputs: Dict,
                           targets: List[Dict[str, torch.Tensor]], vocabulary: Tuple[str, ...]) -> Dict[str, torch.Tensor]:
        """The pixel score head's losses on the dense ground truth of the annotated pixels."""
        head_outputs = self.pixel_score_head(outputs["features"], self.clip, vocabulary)
        valid = ~torch.stack([t["unannotated"] for t in targets])
        for i, (height, width) in enumerate(images.image_sizes):
            valid[i, height:], valid[i, :, width:] = False, False
        return self.pixel_score_head.losses(head_outputs, dense_targets(targets, len(vocabulary)), valid)

    @torch.no_grad()
    def measure_region_text_alignment(self, images: torch.Tensor, targets: List[Dict[str, torch.Tensor]],
                                      text: torch.Tensor) -> None:
        """Add the annotated regions of a batch to kappa's running sum: each region embedded as
        the pseudo labeler embeds C_u (``images`` (B, 3, H', W') RGB 0-255, ``targets`` before
        the pseudo targets), its cosine with its class's ``text`` (K, D). Uses no randomness."""
        generator = getattr(self.pseudo_labeler, "generator", None)
        if generator is None or getattr(self.pseudo_labeler, "embedding_mlp", None) is not None:
            return  # region embeddings that train (an MLP) have no fixed alignment to measure
        left = int(self.alignment_masks - self.region_text_alignment[1].item())
        masks, labels = [], []
        for target in targets:  # the first regions of each image, up to the ones still needed
            take = max(0, min(target["masks"].shape[0], left))
            masks.append(target["masks"][:take])
            labels.append(target["labels"][:take])
            left -= take
        if not any(m.shape[0] for m in masks):
            return
        embeddings = torch.cat(generator.region_embeddings(self.clip, images, masks))
        cosine = F.cosine_similarity(embeddings.float(), text[torch.cat(labels)].float(), dim=-1)
        self.region_text_alignment += torch.stack((cosine.sum().double(), cosine.new_tensor(len(cosine)).double()))

    def calibrate_candidates(self, cls_logits: torch.Tensor) -> torch.Tensor:
        """Candidate calibration of one image's logits (Q + R, K + 1): the rows of the candidate
        and random queries (all after the K_s seen ones) get their text cosines divided by kappa
        (see ``MODEL.SPLIT_MATCHING.CANDIDATE_CALIBRATION``); seen queries are unchanged."""
        total, count = self.region_text_alignment.tolist()
        if count == 0:
            raise RuntimeError("candidate calibration needs kappa, measured in training: this model's "
                               "region_text_alignment is empty (trained before it was measured, or without "
                               "annotated regions); set MODEL.SPLIT_MATCHING.CANDIDATE_CALIBRATION False")
        num_learned = self.transformer_decoder.query_feat.weight.shape[0] if hasattr(self.transformer_decoder,
                                                                                     "query_feat") else cls_logits.shape[0]
        first = num_learned - self.num_candidate_queries
        calibrated = self.classifier.rescale_cosine(cls_logits[first:], 1.0 / (total / count))
        return torch.cat((cls_logits[:first], calibrated), dim=0)

    def unannotated_masks(self, batched_inputs: List[Dict], images: ImageList) -> torch.Tensor:
        """(B, H', W') bool unannotated pixels (see :func:`unannotated_pixels`), padding False."""
        padded = torch.zeros((len(batched_inputs),) + tuple(images.tensor.shape[-2:]), dtype=torch.bool,
                             device=self.device)
        for i, x in enumerate(batched_inputs):
            mask = unannotated_pixels(x, self.ignore_value).to(self.device)
            padded[i, : mask.shape[0], : mask.shape[1]] = mask
        return padded

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """``instances`` -> ``[{"labels": (T,), "masks": (T, H', W') bool, "unannotated": (H', W') bool}]``
        padded like the images (padding is not unannotated)."""
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
        for target, unannotated in zip(targets, self.unannotated_masks(batched_inputs, images)):
            target["unannotated"] = unannotated
        return targets

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs: Dict) -> List[Dict]:
        mask_pred = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear",
                                  align_corners=False)
        results = []
        for i, x in enumerate(batched_inputs):
            vocabulary = vocabulary_of_input(x, self.test_dataset)
            cls_logits = self.classifier(outputs["pred_embeddings"][i], self.text_embeddings(vocabulary))
            if self.candidate_calibration:
                cls_logits = self.calibrate_candidates(cls_logits)
            if self.class_indicator is not None:
                cls_logits = self.correct_bias(cls_logits, outputs["pred_indicator"][i].sigmoid(), vocabulary)
            class_probs = self.classifier.scores(cls_logits, self.background_at_inference)
            image_size = images.image_sizes[i]
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            masks = mask_pred[i]
            if self.sem_seg_postprocess_before_inference:
                masks = sem_seg_postprocess(masks, image_size, height, width)
                sem_seg = semantic_inference(masks, cls_logits, class_probs)
            else:
                sem_seg = sem_seg_postprocess(semantic_inference(masks, cls_logits, class_probs), image_size,
                                              height, width)
            if self.pixel_score_head is not None:
                features = {name: value[i:i + 1] for name, value in outputs["features"].items()}
                probs = self.pixel_score_head.probabilities(self.pixel_score_head(features, self.clip, vocabulary))
                probs = F.interpolate(probs, size=images.tensor.shape[-2:], mode="bilinear", align_corners=False)[0]
                probs = sem_seg_postprocess(probs, image_size, height, width)
                sem_seg = (1.0 - self.pixel_score_weight) * sem_seg + self.pixel_score_weight * probs
            for post_process in self.post_processors:
                sem_seg = post_process(sem_seg, to_rgb(x["image"]))
            results.append({"sem_seg": sem_seg})
            if self.proposal_diagnostics and self.class_indicator is not None:
                results[-1]["proposals"] = {
                    "masks": sem_seg_postprocess(mask_pred[i], image_size, height, width) > 0,
                    "indicator": outputs["pred_indicator"][i].sigmoid(),
                }
        return results


    def seen_classes(self, vocabulary: Sequence[str]) -> torch.Tensor:
        """(K,) bool: which names of ``vocabulary`` are in the training vocabulary (seen classes)."""
        if not self.train_dataset:
            raise VocabularyError("Predictive Bias Correction needs the seen classes: set DATASETS.TRAIN to the "
                                  "training split (its stuff_classes are the seen vocabulary)")
        seen = {name.strip() for name in vocabulary_of_dataset(self.train_dataset)}
        return torch.tensor([name.strip() in seen for name in vocabulary], dtype=torch.bool, device=self.device)

    def correct_bias(self, cls_logits: torch.Tensor, indicator: torch.Tensor, vocabulary: Sequence[str]) -> torch.Tensor:
        """AlignZeg Eq. 7 on one image's logits (Q, K + 1): queries with ``indicator`` (Q,) >
        gamma get the minimum logit at every seen class (the background column is kept)."""
        seen = F.pad(self.seen_classes(vocabulary), (0, 1), value=False)
        return suppress_seen_scores(cls_logits, indicator, seen, self.bias_correction_threshold)


def add_pseudo_targets(targets: List[Dict[str, torch.Tensor]], pseudo: List[PseudoMasks],
                       text: torch.Tensor) -> Tuple[List[Dict[str, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """Append each image's pseudo masks to its targets (Y_p = Y_s ∪ Y_u, Split Matching Sec. 3.2).

    Pseudo mask j of image b gets class ``K + j`` in the joint class space E_b = cat(A_s, C_u)
    (K = number of text classes). Every target dict gains ``is_pseudo`` (T,) bool and
    ``embeddings`` (T, D) (its class embedding: text for seen targets, C_u for pseudo ones).

    Returns:
        the new targets, the padded extra class embeddings (B, U_max, D) and their validity
        (B, U_max) bool.
    """
    num_text = text.shape[0]
    max_pseudo = max((p.masks.shape[0] for p in pseudo), default=0)
    extra = text.new_zeros((len(targets), max_pseudo, text.shape[1]))
    valid = torch.zeros((len(targets), max_pseudo), dtype=torch.bool, device=text.device)
    joint = []
    for b, (target, p) in enumerate(zip(targets, pseudo)):
        count = p.masks.shape[0]
        height, width = target["masks"].shape[-2:]
        pseudo_masks = target["masks"].new_zeros((count, height, width))
        pseudo_masks[:, : p.masks.shape[1], : p.masks.shape[2]] = p.masks[:, :height, :width]
        embeddings = p.embeddings.to(text)
        extra[b, :count] = embeddings
        valid[b, :count] = True
        labels = target["labels"]
        joint.append({
            **{k: v for k, v in target.items() if k == "unannotated"},
            "labels": torch.cat((labels, num_text + torch.arange(count, device=labels.device))),
            "masks": torch.cat((target["masks"], pseudo_masks)),
            "is_pseudo": torch.cat((torch.zeros_like(labels, dtype=torch.bool),
                                    torch.ones(count, dtype=torch.bool, device=labels.device))),
            "embeddings": torch.cat((text[labels.to(text.device)], embeddings)),
        })
    return joint, extra, valid
