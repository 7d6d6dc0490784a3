#!/usr/bin/env bash
# Set up what the main job needs (if needed: `scripts/setup.sh main`, no test tools) and run
# the main job on the embedded default (Fashion-MNIST): the quick study, which trains (or
# loads) its teacher, trains the known methods, searches relation terms on top of KD
# (fidelity ladder, refinement around the best anchors), re-runs the leaders with more seeds,
# then prints the best composition, the verdict (did the search beat the known methods, over
# the seeds both ran) and where the exported config and the plots are. Under 10 minutes on 2
# CPU cores. Running it again resumes the same study.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" main
cd "$ROOT"
RELKD="${RELKD_VENV:-$ROOT/.venv}/bin/relkd"
"$RELKD" study run studies/fmnist_quick.yaml "$@"
