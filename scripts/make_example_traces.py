"""Record the example traces shipped in assets/traces/ (each opens with one click in its tab, no model needed).

    .venv/bin/python scripts/make_example_traces.py

Each is a real run of the embedded model (or the shipped diffusion model) through the same code path as the
app, written as the app exports it (the trace plus its tokens' text), and listed in assets/traces/index.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specviz.models import ModelStore  # noqa: E402
from specviz.runs import prepare_run  # noqa: E402
from specviz.runs.lattice import prepare_lattice_run  # noqa: E402
from specviz.settings import LatticeSettings, RunSettings  # noqa: E402
from specviz.textio import encode_prompt, trace_file_dict  # noqa: E402

OUT = ROOT / "assets" / "traces"
CODE_PROMPT = json.loads((ROOT / "assets" / "examples.json").read_text())[0]["prompt"]

# (file, label, tab kind, prompt, settings)
EXAMPLES = [
    ("eagle-sampled.json", "EAGLE tree under sampling (temperature 0.8): rejections and residual draws",
     "speculative", "Write a short poem about the sea, in four lines.",
     {"method": "eagle", "max_new_tokens": 48, "temperature": 0.8, "top_p": 1.0, "seed": 7}),
    ("retrieval-greedy.json", "Retrieval drafts on a code rewrite (greedy): long accepted runs",
     "speculative", CODE_PROMPT, {"method": "retrieval", "max_new_tokens": 64, "temperature": 0.0}),
    ("auto-greedy.json", "auto (n-gram + corpus, cost-aware) on the same code rewrite (greedy)",
     "speculative", CODE_PROMPT, {"method": "auto", "max_new_tokens": 64, "temperature": 0.0}),
    ("diffusion-threshold.json", "Diffusion, threshold schedule (toy model): several cells per step",
     "diffusion", "How do I keep basil alive on a kitchen windowsill?",
     {"method": "diffusion", "schedule": "threshold", "threshold": 0.4, "block_size": 8, "gen_length": 32}),
    ("jacobi.json", "Jacobi decoding of the embedded model (greedy): the AR model fills a lattice",
     "diffusion", "Write the word 'hello' ten times.", {"method": "jacobi", "model": "", "gen_length": 32}),
]


def record(store, kind: str, prompt: str, settings: dict) -> dict:
    if kind == "speculative":
        run = prepare_run(store, RunSettings.from_dict(settings))
        tokenizer = run.target.tokenizer
    else:
        run = prepare_lattice_run(store, LatticeSettings.from_dict(settings))
        tokenizer = run.tokenizer
    decoder = run.decoder(np.asarray(encode_prompt(tokenizer, prompt)), record=True)
    for _ in decoder.steps():
        pass
    trace = decoder.trace()
    print(f"  {trace.method}: {len(trace.steps)} steps, {trace.output_ids.shape[0]} tokens, {trace.summary()}")
    return trace_file_dict(trace, tokenizer, prompt)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    store = ModelStore()
    index = []
    for name, label, kind, prompt, settings in EXAMPLES:
        print(name)
        d = record(store, kind, prompt, settings)
        (OUT / name).write_text(json.dumps(d, separators=(",", ":")))
        index.append({"file": name, "label": label, "kind": kind, "prompt": prompt})
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
