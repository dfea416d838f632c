#!/usr/bin/env bash
# Usage: tools/dist_launch.sh TOOL NUM_PROCESSES [TOOL ARGUMENTS]
# Runs tools/TOOL (train.py or test.py) in NUM_PROCESSES processes with torchrun and --launcher pytorch: one process
# per GPU, or, without GPUs, processes on the CPU with the gloo backend.
# Python: $PYTHON if set, else the active virtual environment's, else the repository's .venv/.
set -euo pipefail
TOOL=$1
NPROC=$2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -z "${VIRTUAL_ENV:-}" && -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
    "$ROOT/tools/$TOOL" "${@:3}" --launcher pytorch
