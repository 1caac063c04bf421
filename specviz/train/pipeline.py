"""`python -m specviz train`: self-distillation data -> target features -> drafters -> assets + manifest.

Runs on a CPU or a CUDA GPU alike (the device only changes speed); the shipped drafters were
made by the command recorded in their manifest.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..models.loading import cache_dir, load_embedded
from ..models.trained import SHIPPED, MANIFEST, EMBEDDED_MODEL_ID, check_manifest, save_drafter, trained_kind
from .data import MAX_LEN, chat_ids, generate_answers, load_sequences, record_features, save_sequences
from .prompts import build_prompt_set
from .queries import SELF_QUERIES, generate_queries, save_queries
from .train import train_eagle, train_exit, train_medusa


def _labelled(args) -> str:
    return "answer and prompt tokens (after the chat header)" if args.loss_on_prompt else "answer tokens"


def _train_medusa(target, feats, args) -> tuple:
    module, stats = train_medusa(target, feats, n_heads=args.medusa_heads, epochs=args.medusa_epochs,
                                 on_prompt=args.loss_on_prompt, seed=args.seed)
    recipe = {"heads": args.medusa_heads, "epochs": args.medusa_epochs, "lr": 1e-3, "batch_positions": 1024,
              "labelled": _labelled(args),
              "loss": "soft CE to the target's distribution at t+k over the data's tokens, head k weighted 0.8^(k-1)"}
    return module, stats, recipe


def _train_eagle(target, feats, args) -> tuple:
    module, stats = train_eagle(target, feats, epochs=args.eagle_epochs, cls_weight=args.eagle_cls_weight,
                                unroll=args.eagle_unroll, cls_on_prompt=args.loss_on_prompt,
                                draft_vocab=args.draft_vocab, seed=args.seed)
    recipe = {"epochs": args.eagle_epochs, "lr": 5e-4, "sequences_per_batch": 8, "input_noise": 0.1,
              "unrolled_steps": args.eagle_unroll,
              "ranked_draft_vocabulary": f"{args.draft_vocab} most frequent data tokens (after the chat header)",
              "labelled": _labelled(args),
              "loss": f"per unrolled step: smooth-L1 on features (scaled by their std) + {args.eagle_cls_weight} x "
                      "soft CE of lm_head(predicted feature)"}
    return module, stats, recipe


def _train_exit(target, feats, args) -> tuple:
    module, stats = train_exit(target, feats, args.exit_layer, n_trained=1, epochs=args.exit_epochs, seed=args.seed)
    recipe = {"exit_layer": args.exit_layer, "trained_layers": 1, "epochs": args.exit_epochs, "lr": 2e-4,
              "sequences_per_batch": 8, "loss": "soft CE to the target's distribution at the same position"}
    return module, stats, recipe


@dataclass(frozen=True)
class Trainer:
    """How `specviz train` makes one kind of models.trained.TRAINED_KINDS:
    `train(target, feats, args) -> (module, TrainStats, recipe dict)`; `exit_features`: it reads the
    recorded features at the input of the exit layer (`--exit-layer`)."""

    train: Callable
    exit_features: bool = False


TRAINERS = {"eagle": Trainer(_train_eagle), "medusa": Trainer(_train_medusa), "exit": Trainer(_train_exit, True)}
KINDS = tuple(trained_kind(k).name for k in TRAINERS)  # the order of training


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def self_distillation_data(target, tokenizer, n_prompts: int | None, max_new_tokens: int, seed: int, log=print) -> tuple:
    """The embedded model's greedy answers to the prompt set, cached by (size, length, seed)."""
    prompts = build_prompt_set(seed=seed)
    if n_prompts:
        prompts = prompts[:n_prompts]
    path = cache_dir() / "train" / f"selfdistill-n{len(prompts)}-t{max_new_tokens}-s{seed}.jsonl"
    if path.exists():
        seqs, provenance = load_sequences(path)
        log(f"[data] reusing {path} ({len(seqs)} sequences)")
        return seqs, provenance
    # answers already generated for a smaller prompt set (same length and seed) are reused when the prompt is identical
    done, seconds_before = {}, 0.0
    for older in sorted(path.parent.glob(f"selfdistill-n*-t{max_new_tokens}-s{seed}.jsonl")):
        old_seqs, old_prov = load_sequences(older)
        seconds_before = max(seconds_before, float(old_prov.get("seconds", 0.0)))
        done.update({s.id: s for s in old_seqs})
    missing = [p for p in prompts if p["id"] not in done or done[p["id"]].prompt_ids != chat_ids(tokenizer, p["prompt"])]
    log(f"[data] {len(prompts) - len(missing)} answers reused, {len(missing)} to generate")
    t0 = time.perf_counter()
    fresh = {s.id: s for s in generate_answers(target, tokenizer, missing, max_new_tokens, batch_size=48, log=log)} if missing else {}
    seqs = [fresh.get(p["id"]) or done[p["id"]] for p in prompts]
    provenance = {
        "prompts": f"specviz.train.prompts.build_prompt_set(seed={seed}): {len(prompts)} prompts, our own templates "
                   "and word lists plus the 120 hand-written prompts of assets/prompts; summarisation passages and "
                   "long documents are the embedded model's own answers (assets/corpus); then the user queries the "
                   "embedded model wrote itself (assets/prompts/self_queries.jsonl). No Spec-Bench text.",
        "categories": sorted({p["category"] for p in prompts}),
        "n_prompts": len(prompts), "max_new_tokens": max_new_tokens, "decoding": "greedy, batched (left padding)",
        "generated_by": EMBEDDED_MODEL_ID, "seconds": round(seconds_before + time.perf_counter() - t0, 1),
    }
    save_sequences(seqs, path, provenance)
    return seqs, provenance


