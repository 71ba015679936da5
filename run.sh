#!/usr/bin/env bash
# One entry point for a fresh machine (only python3 and pip needed):
#   bash run.sh demo   set up .venv, then run the main job on the bundled default (SciFact)
#   bash run.sh test   set up .venv, then lint (ruff) and run the test suite (what .ci/run calls)
#   bash run.sh setup  only set up .venv
set -euo pipefail
cd "$(dirname "$0")"
VENV=${DUPMAE_VENV:-.venv}

# pip, minus the harmless "WARNING: Location '...' is ignored" lines that some pip configurations
# (extra file:// indexes without every project) print once per package. Everything else pip prints
# reaches stderr, and pip's exit status is kept (pipefail; the filter itself never fails).
pip_install() {
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v -E "^WARNING: Location '[^']*' is ignored: " >&2 || true; }
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.dupmae-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    echo "run.sh: installing dupmae-ir and its dependencies into $VENV (a few minutes the first time)" >&2
    # CPU torch first: a bare 'torch' requirement with no torch installed pulls a multi-GB CUDA build.
    pip_install "torch==2.13.0"
    pip_install -e ".[test]"
    touch "$stamp"
  fi
}

# Nothing downloads models or data at run time.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/python" -m dupmae_ir.demo "$@" ;;
  test) setup; "$VENV/bin/ruff" check . && exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: bash run.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
