#!/usr/bin/env python
"""Install the benchmark peer ``maskformer2==0.1`` (Mask2Former's reference code) into this env.

Only the scripts in ``benchmarks/`` use it; zsmask itself never imports it. Like the detectron2
fallback, the sdist is read from the PyPI simple index with a pinned sha256, because
``pip download`` rejects its direct-URL dependency on detectron2. The dependency line is
removed and the tree installed with ``--no-deps --no-build-isolation``; its CUDA ops are only
compiled by its setup.py when a GPU is visible, and the benchmarks need only its Python code.

    .venv/bin/python scripts/install_benchmark_peers.py
"""
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from install_detectron2_fallback import _fail, download_sdist  # noqa: E402

PACKAGE = "maskformer2"
SDIST = "maskformer2-0.1.tar.gz"
SDIST_SHA256 = "d934e3378e86cc326129eeda18ca1097cf32d9c248dc8e957a14899d9241602a"


def main() -> None:
    try:
        import mask2former  # noqa: F401
    except ModuleNotFoundError:
        pass
    except Exception:  # imports but its compiled op is missing: the package is there
        print("[benchmark peers] maskformer2 already installed")
        return
    else:
        print("[benchmark peers] maskformer2 already installed")
        return
    workdir = Path(tempfile.mkdtemp(prefix="zsmask-peers-"))
    try:
        sdist = download_sdist(workdir, PACKAGE, SDIST, SDIST_SHA256)
        with tarfile.open(sdist) as tar:
            tar.extractall(workdir, filter="data")
        tree = workdir / "maskformer2-0.1"
        setup_py = tree / "setup.py"
        text = setup_py.read_text()
        text = re.sub(r"['\"]detectron2 @ [^'\"]+['\"],?", "", text)
        setup_py.write_text(text)
        shutil.rmtree(tree / "maskformer2.egg-info", ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", str(tree)]
        if subprocess.call(cmd) != 0:
            _fail("pip install", " ".join(cmd))
        print("[benchmark peers] installed maskformer2 0.1")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
