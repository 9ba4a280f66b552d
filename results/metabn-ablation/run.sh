#!/usr/bin/env bash
# Train and evaluate one Meta-BN variant (or vanilla) of the ablation on CIFAR-10 (JPEG copy)
# with the CPU-sized recipe (the cifar10-cpu preset: ResNet-9 at width 16, 6 epochs, Nesterov
# SGD lr 0.2 cosine, batch 256, wd 5e-4, crop + flip), then evaluate it on the corrupted set.
# The committed table/ was made with the previous recipe (WRN-10-1, lr 0.1, batch 128); its
# files record that config. RECIPE=wrn10_1 re-runs that recipe.
#
#   results/metabn-ablation/run.sh VARIANT SEED [hparams.key=value ...]
#   e.g. results/metabn-ablation/run.sh joint 0 hparams.training_mode=joint
#
# Environment: DATA (dataset SPEC), WORK (run directories), CORRUPTED (corrupted set),
# PROTOCOLS (test-time protocols). One thread per process: on a shared 2-core machine two
# OpenMP threads per process trained 4x slower than one (measured).
set -euo pipefail
variant=$1
seed=$2
shift 2
DATA=${DATA:-npy:/work/data/cifar10}
WORK=${WORK:-/work/runs/metabn-cifar10-cpu/train}
CORRUPTED=${CORRUPTED:-/work/runs/metabn-cifar10-cpu/corrupted19}
PROTOCOLS=${PROTOCOLS:-none bn tent}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

method=metabn
[ "$variant" = vanilla ] && method=vanilla
run_dir=$WORK/$variant-s$seed
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
recipe=(--arch resnet9_16 --epochs 6 --set optim.lr=0.2 --set optim.batch_size=256)
[ "${RECIPE:-resnet9_16}" = wrn10_1 ] && recipe=(--arch wrn10_1 --epochs 6)
$PY -m metabn_bench train --method "$method" --dataset "$DATA" "${recipe[@]}" \
    --seed "$seed" --device cpu --no-progress --out "$run_dir" "${sets[@]}"
adapt=()
for p in $PROTOCOLS; do adapt+=(--adapt "$p"); done
$PY -m metabn_bench evaluate "$run_dir" --corrupted "$CORRUPTED" "${adapt[@]}" --device cpu \
    --no-progress --no-verify
echo "done: $run_dir"
