#!/usr/bin/env bash
# One entry point for a fresh machine (only python3 and pip needed):
#   bash run.sh demo   set up .venv, then run the main job on the bundled default (SciFact)
#   bash run.sh test   set up .venv, then run the test suite (what .ci/run calls)
#   bash run.sh setup  only set up .venv
set -euo pipefail
cd "$(dirname "$0")"
VENV=${DUPMAE_VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.dupmae-installed"
  if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    # CPU torch first: a bare 'torch' requirement with no torch installed pulls a multi-GB CUDA build.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]"
    touch "$stamp"
  fi
}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/python" -m dupmae_ir.demo "$@" ;;
  test) setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *) echo "usage: bash run.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
