"""The web demo of ``demo/app.py``: a Gradio page on one :class:`~zsmask.predictor.Predictor`.

A visitor uploads an image (or takes one with the webcam, where the browser allows), types a
vocabulary or picks a preset, and gets the overlay with unseen classes marked (as
``demo/demo.py`` marks them), a legend with each class's share of the image, and the label map
to download (a PNG of class indices with the names in a text chunk, plus ``classes.json``).

:class:`SegmentationService` is everything but the page (inputs checked, presets, the unseen
list, the files), so it runs without Gradio; :func:`build_app` lays the page out on it. One
service, hence one model, serves every session: Gradio's queue runs requests off the request
thread, one segmentation at a time.
"""
import html
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from .data.image_io import ImageReadError
from .modeling.meta_arch.vocabulary import VocabularyError, vocabulary_of_dataset
from .predictor import Prediction, Predictor, parse_vocabulary
from .visualization import draw_overlay, vocabulary_colors

__all__ = ["DemoInputError", "LegendRow", "Segmentation", "SegmentationService", "build_app", "vocabulary_text"]

logger = logging.getLogger(__name__)


class DemoInputError(ValueError):
    """An input the page reports to its visitor; the message is shown as it is."""


@dataclass(frozen=True)
class LegendRow:
    name: str
    colour: Tuple[int, int, int]
    share: float  # fraction of the image's pixels
    unseen: bool


@dataclass(frozen=True)
class Segmentation:
    """One request's result.

    Attributes:
        overlay: ``(H', W', 3)`` uint8 RGB, the label map drawn over the image with unseen classes
            marked (:func:`~zsmask.visualization.draw_overlay`).
        prediction: the :class:`~zsmask.predictor.Prediction` (label map at the input's size).
        legend: the classes present, largest first.
        files: the label-map PNG and ``classes.json`` written for download.
        seconds: time spent in the model.
        number: this service's count of segmentations so far, this one included.
    """

    overlay: np.ndarray
    prediction: Prediction
    legend: Tuple[LegendRow, ...]
    files: Tuple[str, str]
    seconds: float
    number: int


def vocabulary_text(names: Sequence[str]) -> str:
    """``names`` as the vocabulary box shows them: a comma list, or one name per line (each line
    ended) when a name holds a comma itself (synonyms such as "building, edifice")."""
    return "".join(n + "\n" for n in names) if any("," in n for n in names) else ", ".join(names)


def parse_vocabulary_text(text: str) -> Tuple[str, ...]:
    """The vocabulary box's text as class names: one name per line when it has several lines or
    ends with a line break (a line may list synonyms separated by commas; a line starting with
    ``#`` is a comment), else a comma list. Raises DemoInputError."""
    raw = (text or "").rstrip(" \t")
    text = raw.strip()
    if not text:
        raise DemoInputError("the vocabulary is empty: type class names separated by commas (e.g. 'cat, sofa, "
                             "remote control') or pick a preset")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    try:
        if len(lines) > 1 or (lines and raw.endswith("\n")):
            return parse_vocabulary(lines)
        names = [n.strip() for n in lines[0].split(",") if n.strip()] if lines else []
        if not names:
            raise VocabularyError("the vocabulary holds no class name")
        return parse_vocabulary(names)
    except VocabularyError as e:
        raise DemoInputError(str(e)) from None


