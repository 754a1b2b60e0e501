#!/usr/bin/env bash
# Fetch, HERE (where pip reaches the registries), every wheel the lent GPU machine lacks, so
# that scripts/gpu_check.sh can install them THERE (no network) in seconds.
#
#   bash scripts/gpu_wheels.sh            then carry [".whl", ".whl-xz"] to the device
#
# The GPU machine: Python 3.12 (cp312), manylinux x86_64, torch 2.11 + CUDA 13.0, timm,
# safetensors, numpy, pyyaml, click, psutil, ... (/work/.library/device/KINDS.md lists them);
# it has no zarr, numcodecs, dask, distributed, plyfile, spconv or cumm. Versions: those of
# requirements-dev.txt for the packages named there (one source of truth), the .venv's for the
# dependencies it does not name. spconv: the cu126 build, the newest CUDA variant of spconv
# 2.3.8 (none for CUDA 13; a CUDA 13 driver runs CUDA 12 binaries), with cumm-cu126 0.7.x
# (cumm-cu128 exists only as 0.8.x, which spconv 2.3.8 refuses: it needs cumm < 0.8).
#
# spconv-cu126 (~70 MB) and cumm-cu126 (~27 MB) exceed what one device call carries (64 MiB
# with the repo), so they are unpacked and re-packed as .tar.xz in .whl-xz/ (gpu_check.sh
# untars them into its site folder). Idempotent: what is already there is kept. Ends by
# printing what would travel (tracked + untracked-not-ignored files + the two folders) and
# fails if that is over 64 MiB.
set -euo pipefail

cd "$(dirname "$0")/.."
WHL=.whl
XZ=.whl-xz
LIMIT_MIB=64
PY=${PIP_PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
die() {
    echo "gpu_wheels: $*" >&2
    exit 1
}
"$PY" -m pip --version >/dev/null 2>&1 || die "no pip for $PY; set PIP_PYTHON to a python with pip"

pin() {  # the version requirements-dev.txt pins for a package
    local v
    v=$(sed -n "s/^$1==\([^ #]*\).*/\1/p" requirements-dev.txt)
    [[ -n "$v" ]] || die "requirements-dev.txt pins no version of $1"
    echo "$v"
}

# Missing on the device machine: the project's own dependencies and theirs (not those
# already there: numpy, packaging, typing-extensions, click, cloudpickle, fsspec, pyyaml,
# toolz, jinja2, msgpack, psutil, sortedcontainers, urllib3, pybind11, ninja, requests, sympy,
# portalocker, safetensors 0.8.0).
PLAIN=(
    "zarr==$(pin zarr)" "numcodecs==$(pin numcodecs)" donfig==0.8.1.post1 google-crc32c==1.9.0
    "dask==$(pin dask)" "distributed==$(pin distributed)" partd==1.4.2 locket==1.0.0
    tblib==3.2.2 zict==3.0.0 tornado==6.6.1
    "plyfile==$(pin plyfile)"
    pccm==0.4.16 ccimport==0.4.4 fire==0.7.1 termcolor==3.3.0 lark==1.3.1
)
BIG=("spconv-cu126==$(pin spconv)" "cumm-cu126==$(pin cumm)")

PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    PLATFORMS+=(--platform "${p}_x86_64")
done

have() {  # a wheel (or, for the big ones, its .tar.xz) for NAME==VERSION is already there
    local name=${1%%==*} ver=${1##*==} norm
    norm=$(echo "$name" | tr '-' '_')
    compgen -G "$WHL/${norm}-${ver}-*.whl" >/dev/null ||
        compgen -G "$XZ/${norm}-${ver}.tar.xz" >/dev/null
}

fetch() {  # pip download one pinned wheel for cp312 manylinux x86_64, no dependencies
    have "$1" && return 0
    echo "gpu_wheels: downloading $1"
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$WHL" "$1" 2>&1 |
        { grep -v "^WARNING: Location" || true; }; then  # (a local pip config's find-links)
        die "pip found no cp312 manylinux x86_64 wheel of $1 (see the message above)"
    fi
}

mkdir -p "$WHL" "$XZ"
for req in "${PLAIN[@]}" "${BIG[@]}"; do fetch "$req"; done

# One version of each package only: two stop the device's install.
dups=$(ls "$WHL"/*.whl | xargs -n1 basename | cut -d- -f1 | sort | uniq -d)
[[ -z "$dups" ]] || die "several versions in $WHL of: $dups (remove the old wheels)"

for req in "${BIG[@]}"; do  # re-pack the big wheels as .tar.xz (a wheel is a zip of site files)
    norm=$(echo "${req%%==*}" | tr '-' '_')
    out="$XZ/${norm}-${req##*==}.tar.xz"
    [[ -s "$out" ]] && continue
    wheel=$(compgen -G "$WHL/${norm}-${req##*==}-*.whl" | head -1)
    echo "gpu_wheels: re-packing $wheel as $out (xz, a minute or two)"
    tmp=$(mktemp -d)
    "$PY" -m zipfile -e "$wheel" "$tmp" || die "could not unpack $wheel"
    tar -C "$tmp" -cf - . | xz -T1 -9 >"$out.part" || die "could not write $out"
    mv "$out.part" "$out"
    rm -rf "$tmp"
done
for req in "${BIG[@]}"; do  # the wheels themselves stay out of what travels
    norm=$(echo "${req%%==*}" | tr '-' '_')
    rm -f "$WHL/${norm}-${req##*==}"-*.whl
done

# What one device call carries: the repo's tracked and untracked-not-ignored files + these.
repo_bytes=$(git ls-files -z --cached --others --exclude-standard |
    xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carry_bytes=$(du -sb "$WHL" "$XZ" | awk '{s += $1} END {print s + 0}')
total=$((repo_bytes + carry_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu_wheels: $(ls "$WHL" | wc -l) wheels in $WHL ($(mib "$(du -sb "$WHL" | cut -f1)")), \
$(ls "$XZ" | wc -l) archives in $XZ ($(mib "$(du -sb "$XZ" | cut -f1)"))"
echo "gpu_wheels: a device call carries $(mib "$total") (repo $(mib "$repo_bytes") + wheels \
$(mib "$carry_bytes")) of the $LIMIT_MIB MiB allowed"
((total < LIMIT_MIB * 1048576)) ||
    die "that is over $LIMIT_MIB MiB: ignore or remove large untracked files before the call"
echo 'gpu_wheels: ready; device call: carry [".whl", ".whl-xz"],' \
    'command "bash scripts/gpu_check.sh", timeout_s 560'