def write_queries(target, tokenizer, n: int, seed: int, device) -> int:
    t0 = time.perf_counter()
    rows = generate_queries(target, tokenizer, n, seed=seed)
    provenance = {
        "what": "user queries written by the embedded model itself: the chat template up to the user turn, plus an "
                "opener from specviz.train.queries.OPENERS, sampled at temperature 0.8, top-p 0.95; unfinished and "
                "duplicate queries dropped. No Spec-Bench text.",
        "generated_by": EMBEDDED_MODEL_ID, "n": len(rows), "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
        "hardware": hardware(device), "command": f"python -m specviz train --write-queries {n} --seed {seed}",
    }
    save_queries(rows, SELF_QUERIES, provenance)
    print(f"wrote {len(rows)} queries to {SELF_QUERIES} in {provenance['seconds']:.0f} s")
    return 0


def cached_features(target, seqs, exit_layer, tag: str):
    """Record the features once per (data, exit layer); later runs (other epochs, other drafters) reuse them.
    A grown prompt set reuses the features of an older file whose sequences are its first ones."""
    from .data import Features

    folder = cache_dir() / "train"
    path = folder / f"features-{tag}-exit{exit_layer}.pt"
    if path.exists():
        print(f"[features] reusing {path}")
        return Features(**torch.load(path, weights_only=False))
    rest = tag.split("-", 1)[1] if "-" in tag else ""
    older = None
    # an older file recorded for an early exit also serves a run without one (its exit inputs are dropped)
    pattern = f"features-n*-{rest}-exit{'*' if exit_layer is None else exit_layer}.pt"
    for candidate in sorted(folder.glob(pattern)):
        old = Features(**torch.load(candidate, weights_only=False))
        if exit_layer is None:
            old.exit_input = None
        m = len(old.answer_start)
        if m < len(seqs) and _same_tokens(old, seqs[:m]) and (older is None or m > len(older.answer_start)):
            older = old
    if older is None:
        feats = record_features(target, seqs, exit_layer)
    else:
        m = len(older.answer_start)
        print(f"[features] reusing the first {m} sequences' features, recording {len(seqs) - m}")
        fresh = record_features(target, seqs[m:], exit_layer)
        feats = Features(torch.cat([older.tokens, fresh.tokens]), torch.cat([older.final, fresh.final]),
                         None if older.exit_input is None else torch.cat([older.exit_input, fresh.exit_input]),
                         np.concatenate([older.offsets, fresh.offsets[1:] + older.offsets[-1]]),
                         np.concatenate([older.answer_start, fresh.answer_start]))
    torch.save(feats.__dict__, path)
    return feats


def _same_tokens(feats, seqs) -> bool:
    ids = [t for s in seqs for t in (s.prompt_ids + s.answer_ids)[:MAX_LEN]]
    return len(ids) == feats.tokens.shape[0] and torch.equal(feats.tokens, torch.tensor(ids, dtype=feats.tokens.dtype))


