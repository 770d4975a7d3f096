#!/usr/bin/env bash
# zsmask environment installer: the one install path of the project.
#
#   bash scripts/install.sh          # create or reuse .venv/ in the repository and install
#
# Steps, in this order (torch first, so nothing else picks another torch):
#   1. virtualenv .venv/ (reused when it exists and works)
#   2. torch==$TORCH_VERSION + torchvision==$TORCHVISION_VERSION, pinned together
#   3. requirements.txt
#   4. detectron2: the official source (GitHub) when reachable within a short timeout,
#      otherwise the PyPI sdist pb1-detectron2==0.6 patched to a pure-Python install
#      (scripts/install_detectron2_fallback.py)
#   5. zsmask itself, editable (pip install -e .)
#   6. when torch sees a GPU: pre-build zsmask's MSDeformAttn CUDA kernel (never fatal; without
#      it MSDeformAttn runs its PyTorch path)
# A stamp of the inputs makes a second run on a ready environment finish in seconds.
#
# Environment knobs:
#   ZSMASK_PYTHON=python3.11     interpreter used to create the venv (default: python3)
#   ZSMASK_VENV=/path/to/venv    venv location (default: <repo>/.venv)
#   ZSMASK_DETECTRON2=auto|official|fallback   force a detectron2 path (default: auto)
#   ZSMASK_D2_PROBE_TIMEOUT=15   seconds to wait for GitHub before taking the fallback
set -euo pipefail

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
D2_OFFICIAL_URL="https://github.com/facebookresearch/detectron2.git"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZSMASK_VENV:-$REPO/.venv}"
PY_BOOT="${ZSMASK_PYTHON:-python3}"
D2_MODE="${ZSMASK_DETECTRON2:-auto}"
PROBE_TIMEOUT="${ZSMASK_D2_PROBE_TIMEOUT:-15}"
STAMP="$VENV/.zsmask-install-stamp"
D2_SOURCE_FILE="$VENV/.zsmask-detectron2-source"

step() { printf '\n==> [zsmask install] %s\n' "$*"; }
die() {
  printf '\nERROR [zsmask install] %s\n' "$1" >&2
  [ -n "${2:-}" ] && printf '  what to do: %s\n' "$2" >&2
  exit 1
}

inputs_hash() {
  cat "$REPO/requirements.txt" "$REPO/setup.py" "$REPO/scripts/install.sh" \
      "$REPO/scripts/install_detectron2_fallback.py" | sha256sum | cut -d' ' -f1
}

# ---- fast path: everything already installed from these very inputs -------------------
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ]; then
  if "$VENV/bin/python" -c "import torch, torchvision, detectron2, open_clip, zsmask" 2>/dev/null; then
    echo "[zsmask install] environment ready: $VENV (detectron2: $(cat "$D2_SOURCE_FILE" 2>/dev/null || echo unknown))"
    exit 0
  fi
  echo "[zsmask install] stamp present but imports fail; reinstalling"
fi

# ---- 1. virtualenv ------------------------------------------------------------------------
step "1/6 virtualenv at $VENV"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sys; assert sys.version_info >= (3, 9)" 2>/dev/null; then
  echo "reusing $VENV ($("$VENV/bin/python" --version))"
else
  command -v "$PY_BOOT" >/dev/null || die "no '$PY_BOOT' on PATH" "install Python >= 3.9 or set ZSMASK_PYTHON"
  "$PY_BOOT" -m venv "$VENV" || die "could not create the virtualenv $VENV" \
    "install the venv module (Debian: apt-get install python3-venv) or set ZSMASK_VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

# ---- 2. torch + torchvision pinned together ----------------------------------------------
step "2/6 torch==$TORCH_VERSION + torchvision==$TORCHVISION_VERSION (pinned together)"
if "$PY" - "$TORCH_VERSION" "$TORCHVISION_VERSION" <<'PYEOF' 2>/dev/null
import sys, torch, torchvision
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert torchvision.__version__.split("+")[0] == sys.argv[2], torchvision.__version__
torchvision.ops.nms  # the op registry must load (a mismatched pair fails here)
PYEOF
then
  echo "already installed"
else
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    || die "pip could not install torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION" \
           "check that PyPI is reachable and there is disk space (about 6 GB)"
fi

# ---- 3. requirements ---------------------------------------------------------------------
step "3/6 requirements.txt"
"${PIP[@]}" -r "$REPO/requirements.txt" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  || die "pip could not install requirements.txt" "read pip's message above"

# ---- 4. detectron2 -----------------------------------------------------------------------
step "4/6 detectron2"
d2_ok() { "$PY" -c "import detectron2, detectron2.config, detectron2.data, detectron2.evaluation" 2>/dev/null; }
if d2_ok && [ -f "$D2_SOURCE_FILE" ]; then
  echo "already installed ($(cat "$D2_SOURCE_FILE"))"
else
  took=""
  if [ "$D2_MODE" != "fallback" ]; then
    echo "probing the official source $D2_OFFICIAL_URL (timeout ${PROBE_TIMEOUT}s)"
    if GIT_TERMINAL_PROMPT=0 timeout "$PROBE_TIMEOUT" git ls-remote "$D2_OFFICIAL_URL" HEAD >/dev/null 2>&1; then
      if "${PIP[@]}" --no-build-isolation "git+$D2_OFFICIAL_URL"; then
        took="official source ($D2_OFFICIAL_URL)"
      elif [ "$D2_MODE" = "official" ]; then
        die "building detectron2 from the official source failed" "read the compiler output above"
      else
        echo "official build failed; taking the PyPI fallback"
      fi
    elif [ "$D2_MODE" = "official" ]; then
      die "the official detectron2 source is unreachable" "unset ZSMASK_DETECTRON2 to allow the PyPI fallback"
    else
      echo "official source unreachable; taking the PyPI fallback"
    fi
  fi
  if [ -z "$took" ]; then
    "$PY" "$REPO/scripts/install_detectron2_fallback.py" \
      || die "the pb1-detectron2 fallback failed" "read the message above; it names the failing step"
    took="PyPI fallback (pb1-detectron2==0.6, patched, pure Python)"
  fi
  d2_ok || die "detectron2 was installed but does not import" \
    "run: $PY -c 'import detectron2.data' to see the error"
  echo "$took" > "$D2_SOURCE_FILE"
fi
echo "detectron2 path: $(cat "$D2_SOURCE_FILE")"

# ---- 5. zsmask ---------------------------------------------------------------------------
step "5/6 zsmask (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$REPO" \
  || die "pip install -e . failed" "read pip's message above"
"$PY" -c "import torch, torchvision, detectron2, open_clip, zsmask" \
  || die "the final import check failed" "run the import above to see the error"

# ---- 6. MSDeformAttn CUDA kernel (optional) ----------------------------------------------
step "6/6 MSDeformAttn CUDA kernel"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  "$PY" -m zsmask.modeling.pixel_decoder.ops.build \
    || echo "kernel not built; MSDeformAttn uses its PyTorch path (retry: $PY -m zsmask.modeling.pixel_decoder.ops.build --verbose)"
else
  echo "no GPU visible to torch: skipped; MSDeformAttn uses its PyTorch path (the kernel builds on first GPU use)"
fi

inputs_hash > "$STAMP"
echo
echo "[zsmask install] done: $VENV (detectron2: $(cat "$D2_SOURCE_FILE"))"
