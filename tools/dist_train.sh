#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]   (GPUs, or the CPU with gloo; see dist_launch.sh)
exec "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
