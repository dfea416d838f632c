#!/usr/bin/env bash
# Run the test suite in the environment made by tools/install.sh (.venv/ unless MMMETAFORMER_VENV says otherwise).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${MMMETAFORMER_VENV:-$ROOT/.venv}"
if [[ "$VENV" == none ]]; then
    PY="$(command -v python3 || command -v python)"
else
    PY="$VENV/bin/python"
    [[ -x "$PY" ]] || { echo "[test] no environment at $VENV: run 'bash tools/install.sh' first" >&2; exit 1; }
fi
# pytest takes tests/ from pyproject.toml (testpaths) unless paths are given.
exec "$PY" -m pytest -q "$@"
