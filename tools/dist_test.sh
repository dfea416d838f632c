#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py options]   (GPUs, or the CPU; see dist_launch.sh)
[[ $# -ge 3 && "$3" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 CONFIG CHECKPOINT NUM_PROCESSES [test.py options]" >&2; exit 2; }
exec "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
