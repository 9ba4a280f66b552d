#!/usr/bin/env bash
# Regenerate the Meta-BN ablation table from run records, and print the command lines of the
# evaluation-only controls still missing from the Meta-BN runs.
#
#   results/metabn-ablation/make_table.sh SUITE_RECORDS...
#
# SUITE_RECORDS: the suite's run_records/ folder(s) (its vanilla, augmix, metabn and
# augmix_metabn runs are the table's main rows). CONTROLS (default
# results/metabn-ablation/run_records), added when it holds records: the training controls of
# run.sh, and the Meta-BN runs' records refreshed after their control evaluations (a run found
# twice counts once, with the copy that holds more rows). The table
# (table.md, table.json; and the generic report: report.md, summary.json, cells.csv) goes to OUT
# (default results/metabn-ablation/table), replacing what is there.
#
# For every metabn / augmix_metabn record without the three evaluation-only controls
# (z = 0, z shuffled within the batch, static corrections; protocol none, test batch 100 as the
# preset), it prints the commands that evaluate them on the trained run in TRAIN (default
# /work/queue/work/train) on CORRUPTED (default <TRAIN>/../corrupted) and refresh its record
# into CONTROLS. Run them from the directory the suite ran in: the
# static control reads the run's training images through its dataset SPEC.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SUITE_RECORDS..." >&2; exit 2; }
controls=${CONTROLS:-results/metabn-ablation/run_records}
OUT=${OUT:-results/metabn-ablation/table}
TRAIN=${TRAIN:-/work/queue/work/train}
CORRUPTED=${CORRUPTED:-$(dirname "$TRAIN")/corrupted}
PY=${PY:-.venv/bin/python}
BATCH=${BATCH:-100}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
folders=()
for d in "$@"; do
  [ -d "$d" ] || { echo "'$d' is not a directory of run records" >&2; exit 2; }
  folders+=("$d")
done
compgen -G "$controls/*/config.json" >/dev/null && folders+=("$controls")

missing=()
for rec in $(for d in "$@"; do ls -d "$d"/metabn-s* "$d"/augmix_metabn-s* 2>/dev/null; done); do
  [ -f "$rec/eval.jsonl" ] || continue
  name=$(basename "$rec")
  refreshed="$controls/$name/eval.jsonl"
  have=0
  for c in zero-z shuffle-z static; do
    if grep -q "control=$c\"" "$rec/eval.jsonl" 2>/dev/null \
        || { [ -f "$refreshed" ] && grep -q "control=$c\"" "$refreshed"; }; then
      have=$((have + 1))
    fi
  done
  [ $have -eq 3 ] || missing+=("$name")
done

$PY -m metabn_bench analysis ablation "${folders[@]}" --out "$OUT" \
    --title "Meta-BN ablation (${PRESET:-cifar10-cpu} recipe)" \
    --note "recipe=${PRESET:-cifar10-cpu}" --note "records=${folders[*]}" >/dev/null
echo "wrote $OUT/table.md and $OUT/table.json"

if [ ${#missing[@]} -gt 0 ]; then
  echo
  echo "# Evaluation-only controls not yet evaluated (then run this script again):"
  for name in "${missing[@]}"; do
    echo "$PY -m metabn_bench evaluate $TRAIN/$name --corrupted $CORRUPTED" \
         "--adapt none:control=zero-z --adapt none:control=shuffle-z" \
         "--adapt none:control=static --batch-size $BATCH --device cpu --no-progress --no-verify" \
         "&& $PY -m metabn_bench analysis record $TRAIN/$name --results $(dirname "$controls")"
  done
fi
