#!/usr/bin/env bash
# A plain install makes every corruption: build the wheel, install it (no extras) into a fresh
# virtual environment outside the checkout, and corrupt a small synthetic set with all 19
# corruptions (the 15 of the benchmark and the 4 extras). Minutes: the venv installs torch.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/metabn-wheel-XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip build
"$work/venv/bin/python" -m build -q --wheel --outdir "$work/dist" . >/dev/null
"$work/venv/bin/pip" install -q "$work"/dist/metabn_bench-*.whl
cd "$work"  # nothing of the checkout on sys.path: the installed wheel is what runs
"$work/venv/bin/metabn-bench" corrupt --dataset synthetic --out "$work/set" --n 20 --extras \
    --no-progress --device cpu
"$work/venv/bin/python" - "$work/set/manifest.json" <<'PY'
import json, sys
files = [f for f in json.load(open(sys.argv[1]))["files"] if f not in ("labels", "clean", "labels.npy", "clean.npy")]
print(f"wheel install made {len(files)} corruption files: {', '.join(sorted(files))}")
sys.exit(0 if len(files) == 19 else 1)
PY