def run(args) -> int:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          args.device if args.device != "auto" else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = KINDS if args.drafters == "all" else tuple(k.strip() for k in args.drafters.split(","))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown drafter(s) {bad}; choose from {', '.join(KINDS)} or 'all'")
    out = Path(args.out) if args.out else SHIPPED[EMBEDDED_MODEL_ID]
    t_all = time.perf_counter()
    loaded = load_embedded(device, torch.float32)
    target = loaded.model.requires_grad_(False)
    if args.write_queries:
        return write_queries(target, loaded.tokenizer, args.write_queries, args.seed, device)
    seqs, provenance = self_distillation_data(target, loaded.tokenizer, args.prompts, args.max_new_tokens, args.seed)
    t0 = time.perf_counter()
    exit_layer = args.exit_layer if any(TRAINERS[k].exit_features for k in kinds) else None
    feats = cached_features(target, seqs, exit_layer,
                            f"n{len(seqs)}-t{args.max_new_tokens}-s{args.seed}")
    n_answer = int(sum(len(s.answer_ids) for s in seqs))
    print(f"[features] {feats.tokens.shape[0]} tokens ({n_answer} answer tokens) in {time.perf_counter() - t0:.0f} s")
    feats = _to_device(feats, device)

    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({
        "target": EMBEDDED_MODEL_ID,
        "data": {**provenance, "n_sequences": len(seqs), "n_tokens": int(feats.tokens.shape[0]),
                 "n_answer_tokens": n_answer, "features": "final hidden state after the last norm (fp32 in memory)"},
        "seed": args.seed,
        "hardware": hardware(device),
        "command": "python -m specviz train " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["train"]
        else "python -m specviz train " + " ".join(_args_to_cli(args)),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__,
    })
    drafters = manifest.setdefault("drafters", {})
    for kind in kinds:
        module, stats, recipe = TRAINERS[kind].train(target, feats, args)
        entry = save_drafter(out, kind, module.cpu())
        entry.update({"recipe": recipe, "training": stats.to_dict()})
        drafters[kind] = entry
        print(f"[{kind}] {entry['parameters']:,} parameters, {entry['bytes'] / 1e6:.1f} MB, "
              f"{stats.seconds:.0f} s, held-out top-1 agreement {stats.top1}")
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["total_seconds"] = round(time.perf_counter() - t_all, 1)
    manifest["total_bytes"] = sum(e["bytes"] for e in drafters.values())
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    problems = check_manifest(out)
    if problems:
        raise RuntimeError("; ".join(problems))
    print(f"wrote {out} ({manifest['total_bytes'] / 1e6:.1f} MB) in {manifest['total_seconds']:.0f} s")
    return 0


def _to_device(feats, device):
    if device.type == "cpu":
        # training reads features in fp32; convert once
        feats.final = feats.final.float()
        if feats.exit_input is not None:
            feats.exit_input = feats.exit_input.float()
        return feats
    feats.tokens, feats.final = feats.tokens.to(device), feats.final.to(device).float()
    if feats.exit_input is not None:
        feats.exit_input = feats.exit_input.to(device).float()
    return feats


def _args_to_cli(args) -> list:
    return [f"--drafters {args.drafters}", f"--prompts {args.prompts or 'all'}", f"--max-new-tokens {args.max_new_tokens}",
            f"--seed {args.seed}", f"--medusa-epochs {args.medusa_epochs}", f"--eagle-epochs {args.eagle_epochs}",
            f"--exit-epochs {args.exit_epochs}", f"--exit-layer {args.exit_layer}", f"--eagle-unroll {args.eagle_unroll}",
            f"--eagle-cls-weight {args.eagle_cls_weight}", f"--draft-vocab {args.draft_vocab}"] + (["--loss-on-prompt"] if args.loss_on_prompt else [])


def add_arguments(p) -> None:
    p.add_argument("--drafters", default="all", help=f"comma-separated: {', '.join(KINDS)} (default all)")
    p.add_argument("--out", default=None, help="output directory (default: the shipped assets/drafters/… directory)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--prompts", type=int, default=None, help="use only the first N prompts of the set")
    p.add_argument("--max-new-tokens", type=int, default=192, help="answer length for self-distillation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--medusa-heads", type=int, default=4)
    p.add_argument("--medusa-epochs", type=float, default=2.0)
    p.add_argument("--eagle-epochs", type=float, default=4.0)
    p.add_argument("--exit-epochs", type=float, default=1.0)
    p.add_argument("--eagle-unroll", type=int, default=2, choices=(1, 2),
                   help="2: also train on the drafter's own predicted features once (EAGLE-3's training-time test)")
    p.add_argument("--draft-vocab", type=int, default=16384,
                   help="EAGLE: ship the N most frequent data tokens as its ranked draft vocabulary (0: none)")
    p.add_argument("--eagle-cls-weight", type=float, default=0.5, help="weight of the token loss against the feature loss")
    p.add_argument("--loss-on-prompt", action=argparse.BooleanOptionalAction, default=True,
                   help="also learn from prompt tokens after the chat header (long prompts hold the model's own text)")
    p.add_argument("--write-queries", type=int, default=None, metavar="N",
                   help="only (re)write assets/prompts/self_queries.jsonl: N user queries sampled from the embedded "
                        "model itself (Magpie-style), which the prompt set then includes")
    p.add_argument("--exit-layer", type=int, default=8, help="layers kept by the distilled early exit (its top one is trained)")
