#!/usr/bin/env python
"""Segment your own images, videos or webcam with a trained zsmask model and any vocabulary.

    python demo/demo.py --config-file configs/coco/split_matching.yaml --input a.jpg photos/ "shots/*.png" \\
        --output out/ --vocabulary "cat,sofa,remote control" --opts MODEL.WEIGHTS model.pth
    python demo/demo.py --config-file ... --video-input clip.mp4 --output clip_seg.mp4 --opts MODEL.WEIGHTS model.pth
    python demo/demo.py --config-file ... --webcam [--output webcam.mp4] --opts MODEL.WEIGHTS model.pth

``--input`` takes files, folders (their images, not recursive) and glob patterns. Each image
is written to ``--output`` (a folder, or a file name when there is one image) as the overlay
and a legend of the classes found; classes outside the training vocabulary, which the model
never saw annotated, are marked "[unseen]" in red and outlined in white. ``--vocabulary`` is a
comma list or a text file with one name per line (default: the config's test dataset).
``--save-labels`` also writes each label map as a PNG of class indices with the class names
in ``classes.json``. Images that cannot be read are reported and skipped; the others are
processed, and the exit status is 1 when any failed.
"""
import argparse
import logging
import os
import sys
import time

import cv2
import numpy as np
import tqdm
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from zsmask.data import IMAGE_EXTENSIONS, ImageReadError, find_images, unique_output_paths  # noqa: E402
from zsmask.engine.cli import vocabulary_arg  # noqa: E402
from zsmask.predictor import Predictor  # noqa: E402
from zsmask.visualization import draw_prediction  # noqa: E402

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam")
    p.add_argument("--output", help="output folder (or file for one image / a video); a window when omitted "
                                    "with --webcam")
    p.add_argument("--vocabulary", type=vocabulary_arg, help="comma-separated class names or a text file with one per line")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--save-labels", action="store_true", help="also write label maps (class indices) and classes.json")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p


def output_paths(inputs, output: str):
    """One output PNG path per input: ``output`` itself when it names an image file and there is
    one input, else ``output/<name>.png`` (names made unique when two inputs share one)."""
    if output.lower().endswith(IMAGE_EXTENSIONS) and not os.path.isdir(output):
        if len(inputs) != 1:
            raise ValueError(f"--output {output} is a file name but there are {len(inputs)} inputs; give a folder")
        return [output]
    return unique_output_paths(inputs, output)


def run_images(predictor: Predictor, args) -> int:
    paths, problems = find_images(args.input)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not paths:
        print("error: no input images", file=sys.stderr)
        return 1
    try:
        outputs = output_paths(paths, args.output)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = []
    start = time.perf_counter()
    for path, out in tqdm.tqdm(list(zip(paths, outputs)), desc="demo", unit="image", file=sys.stderr):
        try:
            image = predictor.to_rgb_array(path)
        except ImageReadError as e:
            tqdm.tqdm.write(f"error: {e} (skipped)", file=sys.stderr)
            failed.append(path)
            continue
        prediction = predictor(image)
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        Image.fromarray(draw_prediction(image, prediction.label_map.numpy(), prediction.class_names,
                                        prediction.unseen)).save(out)
        if args.save_labels:
            prediction.save_label_map(os.path.splitext(out)[0] + "_labels.png")
        found = ", ".join(prediction.class_names[i] + (" [unseen]" if prediction.unseen[i] else "")
                          for i, _ in prediction.present_classes()[:5])
        tqdm.tqdm.write(f"{path} -> {out}: {found}", file=sys.stdout)
    done = len(paths) - len(failed)
    print(f"{done} of {len(paths)} images segmented in {time.perf_counter() - start:.1f}s "
          f"with {len(predictor.class_names)} classes -> {args.output}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} image(s) could not be read: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or problems else 0


def run_frames(predictor: Predictor, capture, args, name: str) -> int:
    """Segment a video or webcam stream frame by frame, to a video file or a window."""
    writer, size, frames = None, None, 0
    path = video_output_path(args) if args.output else None
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if args.video_input else None
    fps = capture.get(cv2.CAP_PROP_FPS) or 15.0
    progress = tqdm.tqdm(total=total if total and total > 0 else None, desc=name, unit="frame", file=sys.stderr)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            prediction = predictor(rgb)
            drawn = draw_prediction(rgb, prediction.label_map.numpy(), prediction.class_names, prediction.unseen,
                                    scale=1.0)[:, :, ::-1]
            if path:
                if writer is None:
                    codec = VIDEO_CODECS.get(os.path.splitext(path)[1].lower(), "mp4v")
                    size = (drawn.shape[1], drawn.shape[0])  # the first frame's; later ones are fitted to it
                    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, size)
                    if not writer.isOpened():
                        print(f"error: cannot write video {path} (codec {codec})", file=sys.stderr)
                        return 1
                writer.write(fit_canvas(drawn, size))
            else:
                cv2.imshow("zsmask", np.ascontiguousarray(drawn))
                if cv2.waitKey(1) == 27:  # Esc
                    break
            frames += 1
            progress.update(1)
    finally:
        progress.close()
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        print(f"error: no frame could be read from {name}", file=sys.stderr)
        return 1
    print(f"{frames} frames segmented" + (f" -> {path}" if path else ""), file=sys.stderr)
    return 0


def fit_canvas(drawn: np.ndarray, size) -> np.ndarray:
    """``drawn`` cropped or padded with white to ``size`` (W, H): a longer legend on a later
    frame must not change the video's frame size."""
    width, height = size
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    h, w = min(height, drawn.shape[0]), min(width, drawn.shape[1])
    canvas[:h, :w] = drawn[:h, :w]
    return canvas


def video_output_path(args) -> str:
    """``--output`` when it names a video file, else ``<output>/<input name>.mp4``."""
    if os.path.splitext(args.output)[1].lower() in VIDEO_CODECS:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        return args.output
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.video_input))[0] if args.video_input else "webcam"
    return os.path.join(args.output, stem + ".mp4")


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.input is not None and args.output is None:
        print("error: --output is required with --input (a folder, or a file name for one image)", file=sys.stderr)
        return 2
    if args.video_input and not os.path.isfile(args.video_input):
        print(f"error: video not found: {args.video_input}", file=sys.stderr)
        return 1
    predictor = Predictor(args.config_file, device=args.device, vocabulary=args.vocabulary, opts=args.opts)
    if args.input is not None:
        return run_images(predictor, args)
    capture = cv2.VideoCapture(args.video_input if args.video_input else 0)
    name = args.video_input or "webcam"
    if not capture.isOpened():
        print(f"error: cannot open {'video ' + args.video_input if args.video_input else 'the webcam (device 0)'}",
              file=sys.stderr)
        return 1
    return run_frames(predictor, capture, args, name)


if __name__ == "__main__":
    sys.exit(main())
