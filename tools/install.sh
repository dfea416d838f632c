#!/usr/bin/env bash
# Install mmmetaformer with the maintained OpenMMLab (OneDL) stack on torch 2.13.
#
#   bash tools/install.sh                        # creates .venv/ at the repository root
#   MMMETAFORMER_VENV=none bash tools/install.sh # installs into the active Python environment
#   MMMETAFORMER_CUDA_ARCH="8.0;9.0" bash tools/install.sh
#                                                # mmcv's CUDA ops for these GPUs, also on a machine without one
#   bash tools/install.sh --wheelhouse DIR [--python PYTHON] [--torch VERSION] [--cuda-arch ARCH]
#                                                # every wheel the stack needs, for a machine without a package index
#   bash tools/install.sh --from DIR             # install from such a folder, with no network
#
# mmcv's ops are built for the GPUs that torch sees (MMMETAFORMER_CUDA_ARCH overrides), with the system CUDA toolkit
# when its release matches torch's CUDA, else with NVIDIA's compiler packages from the registry
# (MMMETAFORMER_CUDA_TOOLKIT=system|registry forces one). Without a GPU and without MMMETAFORMER_CUDA_ARCH: the
# CPU build. Built mmcv wheels are kept in $MMMETAFORMER_CACHE (default ~/.cache/mmmetaformer), one per Python,
# torch and architecture list. Idempotent: a second run on a ready environment only checks and exits.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\n[install] %s\n' "$*"; }
die() { printf '\n[install] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "step failed (line $LINENO). Fix the problem shown above and run tools/install.sh again."' ERR

WHEELHOUSE="" FROM="" TARGET_PYTHON="" TARGET_TORCH="" TARGET_ARCH=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheelhouse|--from|--python|--torch|--cuda-arch)
            [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see: bash tools/install.sh --help)"
            case "$1" in
                --wheelhouse) WHEELHOUSE="$2" ;; --from) FROM="$2" ;; --python) TARGET_PYTHON="$2" ;;
                --torch) TARGET_TORCH="$2" ;; --cuda-arch) TARGET_ARCH="$2" ;;
            esac
            shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see: bash tools/install.sh --help)" ;;
    esac
done
[[ -n "$WHEELHOUSE" && -n "$FROM" ]] && die "--wheelhouse and --from are two separate steps: give one of them"
if [[ -z "$WHEELHOUSE" && -n "$TARGET_PYTHON$TARGET_TORCH$TARGET_ARCH" ]]; then
    die "--python, --torch and --cuda-arch describe the target of --wheelhouse DIR; give --wheelhouse too"
fi

if [[ -n "$FROM" ]]; then
    [[ -d "$FROM" ]] || die "--from $FROM is not a folder (make one with: bash tools/install.sh --wheelhouse DIR)"
    compgen -G "$FROM/onedl_mmcv-*.whl" >/dev/null \
        || die "$FROM has no onedl_mmcv wheel: it is not a wheelhouse of tools/install.sh --wheelhouse"
fi
STACK="$ROOT/mmmetaformer/utils/stack.py"
CUDA_BUILD="$ROOT/mmmetaformer/utils/cuda_build.py"
# A wrong architecture list stops here, before anything is installed.
for archs in "${MMMETAFORMER_CUDA_ARCH:-}" "$TARGET_ARCH"; do
    [[ -z "$archs" ]] || MMMETAFORMER_CUDA_ARCH="$archs" python3 "$CUDA_BUILD" archs >/dev/null \
        || die "see the line above"
done

CACHE="${MMMETAFORMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmmetaformer}"
# The local find-links folder offers a '+cpu' torch wheel without a torchvision partner; torch installs point pip
# at an empty folder so it takes the registry's build (an empty PIP_FIND_LINKS falls back to the pip config).
EMPTY_LINKS="$CACHE/empty-find-links"
mkdir -p "$EMPTY_LINKS"

