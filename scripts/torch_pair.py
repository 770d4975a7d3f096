#!/usr/bin/env python
"""Decide which torch + torchvision pair ``scripts/install.sh`` uses: keep the one present or
install a pinned pair. Standard library only (plus pip's vendored ``packaging``), because it runs
in the target environment before anything is installed there.

    python scripts/torch_pair.py --mode auto|keep|default --torch 2.14.1 --torchvision 0.29.1

Prints one line on stdout, ``keep <torch> <torchvision>`` or ``install <torch> <torchvision>``
(the versions as pip knows them, i.e. the installed distributions' metadata, which can differ
from ``torch.__version__``: a PyPI CUDA wheel says 2.14.1 where torch says 2.14.1+cu130), and
what it decided and why on stderr. Refusals exit 3 with a message that names the versions
found and the fix; nothing is installed or removed here.

Modes (``ZSMASK_TORCH`` in install.sh):
  auto     keep a working pair inside SUPPORTED_TORCH; install the pinned pair when there is no
           torch at all; refuse anything else (outside the range, mismatched, broken): never a
           silent reinstall of a user's (CUDA) torch.
  keep     keep the pair present whatever its version (outside the range: a warning); refuse
           only when it does not work.
  default  install the pinned pair (``--torch`` / ``--torchvision``) unless exactly it is present.

A pair "works" when both import and ``torchvision.ops.nms`` runs (a torchvision built for
another torch fails there: ``operator torchvision::nms does not exist``), and torch satisfies
torchvision's own declared requirement on torch (its ``Requires-Dist``).
"""
import argparse
import importlib.metadata
import sys
from dataclasses import dataclass
from typing import Optional

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
except ImportError:  # a bare venv: pip's vendored copy of the same library
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.version import Version

# The torch releases zsmask runs on. Lower bound: the oldest torch with every API zsmask calls
# (torch.onnx.export(dynamo=...) came in 2.5). Upper bound: the newest release tested. The
# pinned default pair (install.sh) is inside it and is what CI runs.
SUPPORTED_TORCH = SpecifierSet(">=2.5,<2.16")
TESTED_TORCH = ("2.14.1 (default, CI)", "2.15.0")
MODES = ("auto", "keep", "default")
REFUSED = 3


@dataclass
class Found:
    """What the environment holds: versions (None when absent) and the problem, if any."""

    torch: Optional[str] = None
    torchvision: Optional[str] = None
    problem: Optional[str] = None

    def pip_versions(self):
        """``(torch, torchvision)`` as pip sees them: the distributions' metadata versions."""
        return _dist_version("torch") or self.torch, _dist_version("torchvision") or self.torchvision

    @property
    def works(self) -> bool:
        return self.torch is not None and self.torchvision is not None and self.problem is None


def _dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_requirement_of_torchvision() -> Optional[SpecifierSet]:
    """torchvision's declared requirement on torch (None when it declares none)."""
    for line in importlib.metadata.requires("torchvision") or []:
        requirement = Requirement(line)
        if requirement.name == "torch" and (requirement.marker is None or requirement.marker.evaluate()):
            return requirement.specifier
    return None


def probe() -> Found:
    """Import torch and torchvision here (this interpreter) and run ``torchvision.ops.nms``."""
    found = Found()
    try:
        import torch
    except ImportError as exc:
        installed = _dist_version("torch")
        if installed is None and isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
            found.torchvision = _dist_version("torchvision")
            return found
        found.torch = installed or "unknown"
        found.problem = f"torch does not import: {exc}"
        return found
    except Exception as exc:  # noqa: BLE001 - a broken build can raise anything at import
        found.torch = _dist_version("torch") or "unknown"
        found.problem = f"torch does not import: {type(exc).__name__}: {exc}"
        return found
    found.torch = str(torch.__version__)
    try:
        import torchvision
        from torchvision.ops import nms
    except ModuleNotFoundError as exc:
        if exc.name == "torchvision":
            found.problem = "torchvision is not installed"
            return found
        found.torchvision = _dist_version("torchvision") or "unknown"
        found.problem = f"torchvision does not import: {exc}"
        return found
    except Exception as exc:  # noqa: BLE001 - e.g. RuntimeError: operator torchvision::nms does not exist
        found.torchvision = _dist_version("torchvision") or "unknown"
        found.problem = f"torchvision does not import: {type(exc).__name__}: {exc}"
        return found
    found.torchvision = str(torchvision.__version__)
    try:
        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as exc:  # noqa: BLE001
        found.problem = f"torchvision.ops.nms does not run: {type(exc).__name__}: {exc}"
        return found
    wanted = _torch_requirement_of_torchvision()
    if wanted is not None and not wanted.contains(Version(found.torch).base_version, prereleases=True):
        found.problem = f"torchvision {found.torchvision} requires torch{wanted}"
    return found


