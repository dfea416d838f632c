#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]   (GPUs, or the CPU with gloo; see dist_launch.sh)
[[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 CONFIG NUM_PROCESSES [train.py options]" >&2; exit 2; }
exec "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