# A Python interpreter by name or path; pyenv's shims need PYENV_VERSION for a version that is not the global one.
resolve_python() {
    local name="$1" version
    if "$name" -c 'import sys' 2>/dev/null; then command -v "$name"; return; fi
    if command -v pyenv >/dev/null && [[ "$name" =~ ^python([0-9]+\.[0-9]+)$ ]]; then
        version="$(pyenv versions --bare 2>/dev/null | grep -E "^${BASH_REMATCH[1]//./\\.}(\.[0-9]+)?$" | tail -n 1)"
        if [[ -n "$version" && -x "$(pyenv root)/versions/$version/bin/$name" ]]; then
            echo "$(pyenv root)/versions/$version/bin/$name"; return
        fi
    fi
    die "no Python '$name' on this machine: give --python the path or name of an installed interpreter"
}

# make_venv DIR PYTHON [--system-site-packages]: a virtual environment, created once.
make_venv() {
    if [[ ! -x "$1/bin/python" ]]; then
        say "creating virtual environment $1 (${*:3})"
        "$2" -m venv "${@:3}" "$1" || die "$2 -m venv failed (is the venv module installed?)"
    fi
}

# build_mmcv PY ARCHS: prints the path of an onedl-mmcv wheel with its ops built for PY's torch (CUDA kernels for
# the ';'-separated ARCHS, none when empty), from the cache or built now with the build's progress on stderr.
build_mmcv() {
    local py="$1" archs="$2" key out log cuda torch_version tag cuda_home status
    torch_version="$("$py" -c 'import torch; print(torch.__version__.split("+")[0] + "-" + (torch.version.cuda or "cpu"))')"
    tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
    if [[ -n "$archs" ]]; then key="$tag-torch$torch_version-sm${archs//[;.+]/_}"; else key="$tag-torch$torch_version-cpu"; fi
    out="$CACHE/mmcv/$key"
    if compgen -G "$out/onedl_mmcv-*.whl" >/dev/null; then
        say "reusing the $MMCV_PIN wheel built before ($out)" >&2
        ls "$out"/onedl_mmcv-*.whl; return
    fi
    mkdir -p "$out" "$CACHE/logs"
    log="$CACHE/logs/mmcv-$key.log"
    local env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
    if [[ -n "$archs" ]]; then
        cuda="$("$py" "$CUDA_BUILD" torch-cuda)" || die "torch in $py has no CUDA: install a CUDA build of torch"
        cuda_home="$(find_toolkit "$py" "$cuda")"
        env+=(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$archs" CUDA_HOME="$cuda_home" PATH="$cuda_home/bin:$PATH")
        say "building $MMCV_PIN with its CUDA ops for $archs (CUDA $cuda, $cuda_home): about 30 minutes on 2 cores" >&2
    else
        say "building $MMCV_PIN with its C++ ops (CPU only): about 10 minutes on 2 cores" >&2
    fi
    say "full build log: $log; progress (compiled files):" >&2
    # -v streams the compiler's lines into the log; the ninja counters ("[12/130]") are shown as progress.
    set +e
    env "${env[@]}" "$py" -m pip --disable-pip-version-check wheel -v --no-deps --no-build-isolation --no-cache-dir \
        -w "$out" "$MMCV_PIN" 2>&1 | tee "$log" | show_compile_progress >&2
    status=${PIPESTATUS[0]}
    set -e
    [[ $status == 0 ]] && compgen -G "$out/onedl_mmcv-*.whl" >/dev/null || explain_build_failure "$log"
    ls "$out"/onedl_mmcv-*.whl
}

# Reads a build log, prints one line per compiled file: "  [12/130] mmcv/ops/csrc/pytorch/cuda/nms_cuda.cu".
show_compile_progress() {
    { grep --line-buffered -oE '^ *\[[0-9]+/[0-9]+\] [^ ]+ .*-c [^ ]+' || true; } \
        | sed -u -E 's#^ *(\[[0-9]+/[0-9]+\]).* -c ([^ ]+)$#  \1 \2#; s#[^ ]*/(mmcv/ops/csrc/)#\1#'
}

# The last lines of a failed mmcv build, and the fix for the failures we know.
explain_build_failure() {
    local log="$1"
    tail -n 25 "$log" >&2
    if grep -qE 'unsupported GNU version|unsupported host compiler' "$log"; then
        die "nvcc does not support this gcc. Install a gcc that this CUDA release supports and set NVCC_CCBIN=/path/to/g++ (or CC/CXX), then run the install again. Log: $log"
    elif grep -qE "Unsupported gpu architecture|nvcc fatal.*arch" "$log"; then
        die "this CUDA release cannot compile for the requested architecture. Set MMMETAFORMER_CUDA_ARCH (or --cuda-arch) to architectures it supports, e.g. 8.0;9.0. Log: $log"
    elif grep -qE 'Killed|out of memory|internal compiler error: Killed' "$log"; then
        die "the compiler ran out of memory. Run again with fewer parallel jobs: MAX_JOBS=1 bash tools/install.sh ... Log: $log"
    elif grep -qE '(cuda_runtime|cublas|cusparse|cusolver|thrust|cub)[^ ]*: No such file or directory' "$log"; then
        die "the CUDA toolkit lacks headers. Use the registry compiler (MMMETAFORMER_CUDA_TOOLKIT=registry) or point CUDA_HOME at a complete toolkit of torch's CUDA release. Log: $log"
    elif grep -qE 'cannot find -lcudart|cannot find -lc10_cuda' "$log"; then
        die "the linker found no CUDA runtime library. Use the registry compiler (MMMETAFORMER_CUDA_TOOLKIT=registry) or a CUDA_HOME with lib64/libcudart.so. Log: $log"
    fi
    die "building $MMCV_PIN failed (last lines above; full log: $log). Check that torch, the compiler and CUDA_HOME match, then run the install again."
}

# find_toolkit PY CUDA: prints a CUDA_HOME of release CUDA: the system's if it matches, else one assembled from the
# registry compiler packages installed into PY's environment (beside torch's own CUDA libraries).
find_toolkit() {
    local py="$1" cuda="$2" home status=0
    home="$("$py" "$CUDA_BUILD" system-toolkit)" || status=$?
    if [[ $status == 0 ]]; then echo "$home"; return; fi
    [[ $status == 1 ]] || die "see the line above"
    say "no system CUDA $cuda toolkit to use: installing NVIDIA's CUDA $cuda compiler packages from the registry" >&2
    mapfile -t packages < <("$py" "$CUDA_BUILD" registry-requirements)
    "$py" -m pip --disable-pip-version-check install -q "${packages[@]}" >&2 \
        || die "could not install ${packages[*]} from the package registry. Without a registry, install a CUDA $cuda toolkit and set CUDA_HOME to it, or build a wheelhouse on a machine with one: bash tools/install.sh --wheelhouse DIR --cuda-arch ARCH"
    # one CUDA_HOME per environment: its links point into that environment's nvidia/cuXX tree
    "$py" "$CUDA_BUILD" assemble "$CACHE/cuda-homes/$("$py" -c 'import hashlib, sys
print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:12])')-$cuda" || die "see the line above"
}

