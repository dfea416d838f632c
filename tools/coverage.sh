#!/usr/bin/env bash
# The CPU test suite under coverage.py, the tools that the tests start as subprocesses measured too, then
# coverage.py's report of mmmetaformer/ (its TOTAL line last). Arguments go to pytest:
#
#   bash tools/coverage.sh                       # the whole suite
#   bash tools/coverage.sh -m "not slow"         # the suite without its slow tests
#   bash tools/coverage.sh tests/test_export     # one folder
#
# Settings: [tool.coverage.*] of pyproject.toml (`patch = ["subprocess"]` starts coverage in every Python
# subprocess; each process writes its own data file, combined here). Exits with pytest's status, or coverage.py's
# when the report fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${MMMETAFORMER_VENV:-$ROOT/.venv}"
if [[ "$VENV" == none ]]; then PY="$(command -v python3 || command -v python)"; else PY="$VENV/bin/python"; fi
[[ -x "$PY" ]] || { echo "[coverage] no environment at $VENV: run 'bash tools/install.sh' first" >&2; exit 1; }
"$PY" -c "import coverage" 2>/dev/null || {
    echo "[coverage] coverage.py is not installed in $PY: run 'bash tools/install.sh'" >&2; exit 1; }

# One data file (and its per-process siblings) for every process, whatever its working directory.
export COVERAGE_FILE="${COVERAGE_FILE:-$ROOT/.coverage}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m coverage erase
STATUS=0
"$PY" -m coverage run -m pytest -q -p no:cacheprovider "$@" || STATUS=$?
"$PY" -m coverage combine -q
"$PY" -m coverage report || STATUS=$?
exit $STATUS
