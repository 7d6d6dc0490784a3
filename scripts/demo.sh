#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
RELKD="${RELKD_VENV:-$ROOT/.venv}/bin/relkd"
"$RELKD" list
"$RELKD" show-config rkd+kd
"$RELKD" check rkd+kd