def in_supported_range(torch_version: str) -> bool:
    return SUPPORTED_TORCH.contains(Version(torch_version).base_version, prereleases=True)


def _range_text() -> str:
    return f"torch{SUPPORTED_TORCH} (tested: {', '.join(TESTED_TORCH)})"


def decide(found: Found, mode: str, torch_version: str, torchvision_version: str):
    """``(action, torch, torchvision, message)`` with action "keep" / "install", or raise
    :class:`Refusal`."""
    pinned = f"torch=={torch_version} + torchvision=={torchvision_version}"
    present = f"torch {found.torch} + torchvision {found.torchvision or '(none)'}"
    replace_fix = (f"ZSMASK_TORCH=default bash scripts/install.sh replaces them with {pinned} "
                   f"(ZSMASK_TORCH_VERSION / ZSMASK_TORCHVISION_VERSION choose another pair)")
    if mode not in MODES:
        raise Refusal(f"ZSMASK_TORCH={mode!r} is not a mode", f"use one of {', '.join(MODES)}")
    same_as_pinned = (found.works and Version(found.torch).public == Version(torch_version).public
                      and Version(found.torchvision).public == Version(torchvision_version).public)
    if mode == "default":
        if same_as_pinned:
            return ("keep", *found.pip_versions(), f"{pinned} already installed")
        message = f"installing {pinned}"
        if found.torch is not None:
            message += f" (replacing {present}, as ZSMASK_TORCH=default asks)"
        return "install", torch_version, torchvision_version, message
    if found.torch is None:
        if mode == "keep":
            raise Refusal("ZSMASK_TORCH=keep, but this environment has no torch to keep",
                          f"install torch and torchvision first, or unset ZSMASK_TORCH to install {pinned}")
        return "install", torch_version, torchvision_version, f"no torch here: installing {pinned}"
    if not found.works:
        raise Refusal(
            f"{present} do not work together: {found.problem}",
            "install the torchvision built for this torch (the pair on pytorch.org's 'previous versions' "
            f"page, from the same index as torch), or let zsmask replace both: {replace_fix}")
    if same_as_pinned:
        return ("keep", *found.pip_versions(), f"{pinned} already installed")
    if in_supported_range(found.torch):
        return ("keep", *found.pip_versions(),
                f"keeping your {present} (supported: {_range_text()}); {replace_fix}")
    if mode == "keep":
        return ("keep", *found.pip_versions(),
                f"WARNING: keeping {present} as ZSMASK_TORCH=keep asks, although zsmask supports {_range_text()}")
    raise Refusal(
        f"{present} is outside the range zsmask supports, {_range_text()}",
        f"install a supported pair yourself, try this one anyway with ZSMASK_TORCH=keep, or {replace_fix}")


class Refusal(Exception):
    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what, self.fix = what, fix


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="auto", help=f"one of {', '.join(MODES)}")
    parser.add_argument("--torch", required=True, help="version of the pinned pair's torch")
    parser.add_argument("--torchvision", required=True, help="version of the pinned pair's torchvision")
    args = parser.parse_args(argv)
    try:
        action, torch_version, torchvision_version, message = decide(probe(), args.mode, args.torch,
                                                                     args.torchvision)
    except Refusal as refusal:
        print(f"\nERROR [zsmask install] {refusal.what}\n  what to do: {refusal.fix}", file=sys.stderr)
        return REFUSED
    print(message, file=sys.stderr)
    print(f"{action} {torch_version} {torchvision_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
