#!/usr/bin/env bash
# GPU smoke test: tiny GEM-DINO trains on one CUDA GPU in fp32 and in bf16
# AMP, then the MoE layer benchmark runs there. One short, prepared script for
# a lent GPU machine, which may have another Python, its own CUDA torch and no
# package registry.
#
#   bash tools/gpu_smoke.sh --wheels WHEEL_DIR [--out DIR] [--iters 20]
#   bash tools/gpu_smoke.sh --cpu [--out DIR]          # the same steps on CPU
#   bash tools/gpu_smoke.sh --prepare-wheels WHEEL_DIR [--python-version 3.10]
#                       # on a machine with a registry: what WHEEL_DIR needs
#
# Steps (the summary, OUT/gpu_smoke_summary.md, records each one):
#   1. environment: Python, torch, the CUDA device (GPU mode needs one).
#   2. packages: whatever is missing of mmengine 0.10.7, mmdet 3.3.0, cvxpy,
#      ecos, pycocotools, scipy, matplotlib, pyyaml is installed from
#      WHEEL_DIR only (pip --no-index; never a registry). mmcv 2.1.0: kept if
#      its ops import and run on CUDA; else a matching mmcv wheel in WHEEL_DIR;
#      else built from mmcv-2.1.0.tar.gz in WHEEL_DIR with CUDA ops
#      (FORCE_CUDA=1, all cores) within MMCV_BUILD_TIMEOUT seconds (default
#      420); if that fails or runs out of time, built with CPU ops only, and
#      mmcv's pure-PyTorch multi-scale deformable attention (and mmdet's
#      PyTorch focal loss) run on CUDA instead (MMGEM_PURE_PYTORCH_OPS=1, see
#      mmgem/engine/runner/pure_pytorch_ops.py, applied by GEMRunner). The summary says which.
#   3. data: the tiny generated mini-UODB (tools/misc/make_mini_uodb.py).
#   4. training: configs/gem/gem-dino-tiny_r18_mini-uodb_ep.py in one
#      process (the expert-parallel config: on one GPU it is plain GEM-DINO),
#      ITERS iterations in fp32, then the same with tools/train.py --amp and
#      optim_wrapper.dtype=bfloat16; every logged loss must be finite, and
#      the GPU run validates at the end.
#   5. tools/benchmark/moe_layer.py on the device (small sizes in CPU mode).
# mmgem itself is used from this checkout (PYTHONPATH), not installed.
# Exit status 0 only when every step passed.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
PY="${PYTHON:-python3}"
MODE=gpu
WHEELS=""
OUT=""
ITERS=""
PREPARE=""
PYVER=""
MMCV_BUILD_TIMEOUT="${MMCV_BUILD_TIMEOUT:-420}"
CONFIG=configs/gem/gem-dino-tiny_r18_mini-uodb_ep.py
STEP="start"
trap 'echo "tools/gpu_smoke.sh: FAILED in step: ${STEP}" >&2' ERR

usage() {
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE=cpu ;;
        --wheels) WHEELS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --iters) ITERS="$2"; shift ;;
        --prepare-wheels) PREPARE="$2"; shift ;;
        --python-version) PYVER="$2"; shift ;;
        -h|--help) usage 0 ;;
        *) echo "tools/gpu_smoke.sh: unknown argument $1" >&2; usage 2 ;;
    esac
    shift
done

PACKAGES=(mmengine==0.10.7 mmdet==3.3.0 cvxpy ecos pycocotools scipy matplotlib pyyaml)

if [ -n "${PREPARE}" ]; then
    # on a machine with a package registry: fill a wheel dir for the GPU one
    mkdir -p "${PREPARE}"
    extra=()
    if [ -n "${PYVER}" ]; then
        extra=(--python-version "${PYVER}" --only-binary=:all:
               --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
    fi
    "${PY}" -m pip download -q -d "${PREPARE}" "${extra[@]}" "${PACKAGES[@]}"
    "${PY}" -m pip download -q -d "${PREPARE}" --no-deps --no-binary=:all: mmcv==2.1.0
    "${PY}" -m pip download -q -d "${PREPARE}" "${extra[@]}" ninja "setuptools<81" wheel
    echo "wheels for the GPU smoke test are in ${PREPARE}"
    exit 0
fi

if [ "${MODE}" = cpu ]; then
    ITERS="${ITERS:-2}"
    DEVICE=cpu
else
    ITERS="${ITERS:-20}"
    DEVICE=cuda
fi
OUT="${OUT:-work_dirs/gpu_smoke_${MODE}}"
mkdir -p "${OUT}"
OUT="$(cd "${OUT}" && pwd)"
SUMMARY="${OUT}/gpu_smoke_summary.md"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
START=$(date +%s)

step() {
    STEP="$*"
    echo
    echo "==> [gpu smoke] ${STEP}"
}

note() {
    echo "$*"
    echo "$*" >> "${SUMMARY}"
}

: > "${SUMMARY}"
note "# GPU smoke test (${MODE} mode)"
note ""

# ----------------------------------------------------------------------
step "1/5 environment"
ENV_LINE="$("${PY}" - "${MODE}" <<'EOF'
import platform, sys
import torch
mode = sys.argv[1]
if mode == 'gpu' and not torch.cuda.is_available():
    sys.exit('GPU mode needs a CUDA device (torch.cuda.is_available() is False);'
             ' use --cpu to run the steps on the CPU')
device = torch.cuda.get_device_name(0) if mode == 'gpu' else platform.processor() or 'cpu'
print(f'- device: {device}; Python {platform.python_version()}; torch '
      f'{torch.__version__} (CUDA {torch.version.cuda})')
EOF
)"
note "${ENV_LINE}"