class SegmentationService:
    """The demo's logic on one predictor (see the module docstring)."""

    def __init__(self, predictor: Predictor, *, max_megapixels: float = 16.0, work_dir: Optional[str] = None,
                 keep_results: int = 64):
        """
        Args:
            predictor: the model; its vocabulary at construction is the page's default.
            max_megapixels: larger images are refused (before they are decoded).
            work_dir: where the download files go (default: a temporary folder removed by
                :meth:`close`); only the last ``keep_results`` requests' files are kept.
        """
        if max_megapixels <= 0:
            raise ValueError(f"max_megapixels must be positive, got {max_megapixels}")
        self.predictor = predictor
        self.max_pixels = int(max_megapixels * 1e6)
        self._own_work_dir = work_dir is None
        self.work_dir = tempfile.mkdtemp(prefix="zsmask_app_") if work_dir is None else work_dir
        os.makedirs(self.work_dir, exist_ok=True)
        self.keep_results = keep_results
        self._results: List[str] = []
        self._count = 0
        self._lock = threading.Lock()
        self.presets = self._vocabulary_presets()

    # ------------------------------------------------------------------ vocabularies
    @property
    def default_vocabulary(self) -> Tuple[str, ...]:
        return self.predictor.class_names

    def _vocabulary_presets(self) -> "OrderedDict[str, Tuple[str, ...]]":
        """Label -> names: the model's own vocabulary, its training vocabulary, then every
        other registered dataset's (one entry per distinct vocabulary, ``*_train`` sets skipped)."""
        presets: "OrderedDict[str, Tuple[str, ...]]" = OrderedDict()
        presets[f"the model's vocabulary ({len(self.default_vocabulary)} classes)"] = self.default_vocabulary
        train = self.predictor.cfg.DATASETS.TRAIN
        if train:
            names = vocabulary_of_dataset(train[0])
            presets[f"training vocabulary, {train[0]} ({len(names)} seen classes)"] = names
        known = set(presets.values())
        for dataset in DatasetCatalog.list():
            if dataset.endswith("_train"):
                continue
            names = tuple(MetadataCatalog.get(dataset).get("stuff_classes", None) or ())
            if names and names not in known:
                known.add(names)
                presets[f"{dataset} ({len(names)} classes)"] = names
        return presets

    def preset_text(self, label: str) -> str:
        """The vocabulary box's text for a preset label."""
        if label not in self.presets:
            raise DemoInputError(f"unknown preset {label!r}")
        return vocabulary_text(self.presets[label])

    def unseen_summary(self, text: str) -> str:
        """Markdown: which classes of the vocabulary in ``text`` the model never saw annotated."""
        try:
            names = parse_vocabulary_text(text)
        except DemoInputError as e:
            return f"**{html.escape(str(e))}**"
        if self.predictor.seen_names is None:
            return f"{len(names)} classes. The config names no training set, so none is marked unseen."
        unseen = [n for n, u in zip(names, self.predictor.unseen_flags(names)) if u]
        head = (f"{len(names)} classes; **{len(unseen)} unseen** (outside the training vocabulary of "
                f"{len(self.predictor.seen_names)} classes, never annotated in training; marked [unseen] in red)")
        return head + (": " + ", ".join(html.escape(n) for n in unseen) if unseen else ".")

    # ------------------------------------------------------------------ segmentation
    def check_image_size(self, path: str) -> None:
        """Refuse images above the pixel limit from their header, before decoding them."""
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Image.DecompressionBombError as e:
            raise DemoInputError(f"the image is too large to read safely ({e})") from None
        except Exception:  # noqa: BLE001 -- not an image: read_image reports it with its cause
            return
        if width * height > self.max_pixels:
            raise DemoInputError(
                f"the image is {width} x {height} = {width * height / 1e6:.3g} megapixels; this demo accepts at "
                f"most {self.max_pixels / 1e6:g} (demo/app.py --max-megapixels); resize it and upload again")

    def segment(self, image_path: Optional[str], text: str, name: Optional[str] = None) -> Segmentation:
        """Segment the image file at ``image_path`` with the vocabulary in ``text``.

        Raises:
            DemoInputError: no image, an unreadable or too large image, or a bad vocabulary.
        """
        if not image_path:
            raise DemoInputError("no image: upload one (or take one with the webcam) first")
        names = parse_vocabulary_text(text)
        self.check_image_size(image_path)
        try:
            image = self.predictor.to_rgb_array(image_path)
        except ImageReadError as e:
            shown = name or os.path.basename(image_path)
            reason = str(e).split(": ", 1)[-1] if ": " in str(e) else str(e)
            raise DemoInputError(f"cannot read the uploaded file {shown!r} as an image ({reason}); upload a JPEG, "
                                 "PNG, BMP, TIFF or WebP image") from None
        if min(image.shape[:2]) < 2:
            raise DemoInputError(f"the image is {image.shape[1]} x {image.shape[0]} pixels; give one at least 2 "
                                 "pixels wide and high")
        start = time.perf_counter()
        prediction = self.predictor(image, vocabulary=names)
        seconds = time.perf_counter() - start
        label = prediction.label_map.numpy()
        overlay = draw_overlay(image, label, prediction.class_names, prediction.unseen)
        colours = vocabulary_colors(prediction.class_names)
        legend = tuple(LegendRow(prediction.class_names[i], colours[i], share, prediction.unseen[i])
                       for i, share in prediction.present_classes())
        with self._lock:
            self._count += 1
            number = self._count
        return Segmentation(overlay, prediction, legend, self._write_files(prediction, name or image_path), seconds,
                            number)

    def _write_files(self, prediction: Prediction, source: str) -> Tuple[str, str]:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(source))[0])[:64] or "image"
        folder = tempfile.mkdtemp(prefix="result_", dir=self.work_dir)
        paths = (os.path.join(folder, f"{stem}_labels.png"), os.path.join(folder, f"{stem}_classes.json"))
        try:
            prediction.save_label_map(*paths)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self._results.append(folder)
            stale, self._results = self._results[:-self.keep_results], self._results[-self.keep_results:]
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
        return paths

    def close(self) -> None:
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def legend_html(segmentation: Segmentation) -> str:
    """The legend as an HTML table: swatch, class (unseen ones marked in red), share of the image."""
    rows = []
    for row in segmentation.legend:
        r, g, b = row.colour
        mark = ' <b style="color:#d00000">[unseen]</b>' if row.unseen else ""
        rows.append(f'<tr class="zsmask-legend-row"><td><span style="display:inline-block;width:14px;height:14px;'
                    f'background:rgb({r},{g},{b});border:1px solid #000"></span></td>'
                    f'<td>{html.escape(row.name)}{mark}</td><td style="text-align:right">{100 * row.share:.1f}%</td></tr>')
    prediction = segmentation.prediction
    height, width = prediction.label_map.shape
    caption = (f"{len(segmentation.legend)} of {len(prediction.class_names)} classes found in {width} x {height} "
               f"pixels, {segmentation.seconds:.2f} s in the model")
    return (f'<div id="zsmask-summary" data-result="{segmentation.number}">{html.escape(caption)}</div><table><thead><tr><th></th><th>class</th>'
            f'<th>area</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def build_app(service: SegmentationService, title: str = "zsmask: zero-shot semantic segmentation"):
    """The Gradio page on ``service`` (a ``gradio.Blocks``, queued, one segmentation at a time)."""
    import gradio as gr

    def page_error(message: str):
        """A message shown on the page until closed (Gradio renders it as HTML: escaped here)."""
        return gr.Error(html.escape(message), duration=None, print_exception=False)

    def readable_upload(component):
        """``component`` (a gr.Image) with its own decoding of an upload turned into a message on
        the page when it fails, instead of Gradio's bare "Error". (Wrapped on the instance: a
        subclass of a Gradio component makes Gradio write a .pyi stub beside this module.)"""
        gradio_preprocess = component.preprocess

        def preprocess(payload):
            try:
                return gradio_preprocess(payload)
            except Exception as e:  # noqa: BLE001 -- Gradio could not open the file as an image
                shown = getattr(payload, "orig_name", None) or "the upload"
                raise page_error(f"cannot read the uploaded file {shown!r} as an image ({type(e).__name__}: {e}); "
                                 "upload a JPEG, PNG, BMP, TIFF or WebP image") from None

        component.preprocess = preprocess
        return component

    def segment(image_path, text):
        try:
            result = service.segment(image_path, text)
        except DemoInputError as e:
            raise page_error(str(e)) from None
        except Exception as e:  # noqa: BLE001 -- a message on the page; the server keeps serving
            logger.exception("segmentation failed")
            raise page_error(f"segmentation failed ({type(e).__name__}: {e}); the server log has the details") from None
        return result.overlay, legend_html(result), list(result.files)

    default_text = vocabulary_text(service.default_vocabulary)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"## {html.escape(title)}\nUpload an image, give the classes to look for, and press "
                    "**Segment**. Classes the model never saw annotated in training are marked **[unseen]**.")
        with gr.Row():
            with gr.Column():
                image = readable_upload(gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath",
                                                 image_mode=None, label="Image", elem_id="zsmask-image"))
                preset = gr.Dropdown(choices=list(service.presets), value=next(iter(service.presets)),
                                     label="Preset vocabulary", elem_id="zsmask-preset")
                vocabulary = gr.Textbox(value=default_text, lines=3, max_lines=12, elem_id="zsmask-vocabulary",
                                        label="Vocabulary: class names separated by commas, or one per line")
                unseen = gr.Markdown(service.unseen_summary(default_text), elem_id="zsmask-unseen")
                run = gr.Button("Segment", variant="primary", elem_id="zsmask-run")
            with gr.Column():
                result = gr.Image(type="numpy", format="png", label="Segmentation (unseen classes outlined in white)",
                                  interactive=False, elem_id="zsmask-result")
                legend = gr.HTML(elem_id="zsmask-legend")
                files = gr.File(file_count="multiple", interactive=False, elem_id="zsmask-files",
                                label="Label map: PNG of class indices, and the class names (JSON)")
        def preset_text(label):
            try:
                return service.preset_text(label)
            except DemoInputError as e:
                raise page_error(str(e)) from None

        preset.change(preset_text, preset, vocabulary, queue=False)
        vocabulary.change(service.unseen_summary, vocabulary, unseen, queue=False)
        run.click(segment, [image, vocabulary], [result, legend, files], concurrency_limit=1)
    app.queue(default_concurrency_limit=1, max_size=64)
    return app


def app_theme():
    """Gradio's default theme with the system's fonts (the default fetches web fonts, which a
    machine without internet access waits for)."""
    import gradio as gr

    fonts = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=fonts, font_mono=["ui-monospace", "monospace"])


def quickstart_model(root: str, output_dir: str = "output/quickstart") -> Optional[Dict[str, str]]:
    """``{"config": ..., "weights": ...}`` of the quick start's model under ``root``, or None
    when ``make quickstart`` has not been run (its config is ``config.yaml`` beside the
    weights; runs older than that file used ``configs/toy/alignzeg.yaml``)."""
    folder = os.path.join(root, output_dir)
    weights = os.path.join(folder, "model_final.pth")
    if not os.path.isfile(weights):
        return None
    config = os.path.join(folder, "config.yaml")
    if not os.path.isfile(config):
        config = os.path.join(root, "configs", "toy", "alignzeg.yaml")
    return {"config": config, "weights": weights}