# check_mmcv PY ARCHS: mmcv's ops load; on a GPU nms and RoIAlign agree with the CPU; for ARCHS without a GPU the
# extension holds their kernels.
check_mmcv() {
    local py="$1" archs="$2" line
    "$py" -c "import torch, mmcv.ops; mmcv.ops.nms(torch.tensor([[0., 0., 9., 9.]]), torch.tensor([1.]), 0.5)"
    if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        line="$("$py" "$CUDA_BUILD" check-gpu)" || die "mmcv's CUDA ops are wrong on this GPU (see above)"
        say "$line"
    elif [[ -n "$archs" ]]; then
        line="$("$py" "$CUDA_BUILD" check-archs "$archs")" || die "see the line above"
        say "no GPU here; the built ops hold CUDA kernels: $line"
    fi
}

check_python_installation() {
    "$1" - <<'PYEOF'
import torch, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmpretrain, timm, mmmetaformer
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'timm {timm.__version__}, mmmetaformer {mmmetaformer.__version__}')
PYEOF
}

VENV="${MMMETAFORMER_VENV:-$ROOT/.venv}"
HOST_PYTHON="$(command -v python3 || command -v python)" || die "no python found"
if [[ "$VENV" == none ]]; then
    PY="$HOST_PYTHON"
    say "installing into the active environment ($PY)"
