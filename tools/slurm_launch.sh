#!/usr/bin/env bash
# Usage: tools/slurm_launch.sh TOOL PARTITION JOB_NAME [TOOL ARGUMENTS]
# Runs tools/TOOL (train.py or test.py) with srun and --launcher slurm, with OpenMMLab's settings:
#   GPUS           tasks in all (default 8): one process per GPU, or on nodes without GPUs one CPU process (gloo)
#   GPUS_PER_NODE  tasks per node (default: GPUS, at most 8); GPUS > GPUS_PER_NODE spans several nodes
#   CPUS_PER_TASK  --cpus-per-task (default 5 on a partition with GPUs, Slurm's own default on one without);
#                  also OMP_NUM_THREADS unless that is set
#   SRUN_ARGS      more srun options, e.g. "--time=1:00:00 --signal=USR1@120"
#   PORT           the rendezvous port (default: 20000 + job id modulo 10000)
# GPUs are requested (--gres=gpu:GPUS_PER_NODE) when sinfo lists a gpu GRES on the partition's nodes.
# Python: $PYTHON if set, else the active virtual environment's, else the repository's .venv/.
set -euo pipefail
TOOL=$1
PARTITION=$2
JOB_NAME=$3
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -z "${VIRTUAL_ENV:-}" && -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"
    else PYTHON=python; fi
fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
RESOURCES=()
if sinfo -h -p "$PARTITION" -o %G | grep -q gpu; then
    RESOURCES+=(--gres="gpu:$GPUS_PER_NODE")
    CPUS_PER_TASK=${CPUS_PER_TASK:-5}
fi
if [[ -n "${CPUS_PER_TASK:-}" ]]; then
    RESOURCES+=(--cpus-per-task="$CPUS_PER_TASK")
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${CPUS_PER_TASK:-1}}
if [[ -n "${PORT:-}" ]]; then export MASTER_PORT=$PORT; fi
# SRUN_ARGS is split into words on purpose: it holds several options.
# shellcheck disable=SC2086
PYTHONPATH="$ROOT:${PYTHONPATH:-}" exec srun -p "$PARTITION" --job-name="$JOB_NAME" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" "${RESOURCES[@]}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u "$ROOT/tools/$TOOL" "${@:4}" --launcher slurm
