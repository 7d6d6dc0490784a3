#!/usr/bin/env bash
# One-time (and fast on re-runs) set-up of relkd on a Debian machine: Debian packages where apt
# is usable, then a local virtual environment with relkd installed in editable mode.
#   bash scripts/setup.sh main   what the main job needs (scripts/demo.sh): Python venv support and
#                                Fashion-MNIST from Debian; relkd and its dependencies, no extra
#   bash scripts/setup.sh [test] what the tests need too (scripts/test.sh, the default): Chromium
#                                for the report test, PostgreSQL for the distributed tests, and
#                                relkd's test extra (pytest, hypothesis, psycopg, timm, optuna-dashboard)
# Running main after test keeps the test set-up (nothing reinstalled); test after main adds to it.
#   RELKD_VENV   where the virtual environment lives (default: .venv in the repository)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RELKD_VENV:-$ROOT/.venv}"
say() { echo "[relkd setup] $*" >&2; }
MODE="${1:-test}"
case "$MODE" in
  main|test) ;;
  *) say "usage: bash scripts/setup.sh [main|test] (got '$MODE')"; exit 2;;
esac

# --- Debian packages --------------------------------------------------------------------
APT=""
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then APT="apt-get"; elif sudo -n true 2>/dev/null; then APT="sudo apt-get"; fi
fi
ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0;; *) return 1;; esac; }
need=()
python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
PYTHON=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then PYTHON="$candidate"; break; fi
done
[ -n "$PYTHON" ] || need+=(python3 python3-venv python3-pip)
# The tests that need the next three are skipped without them locally, and fail under CI=true.
# The main job needs only the first (and downloads it without the Debian package).
missing_components() {
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || echo dataset-fashion-mnist
  [ "$MODE" = test ] || return 0
  # Headless Chromium: the tests load the HTML report in a real browser.
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || echo chromium
  # PostgreSQL server binaries: the distributed tests start a throw-away server.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || echo postgresql
}
mapfile -t -O "${#need[@]}" need < <(missing_components)
if [ ${#need[@]} -gt 0 ]; then
  if [ -n "$APT" ]; then
    say "installing Debian packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive $APT update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $APT install -y -qq "${need[@]}" >/dev/null
  else
    say "apt is not usable here; not installing: ${need[*]} (Fashion-MNIST can also come from --data-dir / RELKD_DATA_DIR)"
  fi
fi
still=$(missing_components | tr '\n' ' ')
if [ -n "$still" ]; then
  if ci; then say "CI=true and these Debian packages are missing: $still(the tests that need them would not run)"; exit 1; fi
  if [ "$MODE" = test ]; then
    say "missing: $still; the tests that need them will be skipped (listed in pytest's summary)"
  else
    say "missing: $still; the main job reads Fashion-MNIST from --data-dir / RELKD_DATA_DIR or downloads it"
  fi
fi
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then PYTHON="$candidate"; break; fi
  done
fi
[ -n "$PYTHON" ] || { say "need Python >= 3.11 with the venv module"; exit 1; }

# --- virtual environment ----------------------------------------------------------------
# One stamp per mode, each the hash of what it installed from; the test set-up includes the main one.
want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
current() { [ -f "$VENV/.relkd-setup-$1" ] && [ "$(cat "$VENV/.relkd-setup-$1")" = "$want" ]; }
if { current test || { [ "$MODE" = main ] && current main; }; } \
    && "$VENV/bin/python" -c 'import relkd, torch, torchvision' 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
if [ "$MODE" = test ]; then target="$ROOT[test]" what="relkd, its dependencies and its test extra"
else target="$ROOT" what="relkd and its dependencies"; fi
say "installing $what into $VENV (the first time downloads torch, a few GB)"
# The machine's pip configuration may point --find-links at a CPU-only torch wheel that
# does not work with the registry's torchvision; install from the registry alone so pip
# picks a matching torch/torchvision pair.
env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip install -q --upgrade pip
env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip install -q -e "$target"
"$VENV/bin/python" -c 'import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)' \
  || { say "torch and torchvision do not work together in $VENV"; exit 1; }
rm -f "$VENV/.relkd-setup-stamp"  # the single stamp of earlier versions of this script
echo "$want" > "$VENV/.relkd-setup-$MODE"
say "done"
