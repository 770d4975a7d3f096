#!/usr/bin/env python
"""A web page for a trained zsmask model: drop an image, type a vocabulary, see the segmentation.

    python demo/app.py                                   # the quick start's model (make quickstart)
    python demo/app.py --config-file configs/coco/split_matching.yaml --weights model_final.pth [--port 7860]

Then open http://127.0.0.1:7860. The page takes an upload (or a webcam picture, where the
browser allows), a vocabulary (a comma list, one name per line, or a preset from the
registered datasets), and shows the overlay with classes outside the training vocabulary
marked [unseen], a legend with each class's share of the image, and the label map to download
(PNG of class indices + class names). Unreadable or too large images and empty vocabularies
are reported on the page. One model serves every visitor, one image at a time (Gradio's
queue). ``--host 0.0.0.0`` serves other machines too (there is no login: mind who can reach it).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", metavar="FILE", help="the model's config (default: the quick start's)")
    p.add_argument("--weights", metavar="FILE", help="the trained weights (default: the config's MODEL.WEIGHTS, "
                                                      "or the quick start's model_final.pth)")
    p.add_argument("--vocabulary", help="the page's default vocabulary: comma list or a text file "
                                        "(default: the config's test dataset)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--max-megapixels", type=float, default=16.0, help="larger images are refused (default 16)")
    p.add_argument("--max-file-mb", type=float, default=25.0, help="larger uploads are refused (default 25)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p


def resolve_model(args, root: str = ROOT):
    """``(config, weights)`` to serve, or None with the reason printed (the quick start's model
    is looked for under ``root``)."""
    from zsmask.webapp import quickstart_model

    if args.config_file:
        if not os.path.isfile(args.config_file):
            print(f"error: config file not found: {args.config_file}", file=sys.stderr)
            return None
        return args.config_file, args.weights
    quickstart = quickstart_model(root)
    if quickstart is None:
        print("There is no model to serve yet: output/quickstart/model_final.pth does not exist.\n"
              "Train the quick start's model first (toy world, CPU, about 15 minutes):\n\n"
              "    make quickstart\n\n"
              "then run `python demo/app.py` again; or serve your own model:\n\n"
              "    python demo/app.py --config-file CONFIG.yaml --weights model_final.pth", file=sys.stderr)
        return None
    return quickstart["config"], args.weights or quickstart["weights"]


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.max_megapixels <= 0 or args.max_file_mb <= 0:
        print("error: --max-megapixels and --max-file-mb must be positive", file=sys.stderr)
        return 2
    model = resolve_model(args)
    if model is None:
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the web demo needs Gradio: pip install 'gradio>=6,<7' (scripts/install.sh installs it)",
              file=sys.stderr)
        return 2
    from zsmask.predictor import Predictor
    from zsmask.webapp import SegmentationService, app_theme, build_app

    config, weights = model
    print(f"loading {config}" + (f" with {weights}" if weights else ""), flush=True)
    try:
        predictor = Predictor(config, weights, device=args.device, vocabulary=args.vocabulary, opts=args.opts)
    except (FileNotFoundError, ValueError) as e:  # missing weights, a bad vocabulary or config value
        print(f"error: {e}", file=sys.stderr)
        return 1
    service = SegmentationService(predictor, max_megapixels=args.max_megapixels)
    app = build_app(service)
    print(f"serving {len(predictor.class_names)} classes on http://{args.host}:{args.port} (Ctrl+C stops)",
          flush=True)
    try:
        app.launch(server_name=args.host, server_port=args.port, max_file_size=f"{args.max_file_mb:g}mb",
                   theme=app_theme(), show_error=False, quiet=True, footer_links=[])
    except OSError as e:  # the port is taken
        print(f"error: cannot serve on {args.host}:{args.port} ({e}); pick another with --port", file=sys.stderr)
        return 1
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
