#!/usr/bin/env bash
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]
# GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PORT: see slurm_launch.sh.
[[ $# -ge 4 ]] || { echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]" >&2; exit 2; }
exec "$(dirname "$0")/slurm_launch.sh" test.py "$1" "$2" "$3" "$4" "${@:5}"
