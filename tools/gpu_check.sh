#!/usr/bin/env bash
# The GPU checks in one command: the GPU test suite (tests/gpu, marker `cuda`) and the GPU benchmark rows against
# timm, all written to one log. Runs on a GPU machine that has torch (with CUDA) and may lack everything else:
#
#   bash tools/gpu_check.sh                          # uses .venv/ if tools/install.sh made one, else python3
#   bash tools/gpu_check.sh --wheels DIR             # a wheelhouse of `tools/install.sh --wheelhouse`: installed
#                                                    # into .venv/ (seeing the machine's torch) with no index; any
#                                                    # other folder of wheels: installed beside the code for this run
#   bash tools/gpu_check.sh --log FILE --quick       # --quick: the test suite and a short benchmark only
#
# What is absent is skipped with a line that says so: the whole models (tests/gpu/test_whole_models.py) and the
# whole-detector rows need mmcv built with CUDA ops.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WHEELS=""
LOG="$ROOT/work_dirs/gpu_check/gpu_check_$(date -u +%Y%m%d_%H%M%S).log"
QUICK=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --log) LOG="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1

say() { printf '[gpu_check] %s\n' "$*"; }
if [[ -n "$WHEELS" ]]; then
    [[ -d "$WHEELS" ]] || { say "ERROR: --wheels $WHEELS is not a folder"; exit 2; }
fi
if [[ -n "$WHEELS" ]] && compgen -G "$WHEELS/onedl_mmcv-*.whl" >/dev/null; then
    say "installing the wheelhouse $WHEELS: bash tools/install.sh --from $WHEELS"
    MMMETAFORMER_VENV="$ROOT/.venv" bash "$ROOT/tools/install.sh" --from "$WHEELS" || { say "ERROR: the install \
from $WHEELS failed (above)"; exit 2; }
    WHEELS=""
fi
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi

if [[ -n "$WHEELS" ]]; then
    SITE="$(mktemp -d)"
    say "installing the wheels of $WHEELS into $SITE (no package index)"
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

say "$(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'), $PY"
"$PY" - <<'PYEOF'
import importlib
import importlib.metadata as md
import sys

import torch

def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None

if not torch.cuda.is_available():
    sys.exit(f'[gpu_check] ERROR: torch {torch.__version__} sees no CUDA GPU; nothing to check here')
props = torch.cuda.get_device_properties(0)
print(f'[gpu_check] found: {torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB), '
      f'torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), '
      f'Python {sys.version.split()[0]}')
required = {'mmengine': 'onedl-mmengine', 'timm': 'timm', 'pytest': 'pytest'}
missing = []
for module, dist in required.items():
    try:
        importlib.import_module(module)
        print(f'[gpu_check] found: {dist} {version(dist) or "(no metadata)"}')
    except ImportError as error:
        missing.append(f'{dist} ({error})')
if missing:
    sys.exit('[gpu_check] ERROR: missing ' + ', '.join(missing) + ': give their wheels with --wheels DIR')
for dist in ('onedl-mmcv', 'onedl-mmdetection', 'onedl-mmsegmentation', 'onedl-mmpretrain', 'onnxruntime',
             'onnxruntime-gpu', 'triton'):
    print(f'[gpu_check] {"found" if version(dist) else "absent"}: {dist} {version(dist) or ""}'.rstrip())
PYEOF

WHOLE=0
if "$PY" -c "import mmcv.ops, mmdet, torch; mmcv.ops.nms(torch.zeros(1, 4).cuda(), torch.ones(1).cuda(), 0.5)" \
        >/dev/null 2>&1; then
    WHOLE=1
    say "found: mmcv ops with CUDA and mmdet: the whole-detector rows run"
else
    say "skipped: the whole-detector rows (they need mmdet and mmcv built with CUDA ops)"
fi

STATUS=0
say "GPU test suite: pytest -m cuda tests/gpu"
start=$SECONDS
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests/gpu || STATUS=1
say "GPU test suite: $((SECONDS - start)) s, $([[ $STATUS == 0 ]] && echo passed || echo FAILED)"

BENCH=("$PY" tools/benchmark.py --device cuda)
if [[ $QUICK == 1 ]]; then
    MODELS=(poolformer_s12 caformer_s18)
    INFER_BATCH=64 TRAIN_BATCH=32 ITERS=(--iters 5 --warmup 2)
else
    MODELS=(poolformer_s12 poolformerv2_s12 convformer_s18 caformer_s18 caformer_b36 poolformer_m48)
    INFER_BATCH=256 TRAIN_BATCH=128 ITERS=(--iters 6 --warmup 2)
fi
run_rows() {
    say "benchmark: ${*}"
    "${BENCH[@]}" "$@" "${ITERS[@]}" || { STATUS=1; say "benchmark FAILED: $*"; }
}
run_rows --modes inference --models "${MODELS[@]}" --batch-size "$INFER_BATCH"
run_rows --modes train --models "${MODELS[@]}" --batch-size "$TRAIN_BATCH"
run_rows --modes dense --models "${MODELS[@]:0:4}"
run_rows --modes dense --models caformer_s18 --precisions bf16 --compile-blocks
if [[ $WHOLE == 1 ]]; then
    run_rows --modes whole --whole-models retinanet mask_rcnn semantic_fpn
fi
say "log: $LOG"
say "$([[ $STATUS == 0 ]] && echo 'all GPU checks passed' || echo 'some GPU checks FAILED (see above)')"
exit $STATUS
