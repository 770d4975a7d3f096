#!/usr/bin/env python
"""Install detectron2 as pure Python from the PyPI sdist ``pb1-detectron2==0.6``.

Used by ``scripts/install.sh`` when the official source (GitHub) cannot be reached.
The sdist holds detectron2's Python code (upstream main of ~Sept 2022) but no C++
sources; zsmask needs none of detectron2's compiled ops. This script

1. downloads the sdist from the PyPI simple index (``PIP_INDEX_URL`` or pypi.org) and
   checks its sha256 (``pip download`` cannot be used: it builds the sdist's metadata, which
   recent pip rejects for its direct-URL extra and which needs torch in the build env); the
   verified file is kept in ``--download-dir`` (default ``<zsmask cache>/downloads``) and reused,
2. unpacks it and patches it for torch 2.x / numpy 2 / Pillow >= 10 (see ``PATCHES``),
3. verifies that no unpatched pattern is left, and
4. ``pip install``s it into the running interpreter's environment, under ``--constraint`` files
   (install.sh passes the torch + torchvision pair it chose, so detectron2 cannot pull another
   torch); ``--dry-run REPORT`` asks pip what it would install instead and writes pip's JSON
   report there.

Every failure exits non-zero with a message that says which step failed.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

PACKAGE = "pb1-detectron2"
VERSION = "0.6"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
# Pinned digest of the sdist, so a changed upload is never installed silently.
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

_C_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from detectron2 import _C[ \t]*$", re.M)
# numpy 2 removed these aliases of builtins; \b keeps np.int64, np.bool_ etc. intact.
_NP_ALIAS = re.compile(r"\bnp\.(int|float|bool|str|object)\b(?!_)")
_ARRAY_NO_COPY = re.compile(r"np\.array\(([^(),]+), copy=False\)")


def _fail(step: str, detail: str) -> None:
    sys.exit(f"[detectron2 fallback] {step} failed: {detail}")


def _index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def default_download_dir() -> Path:
    """``<zsmask cache>/downloads``: the cache folder rule of ``zsmask.utils.cache_dir``, which
    cannot be imported here (zsmask is installed after detectron2)."""
    root = os.environ.get("ZSMASK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "zsmask")
    return Path(root) / "downloads"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_sdist(dest: Path, package: str = PACKAGE, sdist: str = SDIST, sha256: str = SDIST_SHA256) -> Path:
    """Fetch ``sdist`` of ``package`` through the simple index into ``dest`` and verify its
    sha256; a file already in ``dest`` with the right digest is reused without a download."""
    target = dest / sdist
    if target.is_file() and _sha256(target) == sha256:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    page_url = f"{_index_url()}/{package}/"
    try:
        html = urllib.request.urlopen(page_url, timeout=60).read().decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 - any network error is reported the same way
        _fail("download", f"cannot read the package index page {page_url}: {e}")
    links = re.findall(r'href="([^"]*?/' + re.escape(sdist) + r'(?:#[^"]*)?)"', html)
    if not links:
        _fail("download", f"{sdist} is not listed on {page_url}")
    url = urllib.parse.urljoin(page_url, links[0].replace("&amp;", "&")).split("#")[0]
    partial = dest / f"{sdist}.{os.getpid()}.part"
    try:
        with urllib.request.urlopen(url, timeout=120) as r, open(partial, "wb") as f:
            shutil.copyfileobj(r, f)
    except Exception as e:  # noqa: BLE001
        partial.unlink(missing_ok=True)
        _fail("download", f"cannot download {url}: {e}")
    digest = _sha256(partial)
    if digest != sha256:
        partial.unlink(missing_ok=True)
        _fail("download", f"sha256 of {sdist} is {digest}, expected {sha256}")
    os.replace(partial, target)
    return target


def _guard_c_imports(text: str) -> str:
    """Wrap each unguarded ``from detectron2 import _C`` in try/except ImportError."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        m = _C_IMPORT.match(line)
        if m and not (out and out[-1].strip() == "try:"):
            ind = m.group("indent")
            out += [
                f"{ind}try:",
                f"{ind}    from detectron2 import _C",
                f"{ind}except ImportError:  # pure-Python install (zsmask): compiled ops unavailable",
                f"{ind}    _C = None",
            ]
        else:
            out.append(line)
    return "\n".join(out)


