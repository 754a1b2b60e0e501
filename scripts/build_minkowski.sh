#!/usr/bin/env bash
# Build (once per machine) and install the MinkowskiEngine 0.5.4 CPU wheel into a venv.
#
#   scripts/build_minkowski.sh [VENV]          (default VENV=.venv)
#
# ME ships only an sdist that compiles for ~5 min, and the wheel is tied to the exact torch
# build, so it is cached OUTSIDE the checkout under a key of (ME, torch, python) versions:
#   ${TTTKD_WHEEL_CACHE:-$HOME/.cache/tttkd/wheels}/me-0.5.4-torch<ver>-py<ver>/
# A second run with the wheel cached only installs it; a venv that already has it is a no-op.
# Recipe from ../shared/DESIGN.md: openblas, --cpu_only, no build isolation, zero C++ patches.
# Env: MAX_JOBS (compile jobs, default nproc), TTTKD_WHEEL_CACHE (cache root).
set -euo pipefail

ME_VERSION=0.5.4
VENV=${1:-.venv}
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "build_minkowski: no python at $PY; create the venv first (make venv)" >&2
    exit 2
fi

TORCH_VER=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "-"))')
PY_VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
KEY="me-${ME_VERSION}-torch${TORCH_VER}-py${PY_VER}"
CACHE_ROOT=${TTTKD_WHEEL_CACHE:-$HOME/.cache/tttkd/wheels}
WHEEL_DIR="$CACHE_ROOT/$KEY"
STAMP="$VENV/.minkowski-installed"

check_import() {
    # Python >= 3.10 removed collections.Sequence, which ME 0.5.4 still imports.
    "$PY" -c 'import collections, collections.abc, warnings
collections.Sequence = collections.abc.Sequence
warnings.filterwarnings("ignore", message=".*CPU_ONLY")
import MinkowskiEngine as ME
assert ME.__version__ == "'"$ME_VERSION"'", ME.__version__
print("MinkowskiEngine", ME.__version__, "importable")'
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]] && check_import >/dev/null 2>&1; then
    echo "build_minkowski: $KEY already installed in $VENV"
    exit 0
fi

mkdir -p "$CACHE_ROOT"
# One build at a time per cache (two CI jobs on one machine must not compile twice).
exec 9>"$CACHE_ROOT/.$KEY.lock"
flock 9

if ! ls "$WHEEL_DIR"/[Mm]inkowski[Ee]ngine-"$ME_VERSION"-*.whl >/dev/null 2>&1; then
    echo "build_minkowski: building $KEY (about 5 min on 2 cores) into $WHEEL_DIR"
    if [[ ! -e /usr/include/x86_64-linux-gnu/cblas.h && ! -e /usr/include/cblas.h ]] \
        && ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
        if [[ $(id -u) -eq 0 ]]; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev
        else
            echo "build_minkowski: libopenblas-dev is missing; run: sudo apt-get install -y libopenblas-dev" >&2
            exit 2
        fi
    fi
    "$PY" -m pip install --quiet ninja wheel
    TMP_DIR=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
    trap 'rm -rf "$TMP_DIR"' EXIT
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-deps --no-build-isolation \
        --use-pep517 \
        --config-settings="--global-option=--cpu_only" \
        --config-settings="--global-option=--blas=openblas" \
        "minkowskiengine==$ME_VERSION" -w "$TMP_DIR"
    mkdir -p "$WHEEL_DIR"
    mv "$TMP_DIR"/*.whl "$WHEEL_DIR"/
else
    echo "build_minkowski: using cached wheel in $WHEEL_DIR"
fi

"$PY" -m pip install --quiet --no-deps --force-reinstall "$WHEEL_DIR"/*.whl
check_import
echo "$KEY" >"$STAMP"
