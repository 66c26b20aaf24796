#!/usr/bin/env bash
# The main job (`make demo`, after tools/install.sh): GEM end to end on this machine.
#
#   1. generate the `small` mini-UODB (6 synthetic domains, VOC-style layout, converted to COCO
#      JSON) under data/mini_uodb/, unless it is already there;
#   2. train tiny GEM-DINO with MMEngine's runner: GEMPlannerHook solves the plan before the first
#      iteration (LP with CVXPY, rounded to a capacity-aware map);
#   3. evaluate every domain separately (COCO box AP and AP50, DAMEX Table 1 layout);
#   4. print the plan table and the per-dataset AP table.
# Leaves in $WORK_DIR: the config, the log, the checkpoint iter_$DEMO_ITERS.pth, gem_plan.json,
# gem_plan.png, the routing heat maps moe_routing_test_*.png with their table moe_routing_test.md,
# and uodb_table.md.
#
# Environment: DEMO_ITERS (training iterations, default 600), WORK_DIR (default
# work_dirs/demo_gem), DATA_DIR (default data/mini_uodb), PYTHON (default python3).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
PY="${PYTHON:-python3}"
ITERS="${DEMO_ITERS:-600}"
DATA_DIR="${DATA_DIR:-data/mini_uodb}"
WORK_DIR="${WORK_DIR:-work_dirs/demo_gem}"
CONFIG=configs/gem/gem-dino-tiny_r18_mini-uodb.py
STEP="start"
trap 'echo "tools/demo.sh: FAILED in step: ${STEP}" >&2' ERR
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
START=$(date +%s)

step() {
    STEP="$*"
    echo
    echo "==> [mmgem demo] ${STEP}"
}

step "1/4 mini-UODB (small) in ${DATA_DIR}"
if [ -f "${DATA_DIR}/mini_uodb.json" ] && [ -f "${DATA_DIR}/medical/annotations/test.json" ]; then
    echo "re-using the generated data in ${DATA_DIR}"
else
    "${PY}" tools/misc/make_mini_uodb.py --out "${DATA_DIR}" --scale small --seed 0
fi

step "2/4 train tiny GEM-DINO for ${ITERS} iterations (work dir ${WORK_DIR})"
rm -rf "${WORK_DIR}"
CFG_OPTS=(
    "train_dataloader.dataset.data_root=${DATA_DIR}/"
    "val_dataloader.dataset.data_root=${DATA_DIR}/"
    "test_dataloader.dataset.data_root=${DATA_DIR}/"
    "train_cfg.max_iters=${ITERS}" "train_cfg.val_interval=$((ITERS + 1))"
    "train_cfg.val_begin=$((ITERS + 1))"  # else the loop validates at its last iteration
    "default_hooks.checkpoint.interval=${ITERS}"
    "param_scheduler.1.end=${ITERS}" "param_scheduler.1.milestones=[$((ITERS * 3 / 4))]"
)
"${PY}" tools/train.py "${CONFIG}" --work-dir "${WORK_DIR}" --cfg-options "${CFG_OPTS[@]}"

step "3/4 evaluate each domain"
"${PY}" tools/test.py "${CONFIG}" "${WORK_DIR}/iter_${ITERS}.pth" --work-dir "${WORK_DIR}" \
    --cfg-options "${CFG_OPTS[@]}"

step "4/4 results"
"${PY}" - "${WORK_DIR}" <<'EOF'
import os.path as osp
import sys

from mmgem.planner import GEMPlan

work_dir = sys.argv[1]
print('GEM plan (datasets x experts, images per epoch):')
print(GEMPlan.load(osp.join(work_dir, 'gem_plan.json')))
print()
print('Per-dataset box AP of tiny GEM-DINO on mini-UODB (test split):')
print(open(osp.join(work_dir, 'uodb_table.md')).read())
EOF
IMAGES=("${DATA_DIR}"/signs/JPEGImages/*.jpg)
cat <<EOF

Done in $(( $(date +%s) - START )) s. In ${WORK_DIR}: $(cd "${WORK_DIR}" && find . -maxdepth 1 -type f -printf '%f\n' | sort | tr '\n' ' ')
and the training log under ${WORK_DIR}/<timestamp>/.

Detect objects in an image with this checkpoint (it also prints the highest-scoring boxes, drawn
or not: a ${ITERS}-iteration model often scores below the default --pred-score-thr 0.3):
  ${PY} tools/image_demo.py ${IMAGES[0]} ${CONFIG} \\
      --weights ${WORK_DIR}/iter_${ITERS}.pth --dataset signs --out-dir outputs --pred-score-thr 0.1

Real UODB (the 11 datasets' own downloads, converted, then 8 GPUs; see the README's Data section):
  python tools/dataset_converters/uodb2coco.py data/uodb_src --from native --out data/uodb --check
  bash tools/dist_train.sh configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb.py 8
  bash tools/dist_test.sh configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb.py \\
      work_dirs/gem-dino-4scale_r50_8xb2-36e_uodb/epoch_36.pth 8
  (or: mim train mmgem gem-dino-4scale_r50_8xb2-36e_uodb.py --gpus 8 --launcher pytorch)
EOF
