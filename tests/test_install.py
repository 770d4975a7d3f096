"""The install path: the detectron2 fallback patcher, the documented import, idempotency."""
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import install_detectron2_fallback as fallback  # noqa: E402
import torch_pair  # noqa: E402

# The user's cache, read before conftest points ZSMASK_CACHE at a temporary folder: the install
# keeps the verified detectron2 sdist there, so the dry run below needs no download.
USER_DOWNLOADS = fallback.default_download_dir()


def _fake_sdist(root):
    """A tree with each construct the real pb1-detectron2 0.6 sdist needs patched."""
    files = {
        "setup.py": """
            setup(
                install_requires=[
                    "hydra-core>=1.1",
                    "black==21.4b2",
                ],
                extras_require={"all": [
                    "panopticapi @ https://example.invalid/panopticapi.zip",
                ]},
                ext_modules=get_extensions(),
            )
        """,
        "detectron2/layers/deform_conv.py": """
            from detectron2 import _C

            def f():
                if True:
                    from detectron2 import _C
                return np.zeros(3, dtype=np.int) + np.int64(1) + np.float_(0)
        """,
        "detectron2/structures/masks.py": """
            a = x.astype(np.bool)
            b = np.array(mask, copy=False)
            c = np.array(mask, dtype=np.float)
            d = np.loadtxt(f, dtype=np.str), np.object
        """,
        "detectron2/data/transforms/transform.py": "def g(interp=Image.LINEAR):\n    return Image.BILINEAR\n",
        "detectron2/model_zoo/model_zoo.py": """
            import os
            import pkg_resources

            def get_config_file(config_path):
                cfg_file = pkg_resources.resource_filename(
                    "detectron2.model_zoo", os.path.join("configs", config_path)
                )
                return cfg_file
        """,
        "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml": "MODEL: {}\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def test_fallback_patcher_patches_every_construct(tmp_path):
    _fake_sdist(tmp_path)
    fallback.patch_tree(tmp_path)
    setup_py = (tmp_path / "setup.py").read_text()
    assert "ext_modules=[]," in setup_py and "black" not in setup_py and "panopticapi" not in setup_py
    deform = (tmp_path / "detectron2/layers/deform_conv.py").read_text()
    assert deform.count("try:\n") == 2 and deform.count("except ImportError") == 2
    assert "dtype=int)" in deform and "np.int64(1)" in deform and "np.float_(0)" in deform
    compile(deform, "deform_conv.py", "exec")
    masks = (tmp_path / "detectron2/structures/masks.py").read_text()
    assert "astype(bool)" in masks and "np.asarray(mask)" in masks and "dtype=float" in masks
    assert "dtype=str), object" in masks
    assert "Image.BILINEAR):" in (tmp_path / "detectron2/data/transforms/transform.py").read_text()
    zoo = (tmp_path / "detectron2/model_zoo/model_zoo.py").read_text()
    assert "pkg_resources" not in zoo and 'os.path.dirname(os.path.abspath(__file__)), "configs"' in zoo
    compile(zoo, "model_zoo.py", "exec")
    assert (tmp_path / "configs/Base-RCNN-FPN.yaml").is_file()
    fallback.patch_tree(tmp_path)  # idempotent
    assert (tmp_path / "detectron2/layers/deform_conv.py").read_text() == deform


def test_fallback_patcher_refuses_unknown_leftovers(tmp_path):
    _fake_sdist(tmp_path)
    (tmp_path / "setup.py").write_text("setup(ext_modules=build_all())\n")
    with pytest.raises(SystemExit, match="patch failed.*ext_modules"):
        fallback.patch_tree(tmp_path)


def test_documented_import_works():
    code = "import detectron2, zsmask; from zsmask.data import register_zero_shot_split; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_installed_detectron2_is_pure_python_or_official():
    import detectron2

    from detectron2.layers import deform_conv  # importable even without compiled ops

    assert detectron2.__version__.startswith("0.6")
    assert hasattr(deform_conv, "_C")


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(ROOT, ".venv", ".zsmask-install-stamp")),
    reason="environment not created by scripts/install.sh",
)
def test_install_script_second_run_is_a_no_op():
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "install.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "environment ready" in out.stdout and "detectron2:" in out.stdout
    assert "==> [zsmask install]" not in out.stdout  # no step re-ran


# ---- the torch + torchvision decision of install.sh (step 2) ------------------------------------
PINNED = ("2.14.1", "0.29.1")
NMS_OK = "def nms(boxes, scores, iou_threshold):\n    return []\n"


