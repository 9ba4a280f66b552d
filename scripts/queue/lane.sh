#!/usr/bin/env bash
# A worker of the background experiment queue: runs queue lines one after another.
#
#   scripts/queue/lane.sh N          (N names the lane's log; start one lane per core)
#
# Q (default /work/queue, outside the checkout) holds queue.txt (one shell command per line,
# run from the checkout root; '#' lines are skipped), done.txt (start and end lines with the exit
# status), logs/ and snap/. Each line runs in a snapshot of the checkout's HEAD taken when the
# line starts (git archive), so editing or committing in the checkout never changes a running
# experiment; the snapshot shares the checkout's .venv and sees the data as ./cifar10-jpeg-copy
# ($Q/cifar10-jpeg-copy, made by ../shared/data/cifar10/prepare.py).
# After each line, the run records it wrote under $Q/out are copied into the checkout (CHECKOUT,
# default the repository this script is in) and committed on their own; at start, the committed
# records are copied into $Q/out, where the suite takes a complete record as a finished run, so
# a session on another machine continues instead of retraining. plan.txt here is the queue of
# the current experiments: `cp scripts/queue/plan.txt $Q/queue.txt` on a new machine.
# `touch $Q/STOP` ends every lane after its line. A line may end with a cost comment, `# ~N min`
# (its CPU minutes on one free core, measured); with a deadline in $Q/deadline (a date that
# `date -d` reads, e.g. "21:40"), a lane takes the first line whose cost, times SLACK (default
# 1.5, for a shared machine), ends before it, leaves longer lines in the queue for a later
# session, and stops when none fits: a run killed at the end of a session is lost.
set -uo pipefail
lane=${1:?usage: $0 N}
Q=${Q:-/work/queue}
CHECKOUT=${CHECKOUT:-$(cd "$(dirname "$0")/../.." && pwd)}
mkdir -p "$Q/logs" "$Q/snap"
touch "$Q/queue.txt" "$Q/done.txt"

pop() {  # the first runnable line of queue.txt that fits the deadline, removed under a lock
  local left=""
  if [ -s "$Q/deadline" ]; then
    local end
    if end=$(date -d "$(cat "$Q/deadline")" +%s 2>/dev/null); then
      left=$((end - $(date +%s)))
    else
      echo "lane $lane: $Q/deadline holds '$(cat "$Q/deadline")', not a date; ignored" >&2
    fi
  fi
  flock "$Q/queue.lock" python3 - "$Q/queue.txt" "$left" "${SLACK:-1.5}" <<'PYEOF'
import re
import sys
from pathlib import Path

path, left, slack = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
lines = path.read_text().splitlines()
for i, line in enumerate(lines):
    if line.strip() and not line.lstrip().startswith("#"):
        cost = re.search(r"#\s*~(\d+(?:\.\d+)?)\s*min\s*$", line)
        if left and (int(left) <= 0 or cost and float(cost.group(1)) * 60 * slack > int(left)):
            continue  # would be killed at the end of the session: leave it for a later one
        print(line)
        rest = lines[:i] + lines[i + 1:]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(x + "\n" for x in rest))
        tmp.replace(path)
        break
PYEOF
}

snapshot() {  # a read-only copy of HEAD, made once per commit
  local sha dir
  sha=$(git -C "$CHECKOUT" rev-parse --short=12 HEAD)
  dir=$Q/snap/$sha
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir.tmp"
    git -C "$CHECKOUT" archive HEAD | tar -x -C "$dir.tmp"
    ln -s "$CHECKOUT/.venv" "$dir.tmp/.venv"
    ln -s "$Q/cifar10-jpeg-copy" "$dir.tmp/cifar10-jpeg-copy"
    mv "$dir.tmp" "$dir" 2>/dev/null || rm -rf "$dir.tmp"
  fi
  echo "$dir"
}

collect() {  # copy new or changed run records into the checkout and commit only those paths
  local src dst changed=()
  for src in "$Q"/out/*/run_records/*/; do
    [ -d "$src" ] || continue
    case $src in
      */metabn-ablation/*) dst=$CHECKOUT/results/metabn-ablation/run_records/$(basename "$src") ;;
      *) dst=$CHECKOUT/results/${PRESET:-cifar10-cpu}/run_records/$(basename "$src") ;;
    esac
    if ! diff -rq "$src" "$dst" >/dev/null 2>&1; then
      mkdir -p "$dst" && cp -r "$src"/. "$dst"/ && changed+=("$dst")
    fi
  done
  for src in "$Q"/out/tta-*/; do  # test-time tables (results/tta-*/run.sh with RESULTS=$Q/out/...)
    [ -d "$src" ] || continue
    dst=$CHECKOUT/results/$(basename "$src")
    mkdir -p "$dst" && cp -r "$src"/. "$dst"/
    # a record being written by a running line (NAME.tmp, renamed when complete) is not copied
    find "$dst" -name '*.tmp' -prune -exec rm -rf {} +
    [ -z "$(git -C "$CHECKOUT" status --porcelain -- "$dst")" ] || changed+=("$dst")
  done
  [ ${#changed[@]} -gt 0 ] || return 0
  flock "$Q/git.lock" sh -c 'cd "$0" && git add -- "$@" && git commit -q --only \
    -m "results: run records of $(for p in "$@"; do basename "$p"; done | tr "\n" " ")" -- "$@"' \
    "$CHECKOUT" "${changed[@]}" || echo "lane $lane: could not commit ${changed[*]}" >&2
}

seed_records() {  # committed records into $Q/out, so a run finished on another machine is skipped
  local rec name
  for rec in "$CHECKOUT"/results/${PRESET:-cifar10-cpu}/run_records/*/; do
    [ -e "$rec/done" ] || continue
    name=$(basename "$rec")
    mkdir -p "$Q/out/${name%-*}/run_records" && cp -rn "$rec" "$Q/out/${name%-*}/run_records/"
  done
  for rec in "$CHECKOUT"/results/metabn-ablation/run_records/*/; do
    [ -d "$rec" ] || continue
    mkdir -p "$Q/out/metabn-ablation/run_records" && cp -rn "$rec" "$Q/out/metabn-ablation/run_records/"
  done
}

seed_records
while [ ! -e "$Q/STOP" ]; do
  line=$(pop)
  [ -n "$line" ] || break
  dir=$(snapshot)
  log=$Q/logs/$(date -u +%Y%m%dT%H%M%S)-lane$lane.log
  echo "$(date -u +%FT%TZ) lane$lane start $(basename "$dir") $line" >> "$Q/done.txt"
  # the snapshot has no .git: its commit goes into every result's provenance this way
  (cd "$dir" && Q=$Q METABN_BENCH_COMMIT=$(basename "$dir") nice -n 5 bash -c "$line") > "$log" 2>&1
  rc=$?
  echo "$(date -u +%FT%TZ) lane$lane end rc=$rc $line" >> "$Q/done.txt"
  collect
done
echo "$(date -u +%FT%TZ) lane$lane stopped" >> "$Q/done.txt"