# ----------------------------------------------------------------------
step "2/5 packages"
missing() {
    "${PY}" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        if not req.specifier.contains(version(req.name), prereleases=True):
            print(spec)
    except PackageNotFoundError:
        print(spec)
EOF
}

# 0: mmcv's compiled ops import and (GPU mode) run on CUDA
mmcv_ops_ok() {
    "${PY}" - "${MODE}" <<'EOF' >/dev/null 2>&1
import sys
import torch
from mmcv.ops.multi_scale_deform_attn import (
    MultiScaleDeformableAttnFunction, multi_scale_deformable_attn_pytorch)
if sys.argv[1] == 'gpu':
    dev = torch.device('cuda')
    shapes = torch.tensor([[4, 4]], device=dev)
    value = torch.rand(1, 16, 2, 8, device=dev)
    loc = torch.rand(1, 5, 2, 1, 2, 2, device=dev)
    weights = torch.rand(1, 5, 2, 1, 2, device=dev).softmax(-1)
    out = MultiScaleDeformableAttnFunction.apply(
        value, shapes, torch.tensor([0], device=dev), loc, weights, 64)
    ref = multi_scale_deformable_attn_pytorch(value, shapes, loc, weights)
    assert torch.allclose(out, ref, atol=1e-4)
EOF
}

pip_local() {
    if [ -z "${WHEELS}" ]; then
        echo "missing packages ($*) and no --wheels directory to install them from" >&2
        return 1
    fi
    "${PY}" -m pip install --disable-pip-version-check -q --no-index \
        --find-links "${WHEELS}" "$@"
}

mapfile -t NEED < <(missing "${PACKAGES[@]}")
if [ "${#NEED[@]}" -gt 0 ]; then
    echo "installing from ${WHEELS:-?}: ${NEED[*]}"
    pip_local "${NEED[@]}"
fi
MMCV_MODE="compiled CUDA ops"
[ "${MODE}" = cpu ] && MMCV_MODE="compiled ops (CPU mode)"
if ! mmcv_ops_ok; then
    wheel="$(ls "${WHEELS:-/nonexistent}"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)"
    if [ -n "${wheel}" ]; then
        "${PY}" -m pip install -q --no-index --find-links "${WHEELS}" --force-reinstall --no-deps "${wheel}" || true
    fi
fi
if ! mmcv_ops_ok; then
    sdist="$(ls "${WHEELS:-/nonexistent}"/mmcv-2.1.0.tar.gz 2>/dev/null | head -n1 || true)"
    if [ -z "${sdist}" ]; then
        echo "mmcv 2.1.0 with ops is not installed and ${WHEELS:-no wheel dir} holds neither a matching wheel nor mmcv-2.1.0.tar.gz" >&2
        exit 1
    fi
    build() {
        MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" timeout "$1" "${PY}" -m pip install \
            --disable-pip-version-check -q --no-index --find-links "${WHEELS}" \
            --no-build-isolation --force-reinstall --no-deps "${sdist}"
    }
    if FORCE_CUDA=1 build "${MMCV_BUILD_TIMEOUT}" && mmcv_ops_ok; then
        MMCV_MODE="compiled CUDA ops (built here from ${sdist##*/})"
    else
        echo "mmcv's CUDA ops could not be built within ${MMCV_BUILD_TIMEOUT} s: building CPU ops only"
        FORCE_CUDA=0 build 1800
        export MMGEM_PURE_PYTORCH_OPS=1
        MMCV_MODE="FALLBACK: mmcv with CPU ops only; mmcv's pure-PyTorch multi-scale deformable attention and mmdet's PyTorch focal loss ran on CUDA (CUDA ops not built within ${MMCV_BUILD_TIMEOUT} s)"
    fi