def _fake_venv(tmp_path, torch_version=None, torchvision_version=None, torchvision_requires=None,
               torchvision_init=None, dist_versions=None):
    """A venv whose ``bin/python`` is the base interpreter (no real torch) with a site folder of
    stub ``torch`` / ``torchvision`` packages and their dist-info metadata (``dist_versions``:
    the metadata versions, when they differ from ``__version__`` as in PyPI's CUDA wheels) on its
    path. Stubs only serve the decision logic; the real install is what CI runs."""
    dist_torch, dist_torchvision = dist_versions or (torch_version, torchvision_version)
    site = tmp_path / "site"
    site.mkdir(parents=True)
    if torch_version:
        (site / "torch").mkdir()
        (site / "torch" / "__init__.py").write_text(f"__version__ = {torch_version!r}\n"
                                                    "def zeros(*shape):\n    return shape\n")
        _dist_info(site, "torch", dist_torch)
    if torchvision_version:
        (site / "torchvision" / "ops").mkdir(parents=True)
        (site / "torchvision" / "__init__.py").write_text(
            torchvision_init or f"__version__ = {torchvision_version!r}\nfrom . import ops\n")
        (site / "torchvision" / "ops" / "__init__.py").write_text(NMS_OK)
        _dist_info(site, "torchvision", dist_torchvision, [f"torch{torchvision_requires}"] if torchvision_requires else [])
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    base = getattr(sys, "_base_executable", None) or sys.executable
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{site}" exec "{base}" "$@"\n')
    python.chmod(0o755)
    return venv


def _dist_info(site, name, version, requires=()):
    folder = site / f"{name}-{version}.dist-info"
    folder.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (folder / "METADATA").write_text("\n".join(lines) + "\n")


def _decide(venv, **env):
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("ZSMASK_TORCH")}
    run_env.update(ZSMASK_VENV=str(venv), **env)
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "install.sh"), "--torch-decision"],
                         capture_output=True, text=True, env=run_env, timeout=120)
    decision = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else None
    return out.returncode, decision, out.stderr


def test_torch_decision_installs_the_pinned_pair_into_an_empty_venv(tmp_path):
    rc, decision, err = _decide(_fake_venv(tmp_path))
    assert rc == 0, err
    assert decision == "install 2.14.1 0.29.1"
    assert "no torch here" in err


def test_torch_decision_keeps_a_working_pair_in_range_and_says_so(tmp_path):
    venv = _fake_venv(tmp_path, "2.11.0+cu128", "0.26.0+cu128", "==2.11.0")
    rc, decision, err = _decide(venv)
    assert rc == 0, err
    assert decision == "keep 2.11.0+cu128 0.26.0+cu128"
    assert "keeping your torch 2.11.0+cu128 + torchvision 0.26.0+cu128" in err
    # the default mode replaces it, loudly
    rc, decision, err = _decide(venv, ZSMASK_TORCH="default")
    assert (rc, decision) == (0, "install 2.14.1 0.29.1")
    assert "replacing torch 2.11.0+cu128" in err


def test_torch_decision_pinned_pair_present_is_kept_in_every_mode(tmp_path):
    # PyPI's CUDA wheels: torch.__version__ 2.14.1+cu130, metadata 2.14.1. The decision names the
    # metadata versions, which install.sh writes as pip constraints (pip matches those).
    venv = _fake_venv(tmp_path, "2.14.1+cu130", "0.29.1+cu130", ">=2.14.0", dist_versions=("2.14.1", "0.29.1"))
    for mode in ("auto", "keep", "default"):
        rc, decision, err = _decide(venv, ZSMASK_TORCH=mode)
        assert (rc, decision) == (0, "keep 2.14.1 0.29.1"), (mode, err)
        assert "already installed" in err


def test_torch_decision_outside_the_range_is_refused_unless_kept_on_purpose(tmp_path):
    venv = _fake_venv(tmp_path, "2.3.1", "0.18.1", "==2.3.1")
    rc, decision, err = _decide(venv)
    assert rc != 0 and decision is None
    assert "torch 2.3.1 + torchvision 0.18.1 is outside the range zsmask supports, torch<2.16,>=2.5" in err
    assert "ZSMASK_TORCH=keep" in err and "ZSMASK_TORCH=default" in err
    rc, decision, err = _decide(venv, ZSMASK_TORCH="keep")
    assert (rc, decision) == (0, "keep 2.3.1 0.18.1")
    assert "WARNING: keeping torch 2.3.1" in err