elif [[ -z "$WHEELHOUSE" ]]; then
    # --from keeps the machine's own torch: the new environment sees the system's packages
    make_venv "$VENV" "$HOST_PYTHON" ${FROM:+--system-site-packages}
    PY="$VENV/bin/python"
fi
PIP_OPTIONS=(--disable-pip-version-check)
MMCV_PIN="$(python3 "$STACK" requirements mmcv)"

if [[ -n "$FROM" ]]; then
    "$PY" -c 'import torch' 2>/dev/null \
        || die "torch is not installed in $PY: a wheelhouse installs onto an existing torch (install it first)"
    mapfile -t WANTED < <("$PY" "$STACK" requirements wheelhouse)
    say "installing ${WANTED[*]} and mmmetaformer from $FROM (no package index), keeping torch $("$PY" -c \
        'import torch; print(torch.__version__)')"
    "$PY" -m pip "${PIP_OPTIONS[@]}" install --no-index --find-links "$FROM" --only-binary :all: \
        "${WANTED[@]}" mmmetaformer || die "installing from $FROM failed (see above): the wheelhouse was made for another Python or torch? Its wheels: $(ls "$FROM" | grep -cE '\.whl$'); rebuild it with --python and --torch of this machine"
    check_mmcv "$PY" ""
    check_python_installation "$PY"
    say "done"
    exit 0
fi

if [[ -n "$WHEELHOUSE" ]]; then
    BUILD_PYTHON="$(resolve_python "${TARGET_PYTHON:-$HOST_PYTHON}")"
    mapfile -t TORCH_PINS < <(python3 "$STACK" requirements torch ${TARGET_TORCH:+--torch "$TARGET_TORCH"})
    ARCHS=""
    [[ -z "$TARGET_ARCH" ]] || ARCHS="$(MMMETAFORMER_CUDA_ARCH="$TARGET_ARCH" python3 "$CUDA_BUILD" archs)" \
        || die "see the line above"
    PY_TAG="$("$BUILD_PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    BUILD_ENV="$CACHE/build-envs/py$PY_TAG-${TORCH_PINS[0]//=/}"
    make_venv "$BUILD_ENV" "$BUILD_PYTHON"
    PY="$BUILD_ENV/bin/python"
    say "build environment $BUILD_ENV: ${TORCH_PINS[*]} (Python $PY_TAG)"
    "$PY" -m pip "${PIP_OPTIONS[@]}" install -q --upgrade pip "setuptools<82" wheel ninja
    PIP_FIND_LINKS="$EMPTY_LINKS" "$PY" -m pip "${PIP_OPTIONS[@]}" install -q "${TORCH_PINS[0]}"
    MMCV_WHEEL="$(build_mmcv "$PY" "$ARCHS")"
    mkdir -p "$WHEELHOUSE"
    cp "$MMCV_WHEEL" "$WHEELHOUSE/"
    say "collecting the wheels of the stack that torch ${TORCH_PINS[0]#torch==} does not bring"
    mapfile -t WANTED < <(python3 "$STACK" requirements wheelhouse)
    "$PY" -m pip "${PIP_OPTIONS[@]}" wheel --no-deps --no-build-isolation -q -w "$WHEELHOUSE" "$ROOT"
    # The closure of the stack's requirements, less torch's own: what a machine with torch alone still needs.
    STACK_REPORT="$(mktemp)" TORCH_REPORT="$(mktemp)"
    PIP_FIND_LINKS="$EMPTY_LINKS" "$PY" -m pip "${PIP_OPTIONS[@]}" install -q --dry-run --ignore-installed \
        --report "$STACK_REPORT" --find-links "$WHEELHOUSE" "${WANTED[@]}" "${TORCH_PINS[@]}"
    PIP_FIND_LINKS="$EMPTY_LINKS" "$PY" -m pip "${PIP_OPTIONS[@]}" install -q --dry-run --ignore-installed \
        --report "$TORCH_REPORT" "${TORCH_PINS[0]}"
    mapfile -t MISSING < <("$PY" -c '
import json, sys
def names(path):
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.load(open(path))["install"]}
torch_own = names(sys.argv[2])
for name, version in sorted(names(sys.argv[1]).items()):
    if name not in torch_own and name not in ("onedl-mmcv", "mmmetaformer"):
        print(name + "==" + version)' "$STACK_REPORT" "$TORCH_REPORT")
    rm -f "$STACK_REPORT" "$TORCH_REPORT"
    PIP_FIND_LINKS="$EMPTY_LINKS" "$PY" -m pip "${PIP_OPTIONS[@]}" wheel -q --no-deps -w "$WHEELHOUSE" "${MISSING[@]}"
    SIZE="$(du -sm --apparent-size "$WHEELHOUSE" | cut -f1)"
    say "wheelhouse $WHEELHOUSE: $(ls "$WHEELHOUSE" | grep -cE '\.whl$') wheels, ${SIZE} MiB, for Python $PY_TAG," \
        "${TORCH_PINS[0]}, mmcv ops $([[ -n "$ARCHS" ]] && echo "with CUDA kernels for $ARCHS" || echo "for the CPU only")"
    say "install it on the target: bash tools/install.sh --from $WHEELHOUSE"
    exit 0
