"""Build the shipped retrieval corpus: the embedded model's own answers to the project's prompt set.

REST-style retrieval works best on text that sounds like the model being
accelerated, so the corpus is self-generated: SmolLM2-135M-Instruct (Apache-2.0)
answers `assets/prompts/selfdistill_prompts.jsonl` (prompts written for this
project, disjoint from Spec-Bench), greedily. The output is ours to ship.

    .venv/bin/python scripts/build_corpus.py [--max-new-tokens 256] [--batch 16]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from specviz.models.loading import load_embedded  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", default=str(ROOT / "assets/prompts/selfdistill_prompts.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "assets/corpus/selfgen_smollm2.jsonl"))
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    loaded = load_embedded()
    model, tok = loaded.model, loaded.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(line) for line in open(args.prompts, encoding="utf-8") if line.strip()]
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(rows), args.batch):
        chunk = rows[i : i + args.batch]
        texts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                         add_generation_prompt=True) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        for r, ids in zip(chunk, gen[:, enc["input_ids"].shape[1]:]):
            text = tok.decode(ids, skip_special_tokens=True).strip()
            out.append({"id": r["id"], "category": r["category"], "text": text})
        print(f"{len(out)}/{len(rows)} answers, {time.perf_counter() - t0:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for row in out:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: {len(out)} documents in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
