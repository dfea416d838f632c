#!/usr/bin/env bash
# Install mmmetaformer with the maintained OpenMMLab (OneDL) stack on torch 2.13.
#
#   bash tools/install.sh            # creates .venv/ at the repository root
#   MMMETAFORMER_VENV=none bash tools/install.sh   # installs into the active Python environment
#
# Idempotent: a second run on a ready environment only checks the pins and exits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\n[install] %s\n' "$*"; }
die() { printf '\n[install] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "step failed (line $LINENO). Fix the problem shown above and run tools/install.sh again."' ERR

VENV="${MMMETAFORMER_VENV:-$ROOT/.venv}"
if [[ "$VENV" == none ]]; then
    PY="$(command -v python3 || command -v python)" || die "no python found"
    say "installing into the active environment ($PY)"
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating virtual environment $VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (is the venv module installed?)"
    fi
    PY="$VENV/bin/python"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# The pinned versions have one source, mmmetaformer/utils/stack.py (it runs as a script before anything is installed).
STACK=("$PY" "$ROOT/mmmetaformer/utils/stack.py")
mapfile -t TORCH_PINS < <("${STACK[@]}" requirements torch)
MMCV_PIN="$("${STACK[@]}" requirements mmcv)"
mapfile -t STACK_PINS < <("${STACK[@]}" requirements stack)

# Quick exit when everything is already in place (second run): every pin installed and mmcv's compiled ops present.
if "${STACK[@]}" check 2>/dev/null && "$PY" -c "import mmcv.ops" 2>/dev/null
then
    say "environment already complete: nothing to do ($PY)"
    exit 0
fi

say "upgrading pip, setuptools<82 (mmcv's setup.py needs pkg_resources), wheel, ninja"
"${PIP[@]}" install -q --upgrade pip "setuptools<82" wheel ninja

# The local find-links folder offers a '+cpu' torch wheel without a torchvision partner; point pip at an
# empty folder so it takes the registry's build (an empty PIP_FIND_LINKS falls back to the pip config).
EMPTY_LINKS="$(mktemp -d)"
say "installing ${TORCH_PINS[*]} from the package registry (large download, about a minute)"
PIP_FIND_LINKS="$EMPTY_LINKS" "${PIP[@]}" install "${TORCH_PINS[@]}"
rmdir "$EMPTY_LINKS"

if "${STACK[@]}" check onedl-mmcv 2>/dev/null && "$PY" -c "import mmcv.ops" 2>/dev/null; then
    say "$MMCV_PIN with ops already installed"
else
    MMCV_FLAGS=()
    if "$PY" -c "import importlib.metadata as m; m.version('onedl-mmcv')" 2>/dev/null; then
        # installed but its ops do not load (built without ops, or against another torch): rebuild from source
        MMCV_FLAGS=(--force-reinstall --no-deps --no-cache-dir)
    fi
    say "building $MMCV_PIN with its C++ ops: this takes about 10 minutes on 2 cores (cached by pip afterwards)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" install --no-build-isolation "${MMCV_FLAGS[@]}" \
        "$MMCV_PIN"
fi

say "installing ${STACK_PINS[*]}"
"${PIP[@]}" install "${STACK_PINS[@]}" "${TORCH_PINS[@]}"

say "installing mmmetaformer in editable mode"
"${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"

say "checking the installation"
"$PY" - <<'PYEOF'
import torch, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmpretrain, timm, mmmetaformer
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'timm {timm.__version__}, mmmetaformer {mmmetaformer.__version__}')
PYEOF
say "done. Run the tests with: bash tools/test.sh"
