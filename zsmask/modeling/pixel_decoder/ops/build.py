"""Build and load zsmask's own MSDeformAttn CUDA kernel (``src/``) as a JIT torch extension.

The build happens on first use (or at install time through ``python -m
zsmask.modeling.pixel_decoder.ops.build``) into ``<zsmask cache>/extensions/<key>``, where the
key hashes the sources, the torch version, torch's CUDA version, nvcc's version and the target
architectures, so a changed toolchain never loads a stale binary. Nothing here raises: callers
get ``(module, reason)`` with ``module=None`` when the kernel cannot be had, and the PyTorch path
is used instead.
"""
import argparse
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

from zsmask.utils import cache_dir

__all__ = ["SOURCES", "DEFAULT_ARCH_LIST", "find_cuda_home", "build_key", "load_kernel", "main"]

SRC_DIR = Path(__file__).resolve().parent / "src"
SOURCES = (SRC_DIR / "ms_deform_attn.cpp", SRC_DIR / "ms_deform_attn_cuda.cu")
# Architectures compiled when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible (A100, H100):
# a short compile that runs on the common data-centre GPUs.
DEFAULT_ARCH_LIST = "8.0;9.0"


def find_cuda_home() -> Tuple[Optional[str], str]:
    """The CUDA toolkit root holding ``bin/nvcc``, and how it was found (or why not).

    Order: ``$CUDA_HOME``, ``$CUDA_PATH``, ``/usr/local/cuda``, then ``nvcc`` on PATH with its
    symlinks and wrapper scripts resolved by asking nvcc itself where it lives.
    """
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(variable)
        if root:
            if (Path(root) / "bin" / "nvcc").is_file():
                return root, f"${variable}={root}"
            return None, f"${variable}={root} has no bin/nvcc"
    if (Path("/usr/local/cuda") / "bin" / "nvcc").is_file():
        return "/usr/local/cuda", "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None, "nvcc was not found (no $CUDA_HOME, no /usr/local/cuda, no nvcc on PATH)"
    candidate = Path(nvcc).resolve().parent.parent
    if (candidate / "include" / "cuda_runtime.h").is_file():
        return str(candidate), f"nvcc on PATH ({nvcc})"
    return None, f"nvcc on PATH ({nvcc}) is not inside a CUDA toolkit; set CUDA_HOME to the toolkit root"


def _nvcc_version(cuda_home: str) -> str:
    try:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    release = [line for line in out.splitlines() if "release" in line]
    return release[-1].strip() if release else out.strip()


def _arch_list() -> str:
    """``$TORCH_CUDA_ARCH_LIST``; else the visible GPUs' architectures; else DEFAULT_ARCH_LIST."""
    configured = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if configured:
        return configured
    if torch.cuda.is_available():
        capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(capabilities))
    return DEFAULT_ARCH_LIST


def build_key(cuda_home: str, arch_list: str) -> str:
    """Hash of the sources and the toolchain that the binary depends on."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    for part in (torch.__version__, str(torch.version.cuda), _nvcc_version(cuda_home), arch_list, sys.version):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def load_kernel(verbose: bool = False):
    """Compile (first time) and import the kernel; ``(module, reason)`` or ``(None, reason)``.

    The result is cached per process; the compiled binary is cached on disk.
    """
    if torch.version.cuda is None:
        return None, f"this torch ({torch.__version__}) was built without CUDA"
    cuda_home, how = find_cuda_home()
    if cuda_home is None:
        return None, f"no CUDA toolkit to compile the kernel: {how}"
    arch_list = _arch_list()
    key = build_key(cuda_home, arch_list)
    build_dir = Path(cache_dir()) / "extensions" / f"ms_deform_attn-{key}"
    build_dir.mkdir(parents=True, exist_ok=True)

    from torch.utils import cpp_extension

    # cpp_extension resolves its toolkit once at import time and can pick a wrong root (for
    # example /usr/local when nvcc on PATH is a wrapper script); use the one found above.
    saved = {"CUDA_HOME": os.environ.get("CUDA_HOME"), "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST")}
    saved_module_home = cpp_extension.CUDA_HOME
    os.environ["CUDA_HOME"] = cuda_home
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    cpp_extension.CUDA_HOME = cuda_home
    start = time.time()
    try:
        module = cpp_extension.load(
            name=f"zsmask_ms_deform_attn_{key}",
            sources=[str(source) for source in SOURCES],
            build_directory=str(build_dir),
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3"],
            verbose=verbose,
        )
    except Exception as exc:  # a failed compile must never break the caller
        detail = str(exc).strip().splitlines()
        return None, (f"building the kernel in {build_dir} failed ({type(exc).__name__}: "
                      f"{detail[-1] if detail else exc}); rerun `python -m zsmask.modeling.pixel_decoder.ops.build "
                      f"--verbose` to see the compiler output")
    finally:
        cpp_extension.CUDA_HOME = saved_module_home
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
    elapsed = time.time() - start
    return module, (f"kernel loaded from {build_dir} (CUDA toolkit: {how}, archs {arch_list}, "
                    f"{elapsed:.1f}s)")


def main(argv=None) -> int:
    """Pre-build the kernel and print what happened; exit status 0 when it loaded, else 1."""
    parser = argparse.ArgumentParser(description="Pre-build zsmask's MSDeformAttn CUDA kernel.")
    parser.add_argument("--verbose", action="store_true", help="show the compiler output")
    args = parser.parse_args(argv)
    module, reason = load_kernel(verbose=args.verbose)
    if module is None:
        print(f"[zsmask ops] MSDeformAttn CUDA kernel NOT available: {reason}")
        print("[zsmask ops] MSDeformAttn will use its PyTorch path (correct, slower on GPU).")
        return 1
    missing = [name for name in ("forward", "backward") if not hasattr(module, name)]
    if missing:
        print(f"[zsmask ops] the built module lacks {missing}: {reason}")
        return 1
    print(f"[zsmask ops] MSDeformAttn CUDA kernel ready: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
