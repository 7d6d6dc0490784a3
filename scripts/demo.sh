#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default (Fashion-MNIST):
# train (or load) the default teacher, then distil the student with CE only, KD and RKD+KD.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
RELKD="${RELKD_VENV:-$ROOT/.venv}/bin/relkd"
SETTING=studies/fmnist_quick.yaml
"$RELKD" list presets
"$RELKD" teacher train --setting "$SETTING"
for config in none kd rkd+kd; do
  echo "== student with objective '$config'"
  "$RELKD" train --setting "$SETTING" --config "$config" --out "runs/demo/$config"
done
echo "metrics: runs/demo/*/metrics.json"