def _patch_python_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    new = _guard_c_imports(text)
    new = _NP_ALIAS.sub(lambda m: m.group(1), new)
    new = new.replace("Image.LINEAR", "Image.BILINEAR")
    new = _ARRAY_NO_COPY.sub(r"np.asarray(\1)", new)
    if path.name == "model_zoo.py" and path.parent.name == "model_zoo":
        new = new.replace("import pkg_resources\n", "")
        new = re.sub(
            r"pkg_resources\.resource_filename\(\s*\"detectron2\.model_zoo\",\s*"
            r"os\.path\.join\(\"configs\", config_path\)\s*\)",
            'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
            new,
        )
    if new != text:
        path.write_text(new, encoding="utf-8")


def patch_tree(root: Path) -> None:
    """Apply every patch to an unpacked sdist at ``root`` and verify the result."""
    setup_py = root / "setup.py"
    text = setup_py.read_text(encoding="utf-8")
    text = text.replace("ext_modules=get_extensions(),", "ext_modules=[],")
    # black==21.4b2 does not import on Python 3.11 and is only used by LazyConfig.to_py;
    # the panopticapi extra is a direct URL, which pip rejects.
    text = re.sub(r'^\s*"black==[^"]*",\s*\n', "", text, flags=re.M)
    text = re.sub(r'^\s*"panopticapi @ [^"]*",\s*\n', "", text, flags=re.M)
    setup_py.write_text(text, encoding="utf-8")

    configs_src = root / "detectron2" / "model_zoo" / "configs"
    configs_dst = root / "configs"
    if configs_src.is_dir() and not configs_dst.exists():
        shutil.copytree(configs_src, configs_dst)

    for py in (root / "detectron2").rglob("*.py"):
        _patch_python_file(py)

    leftovers = []
    if "ext_modules=[]" not in setup_py.read_text(encoding="utf-8"):
        leftovers.append("setup.py: ext_modules")
    if not configs_dst.is_dir():
        leftovers.append("configs/ (model zoo configs) missing")
    for py in (root / "detectron2").rglob("*.py"):
        t = py.read_text(encoding="utf-8")
        rel = py.relative_to(root)
        checks = (
            (_NP_ALIAS, "numpy builtin alias (np.int, np.float, ...)"),
            (re.compile(r"Image\.LINEAR"), "Image.LINEAR"),
            (re.compile(r"np\.array\([^()]*copy=False\)"), "np.array(..., copy=False)"),
            (re.compile(r"^import pkg_resources", re.M), "pkg_resources"),
        )
        leftovers += [f"{rel}: {what}" for pat, what in checks if pat.search(t)]
        for m in _C_IMPORT.finditer(t):
            prev = t[: m.start()].rstrip().splitlines()[-1:] if m.start() else []
            if not prev or not prev[0].strip().startswith("try:"):
                leftovers.append(f"{rel}: unguarded 'from detectron2 import _C'")
    if leftovers:
        _fail("patch", "patterns left unpatched (the sdist changed?): " + "; ".join(leftovers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where to unpack (default: a temporary folder)")
    parser.add_argument("--download-dir", type=Path, default=None,
                        help="where the verified sdist is kept and reused (default: <zsmask cache>/downloads)")
    parser.add_argument("--patch-only", metavar="TREE", help="only patch an unpacked sdist tree")
    parser.add_argument("--constraint", "-c", action="append", default=[], metavar="FILE",
                        help="pip constraints file for the install (repeatable)")
    parser.add_argument("--dry-run", metavar="REPORT", default=None,
                        help="do not install: write pip's JSON report of what it would install to REPORT")
    args = parser.parse_args()

    if args.patch_only:
        patch_tree(Path(args.patch_only))
        print(f"[detectron2 fallback] patched {args.patch_only}")
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="zsmask-d2-"))
    workdir.mkdir(parents=True, exist_ok=True)
    download_dir = args.download_dir or default_download_dir()
    print(f"[detectron2 fallback] fetching {SDIST} from {_index_url()} (kept in {download_dir})")
    sdist = download_sdist(download_dir)
    with tarfile.open(sdist) as tar:
        tar.extractall(workdir, filter="data")
    tree = workdir / f"{PACKAGE}-{VERSION}"
    print(f"[detectron2 fallback] patching {tree}")
    patch_tree(tree)
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation"]
    for constraint in args.constraint:
        cmd += ["-c", constraint]
    if args.dry_run:
        cmd += ["--dry-run", "--quiet", "--report", args.dry_run]
        print("[detectron2 fallback] asking pip what installing it would change (--dry-run)")
    else:
        print("[detectron2 fallback] installing (pure Python, no compiled ops)")
    cmd.append(str(tree))
    if subprocess.call(cmd) != 0:
        _fail("pip install", " ".join(cmd))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
