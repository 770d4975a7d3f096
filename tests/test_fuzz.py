"""Property-based tests (hypothesis) of the inputs users hand zsmask: files of random or truncated
bytes, images of odd modes and dtypes, empty and huge images, unicode and duplicate class names.
Only the documented errors may come out, and nothing hangs (each example has a deadline).
Examples are derandomised, so CI runs the same ones every time."""
import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from zsmask import Predictor
from zsmask.data import SemSegFolder, ZeroShotSemSegDatasetMapper, register_zero_shot_split
from zsmask.data.image_io import ImageReadError, LabelFileError, array_to_rgb, read_image, read_sem_seg
from zsmask.data.splits import SplitDefinitionError
from zsmask.modeling.meta_arch.vocabulary import VocabularyError

from conftest import tiny_model_cfg, write_tiny_model_files

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # headers of big images

FAST = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MODEL = settings(max_examples=25, deadline=10000, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


SAMPLE_IMAGE = np.random.RandomState(0).randint(0, 255, (20, 24, 3), dtype=np.uint8)
VALID_FILES = [_encoded(SAMPLE_IMAGE, "PNG"), _encoded(SAMPLE_IMAGE, "JPEG"), _encoded(SAMPLE_IMAGE, "BMP"),
               _encoded(SAMPLE_IMAGE[:, :, 0], "PNG"), _encoded(SAMPLE_IMAGE, "TIFF"), _encoded(SAMPLE_IMAGE, "WEBP")]

file_bytes = st.one_of(
    st.binary(max_size=2048),  # random bytes
    st.tuples(st.sampled_from(VALID_FILES), st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),  # cut
    st.tuples(st.sampled_from(VALID_FILES), st.integers(0, 4000), st.binary(min_size=1, max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):]),  # a few bytes overwritten
    st.tuples(st.integers(1, 200000), st.integers(1, 200000)).map(lambda wh: _png_header_only(*wh)),
)


@FAST
@given(data=file_bytes)
def test_read_image_gives_an_rgb_array_or_image_read_error(tmp_path, data):
    path = tmp_path / "fuzzed.img"
    path.write_bytes(data)
    try:
        image = read_image(str(path))
    except ImageReadError as e:
        assert str(path) in str(e)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 0


label_modes = st.sampled_from(["L", "P", "I;16", "I", "F", "RGB", "RGBA", "1", "LA"])


@FAST
@given(data=file_bytes, mode=label_modes, size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       values=st.integers(0, 300), use_bytes=st.booleans())
def test_read_sem_seg_gives_class_ids_or_label_file_error(tmp_path, data, mode, size, values, use_bytes):
    path = tmp_path / ("label.tif" if mode in ("I", "F") else "label.png")  # PNG holds neither 32-bit mode
    if use_bytes:
        path.write_bytes(data)
    else:  # a well-formed file in any mode, with ids up to ``values``
        ids = np.random.RandomState(values).randint(0, values + 1, size=size)
        Image.fromarray(ids.astype(np.int32)).convert(mode).save(path) if mode != "I;16" else \
            Image.fromarray(ids.astype(np.uint16)).save(path)
    lut = np.full(256, -1, dtype=np.int32)
    lut[:4], lut[255] = np.arange(4), 255
    try:
        label = read_sem_seg(str(path), lut)
    except LabelFileError as e:
        assert str(path) in str(e)
        return
    assert label.dtype == np.int64 and label.ndim == 2 and set(np.unique(label)) <= {0, 1, 2, 3, 255}


arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64,
                           np.bool_, np.complex64, np.object_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))


@FAST
@given(array=arrays)
def test_array_to_rgb_gives_uint8_rgb_or_a_clear_error(array):
    try:
        rgb = array_to_rgb(array)
    except (ValueError, TypeError) as e:
        assert "image" in str(e) or "dtype" in str(e)
        return
    assert rgb.dtype == np.uint8 and rgb.shape == array.shape[:2] + (3,)


names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@FAST
@given(classes=st.lists(names, max_size=6), unseen=st.lists(names, max_size=3))
def test_register_zero_shot_split_accepts_or_refuses_clearly(tmp_path, unique_name, classes, unseen):
    folder = SemSegFolder(str(tmp_path), str(tmp_path))  # registration reads no file
    try:
        split = register_zero_shot_split(unique_name, classes, unseen_classes=unseen, train=folder, test=folder,
                                         overwrite=True)
    except (SplitDefinitionError, ValueError, TypeError) as e:
        assert str(e)
        return
    from detectron2.data import MetadataCatalog

    registered = MetadataCatalog.get(split.test).stuff_classes
    assert list(registered) == list(classes) and set(unseen) <= set(classes)


@pytest.fixture(scope="module")
def mapper_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_mapper")
    cfg = tiny_model_cfg(root, train_dataset="toy_world_train")
    return root, ZeroShotSemSegDatasetMapper(cfg, True), ZeroShotSemSegDatasetMapper(cfg, False)


@FAST
@given(image=file_bytes, label=file_bytes, good_label=st.booleans())
def test_the_mapper_maps_or_names_the_bad_file(mapper_setup, image, label, good_label):
    root, train, test = mapper_setup
    image_path, label_path = root / "image.jpg", root / "label.png"
    image_path.write_bytes(image)
    if good_label:
        Image.fromarray(np.zeros((20, 24), np.uint8)).save(label_path)
    else:
        label_path.write_bytes(label)
    record = {"file_name": str(image_path), "sem_seg_file_name": str(label_path), "dataset_name": "toy_world_train"}
    for mapper in (train, test):
        try:
            mapped = mapper(dict(record))
        except (ImageReadError, LabelFileError) as e:
            assert str(image_path) in str(e) or str(label_path) in str(e)
            continue
        assert mapped["image"].dtype == torch.uint8 and mapped["image"].shape[0] == 3


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor(*write_tiny_model_files(tmp_path_factory.mktemp("fuzz_model"), "fuzz_zs"))


images = hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.bool_]),
                    shape=st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 3, 4])))


@MODEL
@given(image=images, vocabulary=st.one_of(st.none(), st.lists(names, min_size=0, max_size=4)))
def test_predictor_segments_or_refuses_clearly(predictor, image, vocabulary):
    try:
        result = predictor(image, vocabulary=vocabulary)
    except (ValueError, TypeError) as e:  # VocabularyError is a ValueError
        event(f"refused: {type(e).__name__}")
        assert str(e)
        return
    event("segmented")
    assert result.label_map.shape == image.shape[:2]
    assert int(result.label_map.max()) < len(result.class_names)


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    """A file that declares 40000 x 40000 pixels: an error from its header, not 4.8 GB of RAM."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(40000, 40000))
    with pytest.raises(ImageReadError, match=r"declares 1,600,000,000 pixels, more than the [\d,]+ that PIL"):
        read_image(str(path))
    with pytest.raises(LabelFileError, match=r"declares 1,600,000,000 pixels"):
        read_sem_seg(str(path))
    assert issubclass(VocabularyError, ValueError)
