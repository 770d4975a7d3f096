"""Class names of the standard zero-shot and open-vocabulary benchmarks, in label-id order,
and the zero-shot splits.

Unseen classes follow the inductive GZS3 protocol used by ZegFormer, ZegCLIP, SAN,
Split Matching, AlignZeg and OTSeg (see DESIGN.md, "Standard zero-shot splits").
Label PNGs written by ``datasets/prepare_*.py`` use exactly these ids; 255 is ignore (65535
for ADE20K-847 and PASCAL Context-459, whose 16-bit PNGs hold ids above 255).

The long open-vocabulary lists (ADE20K-150, ADE20K-847, PASCAL Context-459) are data files in
``zsmask/data/class_lists/``, each with a header naming its sources.
"""
import os
from typing import List, Tuple

CLASS_LIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "class_lists")


def read_class_list(file_name: str) -> List[Tuple[str, ...]]:
    """The rows of ``class_lists/<file_name>`` (tab-separated; ``#`` lines are comments), the
    first column (the contiguous train id) checked to run 0, 1, 2, ..."""
    path = os.path.join(CLASS_LIST_DIR, file_name)
    with open(path, encoding="utf-8") as f:
        rows = [tuple(line.rstrip("\n").split("\t")) for line in f if line.strip() and not line.startswith("#")]
    header, rows = rows[0], rows[1:]
    if [int(r[0]) for r in rows] != list(range(len(rows))) or any(len(r) != len(header) for r in rows):
        raise ValueError(f"{path}: rows must have {len(header)} columns ({', '.join(header)}) and train ids 0..N-1")
    return rows

# PASCAL VOC 2012: 20 object classes; the VOC "background" is ignored (label 255).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOC_UNSEEN = ("pottedplant", "sheep", "sofa", "train", "tvmonitor")

# COCO-Stuff 164K: 80 things then 91 stuff classes (the 171 used categories, in COCO id order).
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill",
    "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud",
    "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other",
    "wood",
)
COCO_STUFF_UNSEEN = (
    "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
    "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete",
)
# COCO category ids (1-based, as in the stuffthingmaps PNGs + 1) of the 171 classes above:
# 80 thing ids with the 11 unused ids skipped, then the contiguous stuff ids 92..182.
COCO_STUFF_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
) + tuple(range(92, 183))

# PASCAL Context, the 59 most frequent classes (background = label 255).
PCONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)
PCONTEXT59_UNSEEN = (
    "aeroplane", "bird", "boat", "cat", "cow", "fence", "keyboard", "motorbike", "sofa", "tvmonitor",
)

# PASCAL VOC with its background as a class (VOC-21 of the open-vocabulary tables).
VOC21_CLASSES = ("background",) + VOC_CLASSES

# ADE20K SceneParsing (ADEChallengeData2016), 150 classes: label value v in 1..150 is id v - 1.
_ADE150 = read_class_list("ade20k_150.tsv")
ADE20K_150_CLASSES = tuple(row[1] for row in _ADE150)

# The full ADE20K release (ADE20K_2021_17_01), the 847 classes of the open-vocabulary protocol:
# id k is the object class ADE20K_847_FULL_IDS[k] of the release's *_seg.png (R / 10 * 256 + G).
_ADE847 = read_class_list("ade20k_847.tsv")
ADE20K_847_CLASSES = tuple(row[2] for row in _ADE847)
ADE20K_847_FULL_IDS = tuple(int(row[1]) for row in _ADE847)

# PASCAL Context, all 459 classes: LabelMap value v in 1..459 (labels.txt) is id v - 1.
_PC459 = read_class_list("pcontext_459.tsv")
PCONTEXT459_CLASSES = tuple(row[2] for row in _PC459)
