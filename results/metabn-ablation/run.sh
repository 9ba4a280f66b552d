#!/usr/bin/env bash
# Train, evaluate and record one training control of the Meta-BN ablation.
#
#   results/metabn-ablation/run.sh VARIANT SEED [key=value ...]   (extra metabn hparams)
#
# The recipe is the suite preset's (PRESET, default cifar10-cpu: ResNet-9 at width 16, Nesterov
# SGD lr 0.2 cosine, batch 256, wd 5e-4, crop + flip; see its header), made by the suite's planner,
# so a control differs from the suite's `metabn` run of the same seed in its hparams only. It is
# evaluated on the suite's corrupted set under the preset's protocols (none, bn, tent) and test
# batch (100), and its run record (no weights) goes to RESULTS/run_records/VARIANT-sSEED/. A
# VARIANT/SEED whose record exists, with the same config identity and every cell, is skipped.
#
# Variants (name -> metabn hparams):
#   bound0         bound=0                                            corrections off (episodic)
#   joint          training_mode=joint                                no inner step
#   bound0_joint   bound=0 training_mode=joint                        corrections off, no inner step
#   plain_bn_loss  bound=0 training_mode=joint meta_test_stats=own    the same loss with plain BN:
#                  clean CE + proxy CE, each batch normalised with its own statistics
#   clean_proxy    proxy=clean                                        Meta-BN layers trained on
#                  clean data only (the meta-test view is the clean view)
#   per_channel    aux_net=per_channel
#   shared         aux_net=shared
#   post_hoc       training_mode=post_hoc    (add backbone_run=RUN to reuse a finished vanilla run)
# The main rows (vanilla, augmix, metabn, augmix_metabn) are the suite's runs, not made here.
#
# Environment:
#   DATA       the dataset SPEC the suite was run with (`--set train.data.dataset=...`); it is
#              part of every run's identity, so it must be the same string (required)
#   CORRUPTED  the suite's corrupted set, <suite work>/corrupted (required)
#   LABEL      the data source label the suite was run with (`--set train.data.label=...`, e.g.
#              "CIFAR-10, JPEG copy"), also part of the identity (default: none)
#   WORK       where the run directories go (default /work/runs/metabn-ablation/train)
#   RESULTS    where run_records/ goes (default results/metabn-ablation)
#   PRESET     the suite preset (default cifar10-cpu); PY the Python (default .venv/bin/python)
# One thread per process: on a shared 2-core machine two OpenMP threads per process trained 4x
# slower than one (measured).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 VARIANT SEED [key=value ...]" >&2; exit 2; }
variant=$1
seed=$2
shift 2
case $variant in
  bound0) hp=(bound=0) ;;
  joint) hp=(training_mode=joint) ;;
  bound0_joint) hp=(bound=0 training_mode=joint) ;;
  plain_bn_loss) hp=(bound=0 training_mode=joint meta_test_stats=own) ;;
  clean_proxy) hp=(proxy=clean) ;;
  per_channel) hp=(aux_net=per_channel) ;;
  shared) hp=(aux_net=shared) ;;
  post_hoc) hp=(training_mode=post_hoc) ;;
  *) echo "unknown variant '$variant'; valid: bound0, joint, bound0_joint, plain_bn_loss," \
       "clean_proxy, per_channel, shared, post_hoc" >&2; exit 2 ;;
esac
: "${DATA:?set DATA to the dataset SPEC the suite was run with, e.g. npy:DIR}"
: "${CORRUPTED:?set CORRUPTED to the suite corrupted set, <suite work>/corrupted}"
WORK=${WORK:-/work/runs/metabn-ablation/train}
RESULTS=${RESULTS:-results/metabn-ablation}
PRESET=${PRESET:-cifar10-cpu}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

args=()
for kv in "${hp[@]}" "$@"; do args+=(--hparam "$kv"); done
[ -n "${LABEL:-}" ] && args+=(--set "train.data.label=$LABEL")
exec $PY -m metabn_bench analysis control "$variant" "$seed" --preset "$PRESET" \
    --set "train.data.dataset=$DATA" --work "$WORK" --corrupted "$CORRUPTED" \
    --results "$RESULTS" --device cpu "${args[@]}"