def test_torch_decision_mismatched_pair_names_both_versions_and_the_fix(tmp_path):
    venv = _fake_venv(tmp_path, "2.11.0", "0.29.1", ">=2.14.0")
    for mode in ("auto", "keep"):
        rc, decision, err = _decide(venv, ZSMASK_TORCH=mode)
        assert rc != 0 and decision is None
        assert "torch 2.11.0 + torchvision 0.29.1 do not work together: torchvision 0.29.1 requires torch>=2.14.0" in err
        assert "install the torchvision built for this torch" in err and "ZSMASK_TORCH=default" in err


def test_torch_decision_torchvision_whose_ops_do_not_load_is_refused(tmp_path):
    broken = "raise RuntimeError('operator torchvision::nms does not exist')\n"
    venv = _fake_venv(tmp_path, "2.12.0", "0.27.0", "==2.12.0", torchvision_init=broken)
    rc, decision, err = _decide(venv)
    assert rc != 0
    assert "torch 2.12.0 + torchvision 0.27.0 do not work together" in err
    assert "operator torchvision::nms does not exist" in err


def test_torch_decision_another_pinned_pair_and_bad_knobs(tmp_path):
    venv = _fake_venv(tmp_path, "2.11.0", "0.26.0", "==2.11.0")
    rc, decision, err = _decide(venv, ZSMASK_TORCH_VERSION="2.13.0", ZSMASK_TORCHVISION_VERSION="0.28.0")
    assert (rc, decision) == (0, "install 2.13.0 0.28.0"), err  # an explicit pair implies default
    rc, decision, err = _decide(venv, ZSMASK_TORCH_VERSION="2.13.0", ZSMASK_TORCHVISION_VERSION="0.28.0",
                                ZSMASK_TORCH="keep")
    assert (rc, decision) == (0, "keep 2.11.0 0.26.0"), err
    rc, _, err = _decide(venv, ZSMASK_TORCH_VERSION="2.13.0")
    assert rc != 0 and "only one of ZSMASK_TORCH_VERSION (2.13.0) and ZSMASK_TORCHVISION_VERSION (unset)" in err
    rc, _, err = _decide(venv, ZSMASK_TORCH="newest")
    assert rc != 0 and "ZSMASK_TORCH='newest' is not a mode" in err and "auto, keep, default" in err
    rc, _, err = _decide(_fake_venv(tmp_path / "empty"), ZSMASK_TORCH="keep")
    assert rc != 0 and "no torch to keep" in err


# ---- nothing but step 2 decides the torch: pip's own answer, not a reading of the files ---------
TORCH_FAMILY = re.compile(r"^(torch|torchvision|triton|nvidia-.+|cuda-.+)$")


def _pip_would_install(report_file):
    report = json.loads(Path(report_file).read_text())
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}


def _pip_dry_run(tmp_path, name, *args):
    report = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
           "--report", str(report), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return _pip_would_install(report)


@pytest.mark.slow
def test_requirements_setup_and_detectron2_ask_pip_for_no_other_torch(tmp_path):
    import torch

    requirements = _pip_dry_run(tmp_path, "requirements", "-r", os.path.join(ROOT, "requirements.txt"))
    package = _pip_dry_run(tmp_path, "setup", "--no-build-isolation", ROOT)
    assert "zsmask" in package  # the dry run did resolve setup.py's requirements
    report = tmp_path / "detectron2.json"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "install_detectron2_fallback.py"),
                          "--download-dir", str(USER_DOWNLOADS), "--dry-run", str(report)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    detectron2 = _pip_would_install(report)
    assert "pb1-detectron2" in detectron2
    for what, plan in (("requirements.txt", requirements), ("setup.py", package), ("detectron2", detectron2)):
        pulled = {name: version for name, version in plan.items() if TORCH_FAMILY.match(name)}
        assert not pulled, f"{what} would make pip install {pulled} next to torch {torch.__version__}"


def test_every_installed_requirement_on_torch_accepts_the_supported_range():
    """A kept torch anywhere in SUPPORTED_TORCH satisfies every installed package's declared
    requirement on torch / torchvision, so no later pip call has a reason to replace it."""
    from packaging.requirements import Requirement

    lowest, newest = "2.5.0", torch_pair.TESTED_TORCH[-1].split()[0]
    assert torch_pair.SUPPORTED_TORCH.contains(lowest) and torch_pair.SUPPORTED_TORCH.contains(newest)
    assert not torch_pair.SUPPORTED_TORCH.contains("2.4.1") and not torch_pair.SUPPORTED_TORCH.contains("2.16.0")
    checked = set()
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name in ("torch", "torchvision"):
            continue
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.name != "torch" or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
                continue
            checked.add(name)
            for version in (lowest, newest):
                assert requirement.specifier.contains(version), f"{name} requires {line}, which excludes torch {version}"
    assert {"open-clip-torch", "timm"} <= checked
