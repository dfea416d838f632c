#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
# GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PORT: see slurm_launch.sh. Running the same command again (or a
# requeued job running it) continues from WORK_DIR's newest checkpoint of the same config.
[[ $# -ge 4 ]] || { echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]" >&2; exit 2; }
exec "$(dirname "$0")/slurm_launch.sh" train.py "$1" "$2" "$3" --work-dir "$4" "${@:5}"
