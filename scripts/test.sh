#!/usr/bin/env bash
# Set up what the tests need (if needed: `scripts/setup.sh test`) and run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" test
cd "$ROOT"
exec "${RELKD_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
