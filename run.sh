#!/usr/bin/env bash
# One entry point for a fresh machine (only python3 and pip needed):
#   bash run.sh demo   set up .venv, then run the main job on the bundled default (SciFact)
#   bash run.sh test   set up .venv (and chromium for the browser test), then lint (ruff) and run the
#                      test suite (what .ci/run calls)
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

# The real-browser test of the serve page (tests/test_serve.py) drives Debian's chromium through its
# chromedriver. Installed here when missing and allowed (root, or sudo without a password), quietly;
# otherwise the suite goes on and that test skips (under CI=true it fails instead).
browser_deps() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  local sudo="" log
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      echo "run.sh: chromium/chromedriver missing and no root: the browser test will skip (fail under CI=true)" >&2
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: chromium/chromedriver missing and no apt-get: the browser test will skip (fail under CI=true)" >&2
    return 0
  fi
  log=$(mktemp -t run.sh-apt.XXXXXX)
  echo "run.sh: installing chromium and chromium-driver with apt-get for the browser test (log: $log)" >&2
  if $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >>"$log" 2>&1; then
    rm -f "$log"
  else
    echo "run.sh: apt-get could not install them (see $log): the browser test will skip (fail under CI=true)" >&2
  fi
}

# Nothing downloads models or data at run time.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/python" -m dupmae_ir.demo "$@" ;;
  test) setup; browser_deps; "$VENV/bin/ruff" check . && exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: bash run.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