fi
note "- mmcv: ${MMCV_MODE}"
note "- packages: $("${PY}" -c 'import mmcv, mmdet, mmengine, cvxpy; print(f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmengine {mmengine.__version__}, cvxpy {cvxpy.__version__}")')"

# ----------------------------------------------------------------------
step "3/5 data"
DATA="${OUT}/mini_uodb"
if [ ! -f "${DATA}/medical/annotations/test.json" ]; then
    "${PY}" tools/misc/make_mini_uodb.py --out "${DATA}" --scale tiny --seed 0 >/dev/null
fi
echo "tiny mini-UODB in ${DATA}"

# ----------------------------------------------------------------------
train() {  # train NAME [--amp]: tools/train.py on the tiny config
    local name="$1"
    local amp="${2:-}"
    local work="${OUT}/${name}"
    local opts=(
        "train_dataloader.dataset.data_root=${DATA}/"
        "val_dataloader.dataset.data_root=${DATA}/"
        "test_dataloader.dataset.data_root=${DATA}/"
        "train_cfg.max_iters=${ITERS}" "train_cfg.val_interval=${ITERS}"
        "default_hooks.logger.interval=1"
        "default_hooks.checkpoint.interval=${ITERS}"
        "param_scheduler=[]"
    )
    if [ "${MODE}" = cpu ]; then
        opts+=(val_cfg=None val_dataloader=None val_evaluator=None)
    fi
    local args=()
    if [ "${amp}" = --amp ]; then
        # mmdet's --amp asks for AmpOptimWrapper with dynamic loss scaling;
        # bf16 needs no scaling (on CPU GlobalNormAmpOptimWrapper turns it off)
        args=(--amp)
        opts+=(optim_wrapper.dtype=bfloat16)
    fi
    rm -rf "${work}"
    local t0
    t0=$(date +%s)
    "${PY}" tools/train.py "${CONFIG}" --work-dir "${work}" "${args[@]}" \
        --cfg-options "${opts[@]}" > "${work}.log" 2>&1 || {
        tail -n 40 "${work}.log" >&2
        return 1
    }
    "${PY}" - "${work}" "${name}" "$(( $(date +%s) - t0 ))" "${ITERS}" <<'EOF' >> "${SUMMARY}"
import glob, json, math, sys
work, name, seconds, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = []
for path in glob.glob(f'{work}/*/vis_data/scalars.json'):
    with open(path) as f:
        rows += [json.loads(line) for line in f if '"loss"' in line]
losses = [r['loss'] for r in rows]
if len(losses) != iters or not all(math.isfinite(v) for v in losses):
    sys.exit(f'{name}: expected {iters} finite losses, got {losses}')
times = sorted(r['time'] for r in rows[1:]) or [float('nan')]
print(f'- {name}: {iters} iterations in {seconds} s (median {times[len(times) // 2]:.3f} '
      f's/iter after the first), loss {losses[0]:.4f} -> {losses[-1]:.4f}')
EOF
    local wrapper
    wrapper="$(grep -o 'becomes [A-Za-z]*OptimWrapper' "${work}.log" | head -n1 | cut -d' ' -f2 || true)"
    if [ -z "${wrapper}" ]; then
        wrapper="$([ "${amp}" = --amp ] && echo AmpOptimWrapper || echo GlobalNormOptimWrapper)"
    fi
    sed -i '$ s/$/; '"${wrapper}"'/' "${SUMMARY}"
    tail -n 1 "${SUMMARY}"
}

step "4/5 training: tiny GEM-DINO, ${ITERS} iterations, fp32 and bf16 AMP (${DEVICE})"
train fp32
train bf16-amp --amp

# ----------------------------------------------------------------------
step "5/5 MoE layer benchmark (${DEVICE})"
BENCH=(--device "${DEVICE}" --out "${OUT}/moe_layer_${DEVICE}.md")
if [ "${MODE}" = cpu ]; then
    # the script's path, not the numbers: two routers (the GPU run times all of them)
    BENCH+=(--batch-sizes 2 --queries 40 --dn-queries 8 --hidden 64 --warmup 1 --repeats 2
            --routers gem moe)
fi
"${PY}" tools/benchmark/moe_layer.py "${BENCH[@]}" > "${OUT}/moe_layer.log" 2>&1 || {
    tail -n 40 "${OUT}/moe_layer.log" >&2
    exit 1
}
note ""
note "MoE layer benchmark (tools/benchmark/moe_layer.py ${BENCH[*]}):"
note ""
grep '^|' "${OUT}/moe_layer_${DEVICE}.md" >> "${SUMMARY}"
grep '^|' "${OUT}/moe_layer_${DEVICE}.md"

note ""
note "All steps passed in $(( $(date +%s) - START )) s."
echo "summary: ${SUMMARY}"
