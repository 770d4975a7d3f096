#!/usr/bin/env bash
# zsmask environment installer: the one install path of the project.
#
#   bash scripts/install.sh          # create or reuse .venv/ in the repository and install
#
# Steps, in this order (torch first, so nothing else picks another torch):
#   1. virtualenv .venv/ (reused when it exists and works)
#   2. torch + torchvision: a working pair already in the venv is kept (ZSMASK_TORCH below),
#      otherwise torch==$TORCH_VERSION + torchvision==$TORCHVISION_VERSION, pinned together; every
#      later pip call is constrained to the pair chosen here, so nothing asks for another torch
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
#   ZSMASK_TORCH=auto|keep|default   what to do with a torch already in the venv (default: auto):
#       auto     keep a working torch + torchvision pair inside the supported range
#                (scripts/torch_pair.py: SUPPORTED_TORCH), install the pinned pair when there is
#                no torch, refuse (with the fix) a pair that is outside the range or broken
#       keep     keep the pair present whatever its version; refuse only a broken one
#       default  install the pinned pair (replacing what is there)
#   ZSMASK_TORCH_VERSION=2.13.0 ZSMASK_TORCHVISION_VERSION=0.28.0   another pinned pair (both;
#       implies ZSMASK_TORCH=default unless ZSMASK_TORCH is set)
#   ZSMASK_DETECTRON2=auto|official|fallback   force a detectron2 path (default: auto)
#   ZSMASK_D2_PROBE_TIMEOUT=15   seconds to wait for GitHub before taking the fallback
#
#   bash scripts/install.sh --torch-decision   only print what step 2 would do (keep / install
#                                              and the versions); installs nothing
set -euo pipefail

# The default pair, installed together. The project's machines cap pip at torch<=2.14.1 and
# torchvision<=0.29.1, and this pair lies on their disk (no download).
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
TORCH_CONSTRAINTS="$VENV/.zsmask-torch-constraints.txt"
DECISION_ONLY=0
case "${1:-}" in
  "") ;;
  --torch-decision) DECISION_ONLY=1 ;;
  *) printf 'usage: bash scripts/install.sh [--torch-decision]\n' >&2; exit 2 ;;
esac

step() { printf '\n==> [zsmask install] %s\n' "$*"; }
die() {
  printf '\nERROR [zsmask install] %s\n' "$1" >&2
  [ -n "${2:-}" ] && printf '  what to do: %s\n' "$2" >&2
  exit 1
}

# ---- which pinned pair, and what to do with a torch already present -------------------------
TORCH_MODE="${ZSMASK_TORCH:-}"
if [ -n "${ZSMASK_TORCH_VERSION:-}${ZSMASK_TORCHVISION_VERSION:-}" ]; then
  if [ -z "${ZSMASK_TORCH_VERSION:-}" ] || [ -z "${ZSMASK_TORCHVISION_VERSION:-}" ]; then
    die "only one of ZSMASK_TORCH_VERSION (${ZSMASK_TORCH_VERSION:-unset}) and ZSMASK_TORCHVISION_VERSION (${ZSMASK_TORCHVISION_VERSION:-unset}) is set" \
        "set both: torchvision must be the release built for that torch (e.g. ZSMASK_TORCH_VERSION=$TORCH_VERSION ZSMASK_TORCHVISION_VERSION=$TORCHVISION_VERSION)"
  fi
  TORCH_VERSION="$ZSMASK_TORCH_VERSION"
  TORCHVISION_VERSION="$ZSMASK_TORCHVISION_VERSION"
  TORCH_MODE="${TORCH_MODE:-default}"
fi
TORCH_MODE="${TORCH_MODE:-auto}"

inputs_hash() {
  { cat "$REPO/requirements.txt" "$REPO/setup.py" "$REPO/scripts/install.sh" \
        "$REPO/scripts/install_detectron2_fallback.py" "$REPO/scripts/torch_pair.py"
    echo "$TORCH_MODE $TORCH_VERSION $TORCHVISION_VERSION"; } | sha256sum | cut -d' ' -f1
}

# ---- fast path: everything already installed from these very inputs -------------------
if [ "$DECISION_ONLY" = 0 ] && [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ]; then
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

# ---- 2. torch + torchvision ---------------------------------------------------------------
step "2/6 torch + torchvision (ZSMASK_TORCH=$TORCH_MODE; pinned pair torch==$TORCH_VERSION + torchvision==$TORCHVISION_VERSION)"
decide_torch() {  # prints "keep|install <torch> <torchvision>"; explains on stderr; refusals exit non-zero
  "$PY" "$REPO/scripts/torch_pair.py" --mode "$1" --torch "$TORCH_VERSION" --torchvision "$TORCHVISION_VERSION"
}
decision="$(decide_torch "$TORCH_MODE")" || exit 1
read -r TORCH_ACTION TORCH_USE TORCHVISION_USE <<<"$decision"
if [ "$DECISION_ONLY" = 1 ]; then
  echo "$decision"
  exit 0
fi
if [ "$TORCH_ACTION" = install ]; then
  "${PIP[@]}" "torch==$TORCH_USE" "torchvision==$TORCHVISION_USE" \
    || die "pip could not install torch==$TORCH_USE torchvision==$TORCHVISION_USE" \
           "check that the package index is reachable, that the pair exists for $("$PY" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])'), and that there is disk space (about 6 GB)"
  decision="$(decide_torch keep)" || die "the freshly installed torch==$TORCH_USE + torchvision==$TORCHVISION_USE do not work (see above)" \
    "choose another pair with ZSMASK_TORCH_VERSION / ZSMASK_TORCHVISION_VERSION"
  read -r TORCH_ACTION TORCH_USE TORCHVISION_USE <<<"$decision"
fi
# Every later pip call keeps exactly this pair.
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_USE" "$TORCHVISION_USE" > "$TORCH_CONSTRAINTS"
echo "torch $TORCH_USE + torchvision $TORCHVISION_USE; later steps are constrained to them ($TORCH_CONSTRAINTS)"

# ---- 3. requirements ---------------------------------------------------------------------
step "3/6 requirements.txt"
"${PIP[@]}" -r "$REPO/requirements.txt" -c "$TORCH_CONSTRAINTS" \
  || die "pip could not install requirements.txt next to torch $TORCH_USE + torchvision $TORCHVISION_USE" \
         "read pip's message above; a requirement that needs another torch is reported there"

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
      if "${PIP[@]}" -c "$TORCH_CONSTRAINTS" --no-build-isolation "git+$D2_OFFICIAL_URL"; then
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
    "$PY" "$REPO/scripts/install_detectron2_fallback.py" --constraint "$TORCH_CONSTRAINTS" \
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
"${PIP[@]}" -c "$TORCH_CONSTRAINTS" --no-deps --no-build-isolation -e "$REPO" \
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
