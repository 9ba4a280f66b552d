#!/usr/bin/env bash
# Test-time evaluation beyond the per-cell anchors, on the cifar10-cpu suite's trained models:
# error against test batch size, continual adaptation over the 15 corruptions, calibration.
#
#   results/tta-cifar10-cpu/run.sh SUITE_WORK [METHOD ...]     (e.g. vanilla augmix metabn)
#
# SUITE_WORK is the work directory of a `run --preset cifar10-cpu` on the CIFAR-10 JPEG copy
# (scripts/queue/suite1.sh uses /work/queue/work); each METHOD's seed-0 run must be finished
# there. DATA (default npy:cifar10-jpeg-copy) is the same data SPEC; TTA (default
# /work/queue/tta) receives two corrupted sets and copies of the runs (an evaluation locks its
# run directory and appends to it, so the suite's own runs are left untouched). Each evaluated
# copy's small files (config, env, metrics, eval.jsonl, per_image.npz, done; no weights) go to
# RESULTS/records/ (RESULTS defaults to this directory), and the tables are rebuilt from every
# such record there, so methods evaluated in different sessions (a model exists only in the
# session that trained it) end up in one table: batch-size/ and continual/ (report.md,
# cells.csv, summary.json, plots/). The seed-0 vanilla and Meta-BN rows come from the reports
# in earlier/ (their per-model records were never committed: they went to an ignored folder),
# so those two models have per-cell rows there but no per-image results (no intervals or
# reliability diagrams of theirs in the rebuilt reports; earlier/continual/plots keeps theirs).
# SEED (default 0) picks the training seed of the models; the sets are the same for every seed.
# Resumable: evaluate skips finished rows. Sets, all severity 5, seed 0, class-balanced test
# images:
#   c5sub  5 corruptions x 400 images (gaussian noise, defocus blur, fog, contrast, JPEG):
#          none, bn, bn:prior=16 (Schneider et al. 2020: the source statistics weigh as 16
#          test images), tent at test batches 1, 2, 4, 16, 64, 200 (the batch-size table;
#          bn:prior=16 joined after seed 0 of vanilla, Meta-BN and AugMix were evaluated)
#   c5all  the 15 corruptions x 400 images at the preset's test batch (100): none, bn, tent per
#          cell with reset, and bn, tent as one continual stream without reset (CoTTA's setting)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SUITE_WORK [METHOD ...]" >&2; exit 2; }
work=$1; shift
methods=("$@")  # none: only rebuild the tables from the records
DATA=${DATA:-npy:cifar10-jpeg-copy}
LABEL=${LABEL:-CIFAR-10, JPEG copy}
TTA=${TTA:-/work/queue/tta}
N=${N:-400}  # test images per cell
SEED=${SEED:-0}
PY=${PY:-.venv/bin/python}
HERE=$(cd "$(dirname "$0")" && pwd)
RESULTS=${RESULTS:-$HERE}
SMALL=(config.json env.json metrics.jsonl eval.jsonl per_image.npz done)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mb() { $PY -m metabn_bench "$@"; }

runs=()
for m in "${methods[@]+"${methods[@]}"}"; do
  run=$(ls -d "$work"/train/"$m"-s"$SEED"-* 2>/dev/null | head -1 || true)
  if [ -z "$run" ] || [ ! -e "$run/done" ]; then
    echo "$m seed $SEED is not trained yet in $work/train; run this again once it is" >&2; exit 3
  fi
  runs+=("$run")
done
mkdir -p "$TTA" "$RESULTS/records"
if [ "$RESULTS" != "$HERE" ] && [ -d "$HERE/records" ]; then  # the records committed so far
  cp -rn "$HERE/records"/. "$RESULTS/records"/
fi
sub=(gaussian_noise defocus_blur fog contrast jpeg_compression)
[ ${#runs[@]} -eq 0 ] || [ -e "$TTA/c5sub/manifest.json" ] || mb corrupt --dataset "$DATA" --label "$LABEL" --out "$TTA/c5sub" \
  --severities 5 --n "$N" --seed 0 --corruptions "$(IFS=,; echo "${sub[*]}")" --device cpu
[ ${#runs[@]} -eq 0 ] || [ -e "$TTA/c5all/manifest.json" ] || mb corrupt --dataset "$DATA" --label "$LABEL" --out "$TTA/c5all" \
  --severities 5 --n "$N" --seed 0 --device cpu
for run in "${runs[@]+"${runs[@]}"}"; do
  name=$(basename "$run")
  for kind in sweep cells cont; do
    d=$TTA/runs/$name-$kind
    if [ ! -d "$d" ]; then  # the checkpoint and config only, not the suite's evaluation rows
      mkdir -p "$d.tmp" && cp -r "$run"/. "$d.tmp"/ && rm -f "$d.tmp"/eval.jsonl "$d.tmp"/per_image.npz
      rm -rf "$d.tmp"/.eval-journal "$d.tmp"/.lock && mv "$d.tmp" "$d"
    fi
  done
  mb evaluate "$TTA/runs/$name-sweep" --corrupted "$TTA/c5sub" --adapt none --adapt bn \
    --adapt bn:prior=16 --adapt tent --batch-sizes 1,2,4,16,64,200 --device cpu
  mb evaluate "$TTA/runs/$name-cells" --corrupted "$TTA/c5all" --adapt none --adapt bn --adapt tent \
    --batch-size 100 --device cpu
  mb evaluate "$TTA/runs/$name-cont" --corrupted "$TTA/c5all" --adapt bn --adapt tent \
    --stream continual --reset never --batch-size 100 --device cpu
  for kind in sweep cells cont; do  # the record: copied under a temporary name, then renamed
    rec=$RESULTS/records/$name-$kind
    rm -rf "$rec.tmp" && mkdir -p "$rec.tmp"
    for f in "${SMALL[@]}"; do [ ! -e "$TTA/runs/$name-$kind/$f" ] || cp "$TTA/runs/$name-$kind/$f" "$rec.tmp/"; done
    rm -rf "$rec" && mv "$rec.tmp" "$rec"
  done
done
shopt -s nullglob
sweeps=("$RESULTS"/records/*-sweep "$HERE"/earlier/batch-size)
streams=("$RESULTS"/records/*-cells "$RESULTS"/records/*-cont "$HERE"/earlier/continual)
# Two reports: the batch-size sweep (5 cells) and the per-cell vs continual runs (15 cells).
for part in batch-size continual; do
  if [ $part = batch-size ]; then set -- "${sweeps[@]}"; else set -- "${streams[@]}"; fi
  [ $# -gt 0 ] || continue
  mkdir -p "$RESULTS/$part"
  mb report "$@" --format markdown --out "$RESULTS/$part/report.md" --plots "$RESULTS/$part/plots"
  mb report "$@" --format csv --out "$RESULTS/$part/cells.csv"
  mb report "$@" --format json --out "$RESULTS/$part/summary.json"
done
echo "tables: $RESULTS/{batch-size,continual}/ (report.md, cells.csv, summary.json, plots/)"
