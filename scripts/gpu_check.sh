#!/usr/bin/env bash
# The ONE command for a lent GPU machine (issue 10): install, verify, measure, in ~8 minutes.
#
#   bash scripts/gpu_wheels.sh                     # HERE first: wheels into .whl/ and .whl-xz/
#   device run: carry [".whl", ".whl-xz"], command "bash scripts/gpu_check.sh", timeout_s 560
#
#   bash scripts/gpu_check.sh [--quick] [--no-install] [--skip-STEP ...] [--only STEP]
#   GPU_CHECK_DEVICE=cpu OUT=/tmp/gpuout bash scripts/gpu_check.sh --quick --no-install  # here
#
# Steps, in order (budget in seconds, full / --quick; each is cut at its budget and at the
# total GPU_CHECK_BUDGET, default their sum: 490 / 320, and the run goes on after a failed step):
#   env         50/50    install .whl/*.whl and .whl-xz/*.tar.xz into /tmp/site (pip, no
#                        network), make `import tttkd` work from the checkout (a symlink tree
#                        built from pyproject's package-dir), print the versions: python,
#                        torch, CUDA, GPU, driver, spconv, cumm, zarr, dask, numpy
#   tests       80/80    pytest tests/adapt/test_graph_step.py (captured = eager weights on
#                        the GPU), tests/model/test_backends_on_cuda.py (every CUDA backend
#                        = the torch reference on the GPU, forward and gradients) and
#                        tests/model/test_spconv_backend.py
#   bench-gpu   220/100  python -m benchmarks.bench_gpu --out $OUT/gpu_table.md (the table
#                        for benchmarks/RESULTS.md)
#   bench-prep  80/45    python -m benchmarks.bench_prep --device cuda --skip-geometry with
#                        DINOv2 ViT-L/14 (random weights), 4 rooms x 6 frames at
#                        1296x968, Dask 1x1 and 8x1 (CPU workers x GPUs)
#   adapt       60/45    the commands a user runs, on the GPU: tttkd-synth (2 ScanNet rooms),
#                        tttkd-prep, tttkd-train (1 epoch), tttkd-adapt (source, ttt-kd,
#                        ttt-kd-online; it prints the backend and precision it chose)
#
# Output in $OUT (default /tmp/gpu_check_out): versions.txt, tests.log, bench-gpu.log,
# gpu_table.md, bench-prep.log, adapt.log, summary.md (step, status, seconds). Exit status: 0
# when every step run passed, 1 when any failed, 2 for a bad option.
# Env: GPU_CHECK_DEVICE (cuda; cpu exercises the flow without a GPU, budgets x4),
# GPU_CHECK_PYTHON (python3; with --no-install .venv/bin/python when there), GPU_CHECK_SITE
# (/tmp/site), GPU_CHECK_BUDGET (the sum of the steps' budgets).
set -uo pipefail

STEPS=(env tests bench-gpu bench-prep adapt)
declare -A FULL=([env]=50 [tests]=80 [bench-gpu]=220 [bench-prep]=80 [adapt]=60)
declare -A QUICK=([env]=50 [tests]=80 [bench-gpu]=100 [bench-prep]=45 [adapt]=45)

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
# PYTHONSAFEPATH: no python puts its working directory first on sys.path, where the checkout's
# own tttkd/ folder (only the top of the package) would hide the shim's full tree.
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONSAFEPATH=1
export GPU_CHECK_DEVICE=${GPU_CHECK_DEVICE:-cuda}
export OUT=${OUT:-/tmp/gpu_check_out}
export GPU_CHECK_SITE=${GPU_CHECK_SITE:-/tmp/site}
export GPU_CHECK_QUICK=${GPU_CHECK_QUICK:-0} GPU_CHECK_INSTALL=${GPU_CHECK_INSTALL:-1}
SHIM="${TMPDIR:-/tmp}/gpu_check_shim"  # holds the tttkd symlink tree
WORK="${TMPDIR:-/tmp}/gpu_check_work"  # the adapt step's dataset, cache and runs

die() {
    echo "gpu_check: $*" >&2
    exit 2
}

# ---- the steps (each runs in its own `bash gpu_check.sh --run-step NAME`, under timeout) ----

