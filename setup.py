#!/usr/bin/env python
"""zsmask: zero-shot semantic segmentation by query-based mask classification.

Install through ``scripts/install.sh`` (it installs torch, torchvision and detectron2 first,
which pip cannot resolve on its own); ``pip install -e .`` alone expects them present.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


TEST_REQUIREMENTS = ("pytest", "pytest-xdist", "playwright", "hypothesis")
DEMO_REQUIREMENTS = ("gradio>=6,<7",)  # the web demo only: a library install does without it


def read_requirements():
    reqs = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and line not in TEST_REQUIREMENTS + DEMO_REQUIREMENTS:
            reqs.append(line)
    return reqs


setup(
    name="zsmask",
    version="0.1.0",
    description="Zero-shot semantic segmentation by query-based mask classification (Detectron2)",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["zsmask", "zsmask.*"]),
    # sources of the MSDeformAttn CUDA kernel, compiled on first use (zsmask/modeling/pixel_decoder/ops/build.py)
    package_data={"zsmask.modeling.pixel_decoder.ops": ["src/*.cpp", "src/*.cu"],
                  "zsmask.data": ["class_lists/*.tsv"]},
    # torch / torchvision / detectron2 are installed by scripts/install.sh (see README).
    install_requires=read_requirements(),
    extras_require={"test": list(TEST_REQUIREMENTS), "demo": list(DEMO_REQUIREMENTS)},
)
