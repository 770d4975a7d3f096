"""Load single modules of the benchmark peer ``maskformer2`` (Mask2Former's reference code).

Importing the ``mask2former`` package runs its ``__init__``, which imports the compiled
``MultiScaleDeformableAttention`` op and fails on CPU-only machines. The benchmarks need only
plain-PyTorch functions and classes, so they load the one file they compare against by path.
Install the peer with ``.venv/bin/python scripts/install_benchmark_peers.py``.
"""
import importlib.util
import sys
import types
from pathlib import Path

INSTALL_HINT = "install the peer first: .venv/bin/python scripts/install_benchmark_peers.py"


def peer_root() -> Path:
    spec = importlib.util.find_spec("mask2former")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"maskformer2 is not installed; {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def load_peer_module(relative_path: str, name: str):
    """Load ``mask2former/<relative_path>`` as module ``name`` without the package ``__init__``.

    When the peer's compiled op is missing, an empty module named
    ``MultiScaleDeformableAttention`` is registered so that the file's top-level import
    succeeds; the pure-PyTorch functions the benchmarks call never use it.
    """
    if "MultiScaleDeformableAttention" not in sys.modules and importlib.util.find_spec("MultiScaleDeformableAttention") is None:
        sys.modules.setdefault("MultiScaleDeformableAttention", types.ModuleType("MultiScaleDeformableAttention"))
    path = peer_root() / relative_path
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
