#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default (Fashion-MNIST): the quick
# study, which trains (or loads) its teacher, trains the known methods and searches relation
# terms on top of KD for at most 9 minutes, then prints the best composition and where the
# exported config and the plots are. Running it again resumes the same study.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
RELKD="${RELKD_VENV:-$ROOT/.venv}/bin/relkd"
"$RELKD" study run studies/fmnist_quick.yaml "$@"