step_env() {
    if [[ "$GPU_CHECK_INSTALL" == 1 ]]; then
        compgen -G ".whl/*.whl" >/dev/null || {
            echo "no wheels in .whl/: run 'bash scripts/gpu_wheels.sh' on a machine with pip" \
                "access, then carry [\".whl\", \".whl-xz\"] with the device call" >&2
            return 1
        }
        local stamp="$GPU_CHECK_SITE/.gpu_check_installed" want
        want=$(ls -l .whl .whl-xz 2>/dev/null | md5sum)
        if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
            echo "wheels already installed in $GPU_CHECK_SITE (a rerun on a warm machine)"
        else
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$GPU_CHECK_SITE" .whl/*.whl || return 1
            for a in .whl-xz/*.tar.xz; do
                [[ -e "$a" ]] || continue
                echo "unpacking $a into $GPU_CHECK_SITE"
                tar -xJf "$a" -C "$GPU_CHECK_SITE" || return 1
            done
            echo "$want" >"$stamp"
        fi
    fi
    "$PY" - "$REPO" "$SHIM" <<'EOF' || return 1
"""`import tttkd` from the checkout without installing it: the tree pyproject's package-dir
describes (tttkd.pipeline -> pipeline/, ...), built from symlinks."""
import importlib, shutil, sys, tomllib
from pathlib import Path

repo, shim = Path(sys.argv[1]), Path(sys.argv[2])
tool = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
dirs = tool["package-dir"]
root = shim / "tttkd"
shutil.rmtree(shim, ignore_errors=True)
root.mkdir(parents=True)
for f in (repo / dirs["tttkd"]).iterdir():
    (root / f.name).symlink_to(f)
for pkg, d in dirs.items():
    parts = pkg.split(".")
    if len(parts) == 2:
        (root / parts[1]).symlink_to(repo / d)
    elif len(parts) > 2:
        sys.exit(f"package-dir maps the nested package {pkg}: extend gpu_check.sh's shim")
sys.path.insert(0, str(shim))
for pkg in tool["packages"]:
    try:
        mod = importlib.import_module(pkg)
    except Exception as err:  # one line naming the package and the missing piece
        sys.exit(f"cannot import {pkg}: {type(err).__name__}: {err}")
    if not Path(mod.__file__).is_relative_to(shim):
        sys.exit(f"{pkg} was imported from {mod.__file__}, not from the checkout")
print(f"tttkd imports from the checkout through {root} ({len(tool['packages'])} packages)")
EOF
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host: $(uname -m), $(nproc) CPUs"
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 |
                sed 's/^/nvidia-smi: /'
        else
            echo "nvidia-smi: not on this machine"
        fi
        "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB")
else:
    print("GPU: none (torch.cuda.is_available() is False)")
for name in ("spconv-cu126", "spconv", "cumm-cu126", "cumm", "zarr", "numcodecs", "dask",
             "distributed", "numpy", "timm", "safetensors", "plyfile"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
from tttkd.model.sparse.base import available_backends
print(f"sparse backends that import: {available_backends()}")
EOF
    } 2>&1 | tee "$OUT/versions.txt"
}

step_tests() {
    "$PY" -m pytest -q -rs -p no:cacheprovider tests/adapt/test_graph_step.py \
        tests/model/test_backends_on_cuda.py tests/model/test_spconv_backend.py
}

step_bench-gpu() {
    local args=(--device "$GPU_CHECK_DEVICE" --out "$OUT/gpu_table.md")
    [[ "$GPU_CHECK_QUICK" == 1 ]] && args+=(--quick)
    "$PY" -m benchmarks.bench_gpu "${args[@]}"
}

step_bench-prep() {
    if [[ "$GPU_CHECK_DEVICE" == cpu ]]; then  # the code path only, at the CPU smoke size
        "$PY" -m benchmarks.bench_prep --quick --skip-geometry --scenes 2 --settings serial 1x0
    elif [[ "$GPU_CHECK_QUICK" == 1 ]]; then
        "$PY" -m benchmarks.bench_prep --device "$GPU_CHECK_DEVICE" --skip-geometry \
            --scenes 2 --views 4 --reps 3 --encoder-batches 8 --settings 1x1
    else
        "$PY" -m benchmarks.bench_prep --device "$GPU_CHECK_DEVICE" --skip-geometry \
            --scenes 4 --views 6 --reps 5 --encoder-batches 8 32 --settings 1x1 8x1
    fi
}

tttkd() {  # the installed commands' entry points, run from the checkout
    local cmd=$1
    shift
    "$PY" -c "import sys; from tttkd.cli.$cmd import main; sys.argv[0] = 'tttkd-$cmd'; main()" "$@"
}

step_adapt() {
    local arch=minkunet34c voxel=0.04 steps=10
    if [[ "$GPU_CHECK_DEVICE" == cpu || "$GPU_CHECK_QUICK" == 1 ]]; then
        arch=minkunet_test voxel=0.1 steps=3
    fi
    rm -rf "$WORK" && mkdir -p "$WORK" || return 1
    set -e
    tttkd synth scannet --out "$WORK/scannet" --num-scenes 2 --frames 25k
    tttkd prep scannet --root "$WORK/scannet" --cache "$WORK/feats.zarr" --teacher test_vit_tiny \
        --image-size 56 --voxel-size "$voxel" --device "$GPU_CHECK_DEVICE" --no-progress
    tttkd train --cache "$WORK/feats.zarr" --out "$WORK/run" --epochs 1 --arch "$arch" \
        --train-split train --no-val --device "$GPU_CHECK_DEVICE" --backend auto --num-workers 0 \
        --no-progress --no-tensorboard
    tttkd adapt --cache "$WORK/feats.zarr" --checkpoint "$WORK/run/best.safetensors" \
        --out "$WORK/adapt" --method source,ttt-kd,ttt-kd-online --steps "$steps" \
        --device "$GPU_CHECK_DEVICE" --backend auto --no-progress --no-plots
    set +e
}

if [[ "${1:-}" == --run-step ]]; then  # internal: one step, called by the driver below
    PY=${GPU_CHECK_PY:?}
    export PYTHONPATH="$SHIM:$GPU_CHECK_SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
    "step_$2"
    exit $?
fi

# ---- the driver ---------------------------------------------------------------------------

declare -A SKIP=()
ONLY=""
while (($#)); do
    case "$1" in
    --quick) GPU_CHECK_QUICK=1 ;;
    --no-install) GPU_CHECK_INSTALL=0 ;;
    --only) ONLY=${2:-} && shift ;;
    --skip-*)
        s=${1#--skip-}
        [[ " ${STEPS[*]} " == *" $s "* ]] || die "unknown step in $1; steps: ${STEPS[*]}"
        SKIP[$s]=1
        ;;
    -h | --help)
        sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[[ -z "$ONLY" || " ${STEPS[*]} " == *" $ONLY "* ]] || die "unknown step '$ONLY'; steps: ${STEPS[*]}"
if [[ -z "${GPU_CHECK_PYTHON:-}" ]]; then
    GPU_CHECK_PYTHON=python3
    if [[ "$GPU_CHECK_INSTALL" == 0 && -x .venv/bin/python ]]; then
        GPU_CHECK_PYTHON=$REPO/.venv/bin/python
    fi
fi
export GPU_CHECK_PY=$GPU_CHECK_PYTHON
mkdir -p "$OUT" || die "cannot write to OUT=$OUT"
SCALE=1
[[ "$GPU_CHECK_DEVICE" == cpu ]] && SCALE=4  # the CPU flow checks the logic, it times nothing
budget_of() {
    if [[ "$GPU_CHECK_QUICK" == 1 ]]; then
        echo $((QUICK[$1] * SCALE))
    else
        echo $((FULL[$1] * SCALE))
    fi
}
BUDGET=0
for s in "${STEPS[@]}"; do ((BUDGET += $(budget_of "$s"))); done
BUDGET=${GPU_CHECK_BUDGET:-$BUDGET}
START=$SECONDS
echo "gpu_check: device $GPU_CHECK_DEVICE, python $GPU_CHECK_PY, quick $GPU_CHECK_QUICK," \
    "install $GPU_CHECK_INSTALL, total budget ${BUDGET}s, logs in $OUT"
SUMMARY=("| step | status | seconds | budget | log |" "|---|---|---|---|---|")
FAILED=0
for s in "${STEPS[@]}"; do
    if [[ -n "${SKIP[$s]:-}" || (-n "$ONLY" && "$s" != "$ONLY" && "$s" != env) ]]; then
        SUMMARY+=("| $s | skipped | - | - | - |")
        continue
    fi
    budget=$(budget_of "$s")
    left=$((BUDGET - (SECONDS - START) - 5))
    ((budget > left)) && budget=$left
    if ((budget < 10)); then
        echo "gpu_check: no time left for $s (total budget ${BUDGET}s)"
        SUMMARY+=("| $s | not run: no time left | - | - | - |")
        FAILED=1
        continue
    fi
    log="$s.log"
    [[ "$s" == env ]] && log=versions.txt
    echo
    echo "=== gpu_check: $s (budget ${budget}s) ==="
    t0=$SECONDS
    if [[ "$s" == env ]]; then  # versions.txt is written by the step itself
        timeout -k 10 "$budget" bash "$0" --run-step "$s" 2>&1
    else
        timeout -k 10 "$budget" bash "$0" --run-step "$s" 2>&1 | tee "$OUT/$log"
    fi
    rc=${PIPESTATUS[0]}
    dt=$((SECONDS - t0))
    case $rc in
    0) status=ok ;;
    124 | 137) status="FAILED: cut at its ${budget}s budget" ;;
    *) status="FAILED (exit $rc)" ;;
    esac
    [[ $rc == 0 ]] || FAILED=1
    echo "=== gpu_check: $s: $status (${dt}s) ==="
    SUMMARY+=("| $s | $status | $dt | $budget | $log |")
done

{
    echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ): device $GPU_CHECK_DEVICE, quick" \
        "$GPU_CHECK_QUICK, $((SECONDS - START)) s in all"
    echo
    printf '%s\n' "${SUMMARY[@]}"
} >"$OUT/summary.md"
echo
[[ -s "$OUT/gpu_table.md" ]] && cat "$OUT/gpu_table.md" && echo
[[ -s "$OUT/versions.txt" ]] && cat "$OUT/versions.txt" && echo
cat "$OUT/summary.md"
exit $FAILED