fi

# The wanted mmcv build: the GPUs torch sees (or MMMETAFORMER_CUDA_ARCH); nothing before torch is installed.
wanted_archs() { "$PY" "$CUDA_BUILD" archs 2>/dev/null || echo "${MMMETAFORMER_CUDA_ARCH:-}"; }

# mmcv's ops load and, for the architectures given (none: the CPU build), hold their CUDA kernels.
mmcv_ready() { "$PY" -c "import mmcv.ops" 2>/dev/null && { [[ -z "$1" ]] || "$PY" "$CUDA_BUILD" check-archs "$1" >/dev/null 2>&1; }; }

# Quick exit when everything is already in place (second run): every pin installed and mmcv's ops as wanted.
if "$PY" "$STACK" check 2>/dev/null && ARCHS="$(wanted_archs)" && mmcv_ready "$ARCHS"
then
    say "environment already complete: nothing to do ($PY)"
    exit 0
fi

say "upgrading pip, setuptools<82 (mmcv's setup.py needs pkg_resources), wheel, ninja"
"$PY" -m pip "${PIP_OPTIONS[@]}" install -q --upgrade pip "setuptools<82" wheel ninja

mapfile -t TORCH_PINS < <(python3 "$STACK" requirements torch)
mapfile -t STACK_PINS < <(python3 "$STACK" requirements stack)
say "installing ${TORCH_PINS[*]} from the package registry (large download, about a minute)"
PIP_FIND_LINKS="$EMPTY_LINKS" "$PY" -m pip "${PIP_OPTIONS[@]}" install "${TORCH_PINS[@]}"

ARCHS="$("$PY" "$CUDA_BUILD" archs)" || die "see the line above"
if "$PY" "$STACK" check onedl-mmcv 2>/dev/null && mmcv_ready "$ARCHS"; then
    say "$MMCV_PIN with ops already installed"
else
    MMCV_WHEEL="$(build_mmcv "$PY" "$ARCHS")"
    # --force-reinstall: an installed mmcv whose ops do not load or lack the wanted CUDA kernels is replaced
    "$PY" -m pip "${PIP_OPTIONS[@]}" install -q --force-reinstall --no-deps "$MMCV_WHEEL"
fi

say "installing ${STACK_PINS[*]}"
"$PY" -m pip "${PIP_OPTIONS[@]}" install "${STACK_PINS[@]}" "${TORCH_PINS[@]}" "$MMCV_PIN"

say "installing mmmetaformer in editable mode"
"$PY" -m pip "${PIP_OPTIONS[@]}" install --no-build-isolation --no-deps -e "$ROOT"

say "checking the installation"
check_mmcv "$PY" "$ARCHS"
check_python_installation "$PY"
say "done. Run the tests with: bash tools/test.sh"
