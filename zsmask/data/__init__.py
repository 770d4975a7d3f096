"""Datasets: zero-shot split definitions, catalog registration, mappers, image I/O.

Importing this package registers the built-in benchmarks (``voc_zs_*``, ``coco_stuff_zs_*``,
``pcontext_zs_*`` and the open-vocabulary test sets ``ade20k_150_test``, ``ade20k_847_test``,
``pcontext_459_test``, ``pcontext_59_test``, ``voc_20_test``, ``voc_21_test``, and
``coco_stuff_171_*``) under ``$DETECTRON2_DATASETS`` and the generated toy world
(``toy_world_*``, with its cross-dataset ``toy_world_coarse_test``, drawn into the zsmask cache
on first load).
"""
from . import builtin_meta
from .builtin import BUILTIN_SPLITS, builtin_datasets_root, register_all_builtin
from .catalog import (
    DatasetNotFoundError,
    RegisteredSet,
    RegisteredSplit,
    SemSegFolder,
    label_map_for_dataset,
    load_sem_seg_folder,
    register_open_vocabulary_set,
    register_zero_shot_split,
)
from .dataset_mapper import ZeroShotSemSegDatasetMapper
from .image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    LabelFileError,
    array_to_rgb,
    find_images,
    pil_to_array,
    read_image,
    read_sem_seg,
    unique_output_paths,
)
from .splits import SplitDefinitionError, ZeroShotSplit, vocabulary_label_map
from .toy_world import SMOKE_TOY_WORLD, register_coarse_toy_world, register_toy_world

register_all_builtin()
register_toy_world()  # toy_world_{train,test,test_zs3}
register_toy_world("toy_world_b")  # the second split of the same scenes (other unseen classes)
register_toy_world("toy_world_smoke", SMOKE_TOY_WORLD)  # 60 scenes, for smoke runs of tools
register_coarse_toy_world()  # toy_world_coarse_test: the test scenes, objects named by colour only
register_coarse_toy_world("toy_world_smoke", SMOKE_TOY_WORLD)
