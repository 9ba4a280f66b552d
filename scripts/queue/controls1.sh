#!/usr/bin/env bash
# The evaluation-only controls of the Meta-BN ablation on one trained suite run, recorded.
#
#   scripts/queue/controls1.sh METHOD SEED          (METHOD: metabn or augmix_metabn)
#
# Evaluates the suite's finished run (METHOD, SEED) in $Q/work/train under protocol `none` with
# z = 0, z shuffled within the batch and static corrections (their mean over clean training
# images), on the suite's corrupted set at the preset's test batch (BATCH, default 100), then
# refreshes the run's record into $Q/out/metabn-ablation/run_records/ (the lane commits it to
# results/metabn-ablation/). It needs the checkpoint, which lives only on the machine that
# trained it: queue it right after the run (`suite1.sh METHOD SEED && controls1.sh METHOD SEED`).
# Skipped when the record already holds the three controls; exit 3 when the model is not on
# this machine. Evaluation skips rows it already has, so it resumes.
# Environment: Q (default /work/queue), BATCH, PY (default .venv/bin/python).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 METHOD SEED" >&2; exit 2; }
method=$1 seed=$2
case $method in
  metabn|augmix_metabn) ;;
  *) echo "method '$method' has no Meta-BN layers; valid: metabn, augmix_metabn" >&2; exit 2 ;;
esac
Q=${Q:-/work/queue}
BATCH=${BATCH:-100}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
for rec in "$Q/out/metabn-ablation/run_records/$method-s$seed"-*/eval.jsonl; do
  [ -f "$rec" ] || continue
  if grep -q 'control=zero-z"' "$rec" && grep -q 'control=shuffle-z"' "$rec" \
      && grep -q 'control=static"' "$rec"; then
    echo "$method seed $seed: controls already recorded in $(dirname "$rec")"
    exit 0
  fi
done
run=$(ls -d "$Q/work/train/$method-s$seed"-* 2>/dev/null | head -1 || true)
if [ -z "$run" ] || [ ! -e "$run/done" ] || [ ! -e "$run/model.pt" ]; then
  echo "the model of $method seed $seed is not in $Q/work/train (not trained yet, or trained" \
       "on another machine); run this again after training it here" >&2
  exit 3
fi
$PY -m metabn_bench evaluate "$run" --corrupted "$Q/work/corrupted" \
    --adapt none:control=zero-z --adapt none:control=shuffle-z --adapt none:control=static \
    --batch-size "$BATCH" --device cpu --no-progress --no-verify
exec $PY -m metabn_bench analysis record "$run" --results "$Q/out/metabn-ablation"
