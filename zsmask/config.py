"""zsmask's additions to detectron2's config: one entry point, :func:`add_zsmask_config`.

Every key zsmask reads is declared here with its default and what it does. Keys of later
parts (model, methods) are added here as those parts land, never in a second function.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_zsmask_config"]


def add_zsmask_config(cfg: CN) -> CN:
    """Add zsmask's keys to a detectron2 config (in place) and return it."""
    # ---------------------------------------------------------------- data / input pipeline
    # CLIP models take RGB; detectron2's default is BGR (Caffe2-era ResNets).
    cfg.INPUT.FORMAT = "RGB"
    # Dataset mapper used by train_net.py: "zero_shot_semantic" reads labels through the
    # registered split's label map (unseen pixels -> ignore in *_train variants).
    cfg.INPUT.DATASET_MAPPER_NAME = "zero_shot_semantic"
    # SSD-style photometric distortion (brightness, contrast, saturation, hue) in training.
    cfg.INPUT.COLOR_AUG_SSD = False
    # RandomCrop_CategoryAreaConstraint: re-draw a crop (up to 10 times) while one category
    # covers more than this fraction of it; 1.0 disables the constraint.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad training images / labels so height and width are multiples of this (-1: no padding).
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Training skips a sample whose image or label cannot be read (logged once, listed in
    # OUTPUT_DIR/bad_samples.txt, replaced by another sample) and stops above this many distinct
    # files. Evaluation never skips: a bad test file stops it with the path.
    cfg.DATALOADER.MAX_BAD_SAMPLES = 10

    # ---------------------------------------------------------------- solver
    # Optimizer: "ADAMW" (papers' choice) or "SGD".
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Learning-rate multiplier for backbone parameters (Mask2Former: 0.1).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Weight decay for embedding parameters (query embeddings, positional tables, prompts).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # "WarmupPolyLR": lr = base_lr * (1 - iter / max_iter) ** POLY_LR_POWER after warm-up.
    cfg.SOLVER.POLY_LR_POWER = 0.9
    # Constant lr factor reached at the end of the poly schedule (0 decays to zero).
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0

    # ---------------------------------------------------------------- model: meta-architecture
    # The one zsmask meta-architecture; methods plug registered parts into it (see below).
    cfg.MODEL.META_ARCHITECTURE = "ZeroShotMaskFormer"
    # CLIP statistics (0-255 scale, RGB); ResNet configs override with ImageNet's.
    cfg.MODEL.PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
    # Standard deviation matching PIXEL_MEAN.
    cfg.MODEL.PIXEL_STD = [68.5005327, 66.6321579, 70.32316305]

    # zsmask's own model keys (matcher, classifier, vocabulary).
    cfg.MODEL.ZSMASK = CN()
    # Matcher from zsmask's MATCHER_REGISTRY: "hungarian", "hungarian_focal" (Split Matching's costs,
    # no split), "split_matching", "negative_proposals".
    cfg.MODEL.ZSMASK.MATCHER = "hungarian"
    # Initial value of the learned logit scale (inverse temperature) of the cosine classifier.
    cfg.MODEL.ZSMASK.LOGIT_SCALE_INIT = 1.0 / 0.07
    # Upper bound of the learned logit scale (as CLIP's 100).
    cfg.MODEL.ZSMASK.LOGIT_SCALE_MAX = 100.0
    # Vocabulary for inference when an input names no dataset and carries no "vocabulary"
    # (empty: the first of DATASETS.TEST).
    cfg.MODEL.ZSMASK.DEFAULT_TEST_DATASET = ""
    # Class scores at inference: "softmax" over the vocabulary + "no object" (Mask2Former) or
    # "sigmoid" per class (for classifiers trained with a sigmoid focal loss, e.g. Split Matching).
    cfg.MODEL.ZSMASK.CLASS_SCORE = "softmax"
    # With sigmoid scores: initial value of the learned bias added to every class logit (-4.6
    # gives the focal-loss prior p = 0.01). Softmax scores have no bias (it would cancel).
    cfg.MODEL.ZSMASK.LOGIT_BIAS_INIT = 0.0
    # Pseudo labeler from zsmask's PSEUDO_LABELER_REGISTRY that adds targets for unannotated
    # regions in training ("" = none; "clip_kmeans" = Split Matching's CLIP K-means masks).
    cfg.MODEL.ZSMASK.PSEUDO_LABELER = ""
    # Training-only heads from zsmask's AUXILIARY_HEAD_REGISTRY, each adding its own losses
    # (e.g. "MultiScaleFeatureEnhancement"); never run at inference.
    cfg.MODEL.ZSMASK.AUXILIARY_HEADS = []
    # Proposal embedder from zsmask's PROPOSAL_EMBEDDER_REGISTRY that gives each query's class
    # embedding instead of the transformer decoder ("" = the decoder's own; AlignZeg:
    # "CLIPSemanticDecoder").
    cfg.MODEL.ZSMASK.PROPOSAL_EMBEDDER = ""
    # Pixel score head from zsmask's PIXEL_SCORE_HEAD_REGISTRY: a per-pixel path trained next to
    # the query path and mixed with it at inference ("" = none; OTSeg / ZegOT:
    # "MultiPromptSinkhornHead", options under MODEL.OTSEG).
    cfg.MODEL.ZSMASK.PIXEL_SCORE_HEAD = ""
    # w in sem_seg = (1 - w) * query-path scores + w * pixel-path probabilities at inference.
    cfg.MODEL.ZSMASK.PIXEL_SCORE_WEIGHT = 0.5
    # Inference post-processors from zsmask's POST_PROCESSOR_REGISTRY, applied in order to each
    # image's (K, H, W) scores; any model can use them (SAZS: ["EigensegmentFusion"], options
    # under MODEL.SAZS).
    cfg.MODEL.ZSMASK.POST_PROCESSORS = []
    # Softmax scores at inference include the "no object" / background class (Mask2Former);
    # False: a softmax over the vocabulary alone (the literal reading of AlignZeg Sec. 4.2).
    cfg.MODEL.ZSMASK.BACKGROUND_AT_INFERENCE = True
    # Extra randomly drawn decoder queries appended to the learned ones at inference only.
    cfg.MODEL.ZSMASK.RANDOM_QUERIES = CN()
    # How many (0 = none; Split Matching uses 50 on COCO-Stuff).
    cfg.MODEL.ZSMASK.RANDOM_QUERIES.NUM = 0
    # Seed of the torch.Generator (on CPU) the random queries are drawn from: the same seed gives
    # the same queries, and the same predictions, on every device and call.
    cfg.MODEL.ZSMASK.RANDOM_QUERIES.SEED = 0
    # "normal": N(0, 1) per dimension, the learned queries' initial distribution (nn.Embedding);
    # "fitted": N(mean, std) per dimension of the trained learned queries.
    cfg.MODEL.ZSMASK.RANDOM_QUERIES.DISTRIBUTION = "normal"
    # DistributedDataParallel's find_unused_parameters: set True only when some parameters get
    # no gradient in a training step (e.g. a branch skipped by the config); it costs a graph walk.
    cfg.MODEL.ZSMASK.DDP_FIND_UNUSED_PARAMETERS = False

    # ---------------------------------------------------------------- model: CLIP
    # CLIP (text classifier, dense features) shared by every method.
    cfg.MODEL.CLIP = CN()
    # open_clip architecture name, e.g. "ViT-B-16", "RN50", or a custom config registered
    # with open_clip (the toy CLIP).
    cfg.MODEL.CLIP.MODEL_NAME = "ViT-B-16"
    # Weights: an open_clip pretrained tag ("openai", "laion2b_s34b_b88k"), a local checkpoint
    # file, or "" for random initialisation (tests, toy world pre-training).
    cfg.MODEL.CLIP.PRETRAINED = ""
    # Prompt-template ensemble: a named set from zsmask.modeling.clip.templates ("vild",
    # "imagenet", "single") ...
    cfg.MODEL.CLIP.PROMPT_TEMPLATE_SET = "vild"
    # ... or, when non-empty, this list of format strings with one "{}" (overrides the set).
    cfg.MODEL.CLIP.PROMPT_TEMPLATES = []
    # Token context length for the text encoder (0: the model's own).
    cfg.MODEL.CLIP.CONTEXT_LENGTH = 0
    # JSON file with an open_clip model config ({"embed_dim", "vision_cfg", "text_cfg"}) that is
    # registered under MODEL_NAME before loading (custom architectures such as the toy CLIP).
    cfg.MODEL.CLIP.ARCHITECTURE_FILE = ""
    # Dense ViT embeddings: "maskclip" (last block's value path + residual + MLP, as MaskCLIP's
    # code) or "value_only" (value path and out-projection alone).
    cfg.MODEL.CLIP.VIT_DENSE_ROUTE = "maskclip"

    # CLIP visual tower as a detectron2 backbone (MODEL.BACKBONE.NAME = "CLIPVisualBackbone").
    cfg.MODEL.CLIP_BACKBONE = CN()
    # Freeze the CLIP visual tower (FC-CLIP and the papers keep it frozen).
    cfg.MODEL.CLIP_BACKBONE.FREEZE = True
    # Feature names the backbone returns (strides 4, 8, 16, 32).
    cfg.MODEL.CLIP_BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Learnable VPT-deep prompt tokens per ViT block (OTSeg tunes CLIP's image encoder so); 0: none.
    cfg.MODEL.CLIP_BACKBONE.NUM_DEEP_PROMPTS = 0
    # ViT blocks (1-based) whose patch tokens are also returned in CLIP's joint space
    # (clip_layer<i>, with the pooled clip_global) for a pixel score path (OTSeg, ZegOT).
    cfg.MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS = []

    # ---------------------------------------------------------------- model: pixel decoder
    # (detectron2 already declares MODEL.SEM_SEG_HEAD; zsmask sets and extends it.)
    # Pixel decoder from zsmask's PIXEL_DECODER_REGISTRY.
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    # Backbone features the pixel decoder reads.
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Features refined by the deformable-attention encoder (the others go through the FPN path).
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    # Stride of the per-pixel embedding the masks are predicted on.
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    # Channels of the pixel decoder's convolutions and encoder.
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
    # Channels of the per-pixel mask embedding.
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    # Normalisation in the FPN path ("GN", "BN", "" ...).
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    # Label value ignored by the losses.
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
    # Deformable-attention encoder: layers, heads, sampling points, feed-forward width, dropout.
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 6
    # Attention heads of the deformable encoder.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_NHEADS = 8
    # Sampling points per head and level of the deformable encoder.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_NPOINTS = 4
    # Feed-forward width of the deformable encoder.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_DIM_FEEDFORWARD = 1024
    # Dropout of the deformable encoder.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_DROPOUT = 0.0
    # MSDeformAttn implementation, one of: auto (zsmask's CUDA kernel on CUDA tensors when it
    # builds, else the PyTorch path), cuda (an error if the kernel is unavailable), pytorch.
    cfg.MODEL.SEM_SEG_HEAD.MSDEFORM_ATTN_IMPL = "auto"

    # ---------------------------------------------------------------- model: transformer decoder
    # Mask2Former-style transformer decoder and loss options (Mask2Former's key names).
    cfg.MODEL.MASK_FORMER = CN()
    # Masked-attention decoder from zsmask's TRANSFORMER_DECODER_REGISTRY.
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # Decoder layers (each: masked cross-attention, self-attention, FFN), round-robin over
    # the 3 coarsest pixel-decoder scales.
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 9
    # Number of learnable queries.
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    # Width of queries and attention.
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    # Attention heads of the decoder.
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    # Feed-forward width of the decoder.
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    # Dropout of the decoder.
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.0
    # Pre-norm (True) or post-norm (False, Mask2Former's default) decoder layers.
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    # Project pixel-decoder features even when their width already equals HIDDEN_DIM.
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    # Losses on the prediction of every decoder layer (and the one before the first).
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    # Criterion losses (registered names, see zsmask/modeling/criterion.py): Mask2Former's
    # "labels" (softmax CE) and "masks" (BCE + dice); Split Matching's "focal_labels",
    # "iou_dice_masks" and "candidate_cosine".
    cfg.MODEL.ZSMASK.LOSSES = ["labels", "masks"]
    # Weight of the "no object" class in the classification loss.
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    # Loss (and matching cost) weights: classification (softmax CE, or sigmoid focal with
    # Split Matching), mask BCE, mask dice.
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 2.0
    # Weight of the mask sigmoid-BCE loss and cost.
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 5.0
    # Weight of the mask dice loss and cost.
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 5.0
    # Points sampled per mask for matching costs and mask losses (Mask2Former: 112 x 112).
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    # Importance sampling of loss points: candidates = ratio x points ...
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    # ... of which this fraction are the most uncertain, the rest uniform.
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Pad inputs to a multiple of this (the backbone's largest stride).
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    # Inference options.
    cfg.MODEL.MASK_FORMER.TEST = CN()
    # Return per-pixel class scores ("sem_seg") at inference.
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    # Pixels of the input (not the padding) only; resize back to the record's height/width.
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    # ---------------------------------------------------------------- split matching
    # Split Matching (Chen et al.): pseudo masks for unannotated regions from frozen CLIP features.
    cfg.MODEL.SPLIT_MATCHING = CN()
    # CLIP K-means pseudo-mask generator (Sec. 3.2; the paper gives no values, these are ours).
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS = CN()
    # Eq. 1 window sizes S, in cells of the CLIP dense feature grid (stride round(s/2)).
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.WINDOW_SIZES = [4, 8, 16]
    # K-means (cosine) rounds from the seeds.
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.KMEANS_ITERATIONS = 10
    # "per_scale": one K-means per window size, seeded with that size's Eq. 1 seeds (CLIP-ZSS's
    # multi-scale K-means); "joint": one K-means from the seeds of all sizes (clusters then
    # split regions into many small ones when the seeds outnumber the valid cells).
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.KMEANS_SCALES = "per_scale"
    # Pseudo masks overlapping by more than this IoU are one region's clusters at several scales
    # and are merged (their union); 1.0 keeps every mask.
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.DUPLICATE_IOU = 0.5
    # Mask fusion: clusters whose centroids' cosine similarity exceeds this are merged.
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.FUSION_THRESHOLD = 0.9
    # Smallest pseudo mask kept, as a fraction of the image's pixels.
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.MIN_AREA = 0.005
    # At most this many pseudo masks per image (the largest).
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.MAX_MASKS = 20
    # A CLIP feature cell is clustered when more than this fraction of its pixels is unannotated.
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.CELL_UNANNOTATED_FRACTION = 0.5
    # Region embedding C_u (Table 3): "cls" (CLIP [CLS] of the masked image, the paper's: one
    # CLIP forward per mask), "cls_attention" (one [CLS] copy per mask attending only to the
    # mask's patch tokens in CLIP's last REGION_ATTENTION_LAYERS blocks: every mask of an image
    # from one forward; ViT CLIPs), "region_tokens" (CLIP run on each mask's own patch cells,
    # outside pixels at the mean, every mask of an image packed in one sequence with
    # block-diagonal attention; ViT CLIPs), "dense" (mask-averaged dense CLIP features) or
    # "dense_mlp" (those through a trained MLP).
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_EMBEDDING = "cls"
    # "cls_attention": the last blocks whose [CLS] copies see only their mask (SAN and AlignZeg
    # decode the last 3 of ViT-B/16's 12).
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.REGION_ATTENTION_LAYERS = 3
    # On-disk cache of pseudo masks: "" (off), "auto" (<zsmask cache>/pseudo_masks) or a folder;
    # keyed by the augmented image, its unannotated pixels, the CLIP weights and the settings
    # above, so entries are reused only for identical views (see zsmask/modeling/pseudo_masks/labeler.py).
    cfg.MODEL.SPLIT_MATCHING.PSEUDO_MASKS.CACHE_DIR = ""
    # K_u: the last K_u of MODEL.MASK_FORMER.NUM_OBJECT_QUERIES are candidate queries, matched
    # to pseudo masks only; the others are seen queries, matched to annotated classes only.
    cfg.MODEL.SPLIT_MATCHING.NUM_CANDIDATE_QUERIES = 50
    # Eq. 3's focal classification and dice terms are weighted by MODEL.MASK_FORMER.CLASS_WEIGHT
    # and DICE_WEIGHT (the paper keeps Mask2Former's 2 and 5), Mask2Former's sigmoid BCE by
    # MASK_WEIGHT; the soft-IoU term (loss and matching cost) by this. IoU + dice alone
    # (MASK_WEIGHT 0) lets masks collapse to all-on early in training (docs/methods/split_matching.md).
    cfg.MODEL.SPLIT_MATCHING.IOU_WEIGHT = 5.0
    # Weight of L_cos = 1 - cos(V'_u, C_u) over matched candidate queries.
    cfg.MODEL.SPLIT_MATCHING.COSINE_WEIGHT = 1.0
    # Candidate calibration at inference (not in the paper, which scores candidate and random
    # queries like seen ones). Candidate queries are trained towards region embeddings C_u,
    # seen queries towards text; a region embedding's cosine with its own class's text, kappa,
    # is below 1 (CLIP's modality gap), so at inference a candidate's text cosines are divided
    # by kappa: logit = tau * cos / kappa + b for candidate and random queries. kappa is
    # measured in training on annotated (seen) regions, embedded as C_u is, against their
    # class text (ALIGNMENT_MASKS of them, then frozen); it is saved with the model.
    cfg.MODEL.SPLIT_MATCHING.CANDIDATE_CALIBRATION = False
    # Annotated regions kappa is measured on, in the first training iterations (then frozen).
    cfg.MODEL.SPLIT_MATCHING.ALIGNMENT_MASKS = 512
    # Focal loss alpha and gamma (Lin et al. 2017), for the classification and MFE losses.
    cfg.MODEL.SPLIT_MATCHING.FOCAL_ALPHA = 0.25
    # Focal loss gamma.
    cfg.MODEL.SPLIT_MATCHING.FOCAL_GAMMA = 2.0
    # Multi-scale Feature Enhancement (Sec. 3.3), enabled by listing "MultiScaleFeatureEnhancement"
    # in MODEL.ZSMASK.AUXILIARY_HEADS.
    cfg.MODEL.SPLIT_MATCHING.MFE = CN()
    # Normalisation in its conv blocks (Table 4): "GN", "BN" or "" (none).
    cfg.MODEL.SPLIT_MATCHING.MFE.NORM = "GN"
    # Weight of L_MFE = CE + focal against Y_p.
    cfg.MODEL.SPLIT_MATCHING.MFE.WEIGHT = 1.0

    # ---------------------------------------------------------------- AlignZeg
    # AlignZeg (Ge et al.). Its model: MODEL.BACKBONE.NAME "CLIPSideAdapterBackbone", pixel decoder
    # "CLIPFusionPixelDecoder", transformer decoder "MutuallyRefinedProposalDecoder", proposal
    # embedder "CLIPSemanticDecoder"; the switches below turn on the Table 4 parts.
    cfg.MODEL.ALIGNZEG = CN()
    # The learnable image encoder (Sec. 4.2: a plain ViT, 8 layers, width 240, patch 16).
    cfg.MODEL.ALIGNZEG.IMAGE_ENCODER = CN()
    # Token width of the image encoder.
    cfg.MODEL.ALIGNZEG.IMAGE_ENCODER.DIM = 240
    # Number of transformer layers.
    cfg.MODEL.ALIGNZEG.IMAGE_ENCODER.DEPTH = 8
    # Attention heads per layer (DIM must be divisible by it).
    cfg.MODEL.ALIGNZEG.IMAGE_ENCODER.NUM_HEADS = 6
    # Patch size (= the stride of Z_enc and of the mask proposals).
    cfg.MODEL.ALIGNZEG.IMAGE_ENCODER.PATCH_SIZE = 16
    # MLP width as a multiple of DIM.
    cfg.MODEL.ALIGNZEG.IMAGE_ENCODER.MLP_RATIO = 4.0
    # How the frozen CLIP ViT is split (supplementary Sec. 1, after SAN).
    cfg.MODEL.ALIGNZEG.CLIP = CN()
    # Z_clip is the output of this CLIP block (1-based; ViT-B/16: 6).
    cfg.MODEL.ALIGNZEG.CLIP.FEATURE_LAYER = 6
    # The last blocks form the semantic decoder (ViT-B/16: 3); the others run on the image.
    cfg.MODEL.ALIGNZEG.CLIP.DECODER_LAYERS = 3
    # CLIP reads the image resized by this factor (Sec. 4.2: 320^2 for 640^2 inputs, 0.5).
    cfg.MODEL.ALIGNZEG.CLIP.INPUT_SCALE = 0.5
    # Deep visual prompts per CLIP encoder block (VPT-deep as ZegCLIP; COCO-Stuff: 20, else 0).
    cfg.MODEL.ALIGNZEG.CLIP.NUM_DEEP_PROMPTS = 0
    # The CLIP [CLS] semantic decoder.
    cfg.MODEL.ALIGNZEG.SEMANTIC_DECODER = CN()
    # Per-head channels of the attention-bias embeddings B = Q''_m · MLP(Z'_f)^T.
    cfg.MODEL.ALIGNZEG.SEMANTIC_DECODER.BIAS_DIM = 64
    # Mutually-Refined Proposal Extraction (Sec. 3.1).
    cfg.MODEL.ALIGNZEG.MRPE = CN()
    # True: query and image refinement (Eq. 1); False: Table 4's baseline, a MaskFormer-style
    # decoder of MODEL.MASK_FORMER.DEC_LAYERS layers on unrefined features.
    cfg.MODEL.ALIGNZEG.MRPE.ENABLED = True
    # Rounds of query + image refinement before the final queries (paper: 1).
    cfg.MODEL.ALIGNZEG.MRPE.NUM_ROUNDS = 1
    # Predictive Bias Correction (Sec. 3.3).
    cfg.MODEL.ALIGNZEG.PBC = CN()
    # Switch: the class indicator φ_bc, its loss L_bc ("class_indicator") and Eq. 7 at inference.
    cfg.MODEL.ALIGNZEG.PBC.ENABLED = False
    # Matcher-registry name of the proposal selector that labels proposals for L_bc.
    cfg.MODEL.ALIGNZEG.PBC.SELECTOR = "negative_proposals"
    # A background proposal is a negative when it ranks within the top-K mask losses of every
    # seen class in the image (Fig. 4; K = 50).
    cfg.MODEL.ALIGNZEG.PBC.NEGATIVE_TOP_K = 50
    # Which unmatched proposals are L_bc's negatives: "top_k" (the paper's Fig. 4 rule above) or
    # "unannotated" (those whose predicted mask lies mostly on the image's unannotated pixels,
    # where its unseen objects are; with few queries the top-K rule picks mostly empty proposals).
    cfg.MODEL.ALIGNZEG.PBC.NEGATIVES = "top_k"
    # For "unannotated" negatives: the least share of a proposal's mask on unannotated pixels.
    cfg.MODEL.ALIGNZEG.PBC.NEGATIVE_MIN_UNANNOTATED = 0.5
    # Eq. 7: proposals whose class indicator exceeds gamma get their seen-class scores set to the
    # minimum of the proposal logits (gamma = 0.3).
    cfg.MODEL.ALIGNZEG.PBC.THRESHOLD = 0.3
    # Weight of L_bc in Eq. 8 (1).
    cfg.MODEL.ALIGNZEG.PBC.WEIGHT = 1.0
    # Feature Expansion Strategy (Sec. 3.2, Eqs. 2-3).
    cfg.MODEL.ALIGNZEG.FES = CN()
    # Switch: the virtual-feature loss L_vir ("virtual_features").
    cfg.MODEL.ALIGNZEG.FES.ENABLED = False
    # alpha of the mixing weight beta ~ Beta(alpha, alpha) (3).
    cfg.MODEL.ALIGNZEG.FES.ALPHA = 3.0
    # lambda_3 of Eq. 8 (1e-2).
    cfg.MODEL.ALIGNZEG.FES.WEIGHT = 1e-2
    # Background Diversity Strategy (Sec. 3.2, Eq. 4).
    cfg.MODEL.ALIGNZEG.BDS = CN()
    # Switch: NUM_PROTOTYPES background prototypes (else one) and their loss L_reg
    # ("background_diversity").
    cfg.MODEL.ALIGNZEG.BDS.ENABLED = False
    # M (COCO-Stuff: 20, others: 10).
    cfg.MODEL.ALIGNZEG.BDS.NUM_PROTOTYPES = 10
    # lambda_4 of Eq. 8 (1e-4).
    cfg.MODEL.ALIGNZEG.BDS.WEIGHT = 1e-4

    # ---------------------------------------------------------------- OTSeg / ZegOT
    # OTSeg (Kim et al.) and ZegOT: the "MultiPromptSinkhornHead" pixel score head. It reads the
    # CLIP embeddings of MODEL.CLIP_BACKBONE.EMBEDDING_LAYERS (OTSeg: the last block; ZegOT's deep
    # feature alignment: several blocks, fused by Eq. 8).
    cfg.MODEL.OTSEG = CN()
    # N text prompts per class (Sec. 4.1).
    cfg.MODEL.OTSEG.PROMPTS = CN()
    # Hand-crafted templates, one prompt each (OTSeg; N = 6 on VOC, 8 on Context / COCO-Stuff).
    cfg.MODEL.OTSEG.PROMPTS.TEMPLATES = [
        "a photo of a {}.", "This is a photo of a {}", "There is a {} in the scene", "There is the {} in the scene",
        "a photo of a {} in the scene", "a photo of a small {}.", "a photo of a medium {}.", "a photo of a large {}.",
    ]
    # > 0: that many learnable prompts of CONTEXT_LENGTH vectors shared by all classes instead
    # of the templates (ZegOT: N = 4, length 8).
    cfg.MODEL.OTSEG.PROMPTS.NUM_LEARNABLE = 0
    # Context vectors per learnable prompt.
    cfg.MODEL.OTSEG.PROMPTS.CONTEXT_LENGTH = 8
    # Multi-Prompt Sinkhorn (Appendix A, Algorithm 1), in the MPS path and in MPSA.
    cfg.MODEL.OTSEG.SINKHORN = CN()
    # Entropic regularisation epsilon (not given in the paper; 0.05 in the authors' code).
    cfg.MODEL.OTSEG.SINKHORN.EPSILON = 0.05
    # t_max.
    cfg.MODEL.OTSEG.SINKHORN.MAX_ITER = 100
    # Stop once the row marginals are within this L1 error (0: always MAX_ITER iterations).
    cfg.MODEL.OTSEG.SINKHORN.TOL = 1e-6
    # The MPSA decoder (Sec. 4.2 (b)).
    cfg.MODEL.OTSEG.DECODER = CN()
    # Layers (3 in OTSeg).
    cfg.MODEL.OTSEG.DECODER.NUM_LAYERS = 3
    # FFN width (0: 4 x CLIP's embedding width).
    cfg.MODEL.OTSEG.DECODER.FFN_DIM = 0
    # Dropout on the attention weights, residuals and FFN.
    cfg.MODEL.OTSEG.DECODER.DROPOUT = 0.1
    # lambda of Eq. 17 on the decoder path Y (OTSeg 0.5); the MPS score map gets 1 - lambda
    # (ZegOT Eq. 11 gives the score map 0.8: 0.2 here).
    cfg.MODEL.OTSEG.DECODER_WEIGHT = 0.5
    # Initialisation of the learned maps between CLIP's joint space and the score paths (the
    # per-layer pixel projections and the relationship descriptor's linear layer): "identity"
    # (pixel projection = I, descriptor = its text input, so pixel-text scores are CLIP's own
    # cosines at step 0; ZegOT aligns frozen embeddings "with no further learnable parameters")
    # or "random" (truncated normal, std 0.02: CLIP's alignment is lost at step 0).
    cfg.MODEL.OTSEG.PROJECTION_INIT = "identity"
    # Losses on both paths (Eq. 18, Appendix B).
    cfg.MODEL.OTSEG.LOSS = CN()
    # lambda_focal.
    cfg.MODEL.OTSEG.LOSS.FOCAL_WEIGHT = 20.0
    # lambda_dice.
    cfg.MODEL.OTSEG.LOSS.DICE_WEIGHT = 1.0
    # lambda_ce (Appendix B; ZegOT Eq. 12).
    cfg.MODEL.OTSEG.LOSS.CE_WEIGHT = 1.0
    # gamma of the focal loss.
    cfg.MODEL.OTSEG.LOSS.FOCAL_GAMMA = 2.0
    # Normalisation of the focal loss: "mean" (Eq. 20: the mean over valid pixels and classes)
    # or "present_pairs" (per-class pixel means summed over classes, / the (image, class) pairs
    # present, Mask2Former's num_masks: K / present times Eq. 20, about 6x on the toy world).
    cfg.MODEL.OTSEG.LOSS.FOCAL_NORMALIZATION = "mean"
    # The losses see every STRIDE-th pixel of the ground truth, logits resized to that grid
    # (1: the input's resolution, as the paper's Eq. 15).
    cfg.MODEL.OTSEG.LOSS.STRIDE = 1

    # ---------------------------------------------------------------- SAZS
    # SAZS (Liu et al.): spectral eigensegments fused with the prediction at inference (the
    # "EigensegmentFusion" post-processor) and boundary-aware training (the "BoundaryHead"
    # auxiliary head).
    cfg.MODEL.SAZS = CN()
    # Eigensegments (Sec. 3.4): Laplacian eigenvectors of Z = SEMANTIC_WEIGHT * Z_sem + SHAPE_WEIGHT * Z_shape.
    cfg.MODEL.SAZS.SPECTRAL = CN()
    # Long side of the working grid the affinities and eigenvectors are computed on.
    cfg.MODEL.SAZS.SPECTRAL.RESOLUTION = 64
    # K: non-trivial eigenvectors, discretised into K + 1 clusters (Sec. 3.5: K = 5).
    cfg.MODEL.SAZS.SPECTRAL.NUM_EIGENVECTORS = 5
    # k of the colour / position k-nearest-neighbour graph Z_shape (Eq. 5; not given in the paper).
    cfg.MODEL.SAZS.SPECTRAL.NUM_NEIGHBORS = 10
    # Weight of Z_sem (Eq. 4; 0: colour / position alone, Table 6).
    cfg.MODEL.SAZS.SPECTRAL.SEMANTIC_WEIGHT = 1.0
    # lambda of Eq. 6 on Z_shape (not given in the paper; 0: Z_sem alone). With both terms it is
    # relative: Z_shape (k weights per pixel) is first rescaled to the total weight of the dense
    # Z_sem (N per pixel), so lambda = 1 gives both graphs equal weight.
    cfg.MODEL.SAZS.SPECTRAL.SHAPE_WEIGHT = 1.0
    # Split every cluster into its connected parts.
    cfg.MODEL.SAZS.SPECTRAL.CONNECTED_COMPONENTS = True
    # Source of Z_sem's features: last-block keys of a frozen self-supervised ViT.
    cfg.MODEL.SAZS.SEMANTIC_FEATURES = CN()
    # timm architecture of the checkpoint in WEIGHTS (DINO ViT-S/16: "vit_small_patch16_224").
    cfg.MODEL.SAZS.SEMANTIC_FEATURES.VIT = "vit_small_patch16_224"
    # Local checkpoint of that ViT (timm or DINO layout); "": the model's CLIP visual tower
    # (logged as a warning).
    cfg.MODEL.SAZS.SEMANTIC_FEATURES.WEIGHTS = ""
    # Long side the image is resized to for the ViT (rounded to its patch size).
    cfg.MODEL.SAZS.SEMANTIC_FEATURES.INPUT_SIZE = 448
    # Normalisation of the ViT's input, RGB 0-255 (ImageNet's, as DINO).
    cfg.MODEL.SAZS.SEMANTIC_FEATURES.PIXEL_MEAN = [123.675, 116.28, 103.53]
    # Standard deviations, RGB 0-255.
    cfg.MODEL.SAZS.SEMANTIC_FEATURES.PIXEL_STD = [58.395, 57.12, 57.375]
    # Fusion (Eq. 7).
    cfg.MODEL.SAZS.FUSION = CN()
    # A segment takes its max-IoU class only when that class covers at least this fraction of
    # it (0: the paper's rule, every segment is relabelled).
    cfg.MODEL.SAZS.FUSION.MIN_COVERAGE = 0.8
    # Boundary-aware training (Sec. 3.3), enabled by listing "BoundaryHead" in
    # MODEL.ZSMASK.AUXILIARY_HEADS.
    cfg.MODEL.SAZS.BOUNDARY = CN()
    # Features the boundary head reads: "multi_scale_<i>" (the pixel decoder's i-th scale,
    # coarsest first; 1: the middle one, the paper's "middle-layer features") or "mask_features".
    cfg.MODEL.SAZS.BOUNDARY.IN_FEATURE = "multi_scale_1"
    # Normalisation of its 3x3 conv block ("GN", "BN", "").
    cfg.MODEL.SAZS.BOUNDARY.NORM = "GN"
    # lambda_2 of Eq. 3 on L_bce (not given in the paper).
    cfg.MODEL.SAZS.BOUNDARY.BCE_WEIGHT = 1.0
    # lambda_1 of Eq. 3 on L_shape (Eq. 2; 0: no L_shape, no network needed).
    cfg.MODEL.SAZS.BOUNDARY.SHAPE_WEIGHT = 0.0
    # The frozen inverse-transformation network of L_shape, trained in advance by
    # tools/train_inverse_transform.py.
    cfg.MODEL.SAZS.BOUNDARY.INVERSE_TRANSFORM_WEIGHTS = ""
    # (rows, cols) of the L_shape patches (Sec. 4.2: 3 x 6).
    cfg.MODEL.SAZS.BOUNDARY.PATCH_GRID = [3, 6]

    # ---------------------------------------------------------------- evaluation
    # Zero-shot evaluation options.
    cfg.TEST.ZERO_SHOT = CN()
    # Also evaluate the ZS3 variant ("<split>_test_zs3", unseen-only vocabulary) of every
    # "*_test" dataset in DATASETS.TEST when it is registered.
    cfg.TEST.ZERO_SHOT.EVAL_ZS3 = False
    # Models with a class indicator (AlignZeg PBC) also return each test image's proposals
    # (binary masks at output resolution and indicator probabilities), for the evaluator's
    # indicator AUROC; memory grows with queries x image size, so it is off by default.
    cfg.TEST.ZERO_SHOT.PROPOSAL_DIAGNOSTICS = False
    # Test-image bootstrap resamples for the standard errors "<metric>_bootstrap_se" of the
    # evaluation (0: off). Keeps one (C+1)^2 confusion matrix per test image in memory.
    cfg.TEST.ZERO_SHOT.BOOTSTRAP = 0
    # Which classes enter mIoU and the other means: "exclude" (those present in the ground
    # truth; detectron2's SemSegEvaluator on its main branch) or "count_predicted" (also those
    # absent from the ground truth but predicted, with IoU 0; detectron2 v0.6); docs/evaluation.md.
    cfg.TEST.ZERO_SHOT.ABSENT_CLASSES = "exclude"
    # Sliding-window inference (zsmask.engine.sliding_window): SIZE x SIZE windows of the
    # test-time resized image, STRIDE apart, their class scores averaged where they overlap
    # (the generic scheme; CAT-Seg's protocol differs, see the module).
    cfg.TEST.SLIDING_WINDOW = CN()
    # Off: each test image is classified whole, as the zero-shot papers evaluate.
    cfg.TEST.SLIDING_WINDOW.ENABLED = False
    # Window side in pixels of the test-time resized image.
    cfg.TEST.SLIDING_WINDOW.SIZE = 384
    # Step between windows (< SIZE: they overlap; the last window of a row ends on the edge).
    cfg.TEST.SLIDING_WINDOW.STRIDE = 256
    # ---------------------------------------------------------------- solver extras
    # Mixed precision runs on CUDA only; on CPU the trainer logs a warning and trains in fp32.
    cfg.SOLVER.AMP.ENABLED = False
    return cfg
