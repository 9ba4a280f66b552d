#!/usr/bin/env bash
# One run (METHOD, SEED) of a suite preset, trained, evaluated and recorded.
#
#   scripts/queue/suite1.sh METHOD SEED
#
# The suite preset (PRESET, default cifar10-cpu) is narrowed to one method and one seed in a
# derived YAML; the run directory name, config identity and run record are the suite's own, so
# `metabn-bench report` over the collected records gives the same table as one long `run`.
# Run it from the checkout root (or a snapshot of it). Environment:
#   Q        the queue directory, outside the checkout (default /work/queue): the derived presets,
#            the suite work directory (runs and the corrupted set) and the results go under it
#   DATA     the dataset SPEC (default npy:cifar10-jpeg-copy, relative to the current directory)
#   LABEL    the data source label (default "CIFAR-10, JPEG copy")
#   PRESET   a preset name or YAML file (default cifar10-cpu)
#   PY       the Python (default .venv/bin/python)
# The run record lands in $Q/out/METHOD-sSEED/run_records/. A finished run is skipped; an
# interrupted one resumes from its last checkpoint.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 METHOD SEED" >&2; exit 2; }
method=$1 seed=$2
Q=${Q:-/work/queue}
PRESET=${PRESET:-cifar10-cpu}
DATA=${DATA:-npy:cifar10-jpeg-copy}
LABEL=${LABEL:-CIFAR-10, JPEG copy}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$Q/presets"
derived=$Q/presets/$(basename "$PRESET" .yaml)-$method-s$seed.yaml  # PRESET: a name or a YAML file
$PY - "$PRESET" "$method" "$seed" "$derived" <<'PYEOF'
import sys
from pathlib import Path

import yaml

from metabn_bench.config import preset_dict

preset, method, seed, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
doc = preset_dict(preset)
# the suite's name (a shipped preset's, or its file's stem), not the derived file's
doc.setdefault("name", Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset)
if method not in doc["methods"]:
    sys.exit(f"method {method!r} is not in preset {preset!r}: {', '.join(doc['methods'])}")
doc["methods"] = [method]
doc["seeds"] = [seed]
doc.pop("method_seeds", None)  # it would give the method its other seeds back
tmp = out.with_suffix(".tmp")
tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
tmp.replace(out)
PYEOF
exec $PY -m metabn_bench run --preset "$derived" --device cpu \
    --work "$Q/work" --out "$Q/out/$method-s$seed" \
    --set "train.data.dataset=$DATA" --set "train.data.label=$LABEL"
