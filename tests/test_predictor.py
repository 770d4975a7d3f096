"""zsmask.Predictor on a tiny model bundle on disk: inputs, batches, vocabularies, caching, errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from zsmask import Prediction, Predictor
from zsmask.data import ImageReadError
from zsmask.modeling.meta_arch import VocabularyError
from zsmask.predictor import parse_vocabulary

from conftest import write_tiny_model_files


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor")
    config, weights = write_tiny_model_files(root, "predictor_zs")
    return root, config, weights


@pytest.fixture(scope="module")
def predictor(bundle):
    _, config, weights = bundle
    return Predictor(config, weights, batch_size=2)


def _image(seed: int, height: int = 40, width: int = 56) -> np.ndarray:
    rng = np.random.RandomState(seed)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = rng.randint(0, 255, 3)
    image[:, width // 2:] = rng.randint(0, 255, 3)
    return np.clip(image.astype(int) + rng.randint(-20, 20, image.shape), 0, 255).astype(np.uint8)


def _direct(predictor, image: np.ndarray, vocabulary) -> torch.Tensor:
    """The model called by hand as the evaluator calls it: resized to the test size, scores at
    the original size."""
    height, width = image.shape[:2]
    scale = 64 / min(height, width)
    resized = np.asarray(Image.fromarray(image).resize((int(width * scale + 0.5), int(height * scale + 0.5)),
                                                       Image.BILINEAR))
    tensor = torch.as_tensor(resized.transpose(2, 0, 1).copy())
    with torch.no_grad():
        return predictor.model([{"image": tensor, "height": height, "width": width,
                                 "vocabulary": list(vocabulary)}])[0]["sem_seg"]


def test_single_image_equals_the_model_and_every_input_type_agrees(predictor, tmp_path):
    assert predictor.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert predictor.class_names == ("cat", "dog", "grass", "sheep")  # the test split's vocabulary
    image = _image(0)
    result = predictor(image)
    assert isinstance(result, Prediction)
    assert tuple(result.scores.shape) == (4, 40, 56) and tuple(result.label_map.shape) == (40, 56)
    assert result.label_map.dtype == torch.int64
    assert torch.equal(result.label_map, result.scores.argmax(dim=0))
    assert result.unseen == (False, False, False, True)
    torch.testing.assert_close(result.scores, _direct(predictor, image, predictor.class_names))
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    for same in (str(path), path, Image.fromarray(image), torch.as_tensor(image).permute(2, 0, 1)):
        torch.testing.assert_close(predictor(same).scores, result.scores)
    predictor.input_format = "BGR"  # OpenCV's channel order
    try:
        torch.testing.assert_close(predictor(np.ascontiguousarray(image[:, :, ::-1])).scores, result.scores)
    finally:
        predictor.input_format = "RGB"
    shares = result.present_classes()
    assert abs(sum(f for _, f in shares) - 1.0) < 1e-6
    assert [i for i, _ in shares] == sorted({int(i) for i in result.label_map.unique()},
                                           key=lambda i: -int((result.label_map == i).sum()))


def test_batches_match_single_images(predictor):
    # three of one size (batch size 2: two forward passes) and two others, each alone
    images = [_image(1), _image(2, 64, 48), _image(3), _image(4, 33, 70), _image(5)]
    forwards = []
    handle = predictor.model.register_forward_hook(lambda module, args, out: forwards.append(len(args[0])))
    try:
        batch = predictor(images)
    finally:
        handle.remove()
    assert sorted(forwards) == [1, 1, 1, 2]
    assert isinstance(batch, list) and len(batch) == 5
    for image, result in zip(images, batch):
        single = predictor(image)
        assert tuple(result.scores.shape) == (4,) + image.shape[:2]
        torch.testing.assert_close(result.scores, single.scores, atol=1e-4, rtol=1e-4)
        agreement = (result.label_map == single.label_map).float().mean()
        assert agreement > 0.99
    assert predictor([]) == []


def test_custom_vocabulary_per_call_and_per_predictor(bundle, predictor):
    image = _image(14)
    custom = predictor(image, vocabulary="cat, zebra,sheep")
    assert custom.class_names == ("cat", "zebra", "sheep")
    assert custom.unseen == (False, True, True)  # only 'cat' was annotated in training
    assert tuple(custom.scores.shape) == (3, 40, 56)
    torch.testing.assert_close(custom.scores, _direct(predictor, image, ("cat", "zebra", "sheep")))
    assert predictor.class_names == ("cat", "dog", "grass", "sheep")  # a per-call vocabulary does not stick
    _, config, weights = bundle
    own = Predictor(config, weights, vocabulary=["cat", "zebra", "sheep"])
    torch.testing.assert_close(own(image).scores, custom.scores)
    assert own.set_vocabulary(None) == ("cat", "dog", "grass", "sheep")


def test_text_classifier_is_computed_once_per_vocabulary(bundle):
    _, config, weights = bundle
    predictor = Predictor(config, weights)
    clip = predictor.model.clip
    encoded = []
    original = clip.encode_prompts

    def counting(prompts):
        encoded.append(tuple(prompts))
        return original(prompts)

    clip.encode_prompts = counting
    try:
        predictor.set_vocabulary(["tree", "car"])
        assert len(encoded) == 1
        predictor([_image(5), _image(6)])
        predictor(_image(7))
        assert len(encoded) == 1  # computed at set_vocabulary, reused for every image
        predictor(_image(7), vocabulary=["boat"])
        predictor(_image(8), vocabulary=["boat"])
        assert len(encoded) == 2  # a new vocabulary: once
        predictor(_image(9))
        assert len(encoded) == 2  # back to the first one: still cached
    finally:
        del clip.encode_prompts


def test_grey_rgba_and_high_depth_inputs_are_converted(predictor):
    grey = _image(10)[:, :, 0]
    expected = predictor(np.repeat(grey[:, :, None], 3, axis=2)).scores
    torch.testing.assert_close(predictor(grey).scores, expected)
    rgba = np.concatenate([np.repeat(grey[:, :, None], 3, axis=2), np.full(grey.shape + (1,), 7, np.uint8)], axis=2)
    torch.testing.assert_close(predictor(rgba).scores, expected)
    torch.testing.assert_close(predictor(grey.astype(np.float32) / 255.0).scores, expected)
    torch.testing.assert_close(predictor(grey.astype(np.uint16) * 257).scores, expected)


def test_vocabulary_files_and_bad_input(bundle, predictor, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("# my classes\ncat\n\ntv, monitor   # synonyms\nremote control\n")
    assert parse_vocabulary(str(names)) == ("cat", "tv, monitor", "remote control")
    with pytest.raises(VocabularyError, match="empty name"):
        parse_vocabulary("cat,,dog")
    with pytest.raises(VocabularyError, match="duplicate"):
        parse_vocabulary(["cat", "cat "])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(VocabularyError, match="no class names"):
        parse_vocabulary(str(tmp_path / "empty.txt"))
    with pytest.raises(TypeError, match="cannot predict on a dict"):
        predictor({"image": 1})
    with pytest.raises(ValueError, match="expected an image array"):
        predictor(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="image not found"):
        predictor(str(tmp_path / "missing.jpg"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="cannot read image"):
        predictor(str(tmp_path / "broken.png"))
    _, config, weights = bundle
    with pytest.raises(FileNotFoundError, match="model weights not found: .*nope.pth"):
        Predictor(config, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="config file not found"):
        Predictor(str(tmp_path / "nope.yaml"))
