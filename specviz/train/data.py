"""Self-distillation data: the embedded model answers the prompt set greedily, then one more
forward over each (prompt + answer) records the target features the drafters learn from.

- `generate_answers` batches greedy generation (left padding) and keeps ids, not text, so the
  drafters train on exactly the tokens the target produced.
- `record_features` runs the target over each full sequence and keeps, per token, the final
  hidden state (post-norm, what the LM head reads: EAGLE's and Medusa's input) and the hidden
  state entering decoder layer `exit_layer - 1` (the frozen part of the early-exit draft).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Sequence:
    id: str
    category: str
    prompt_ids: list
    answer_ids: list


def chat_ids(tokenizer, prompt: str) -> list:
    enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    ids = enc["input_ids"] if hasattr(enc, "keys") else enc
    return [int(i) for i in ids]


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int = 16, log=print) -> list:
    """Greedy answers for [{id, category, prompt}], as `Sequence`s (EOS kept when reached)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = [(p, chat_ids(tokenizer, p["prompt"])) for p in prompts]
    # similar lengths together: less padding per batch
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][1]))
    out: dict = {}
    t0, n_tokens = time.perf_counter(), 0
    for b in range(0, len(order), batch_size):
        batch = [encoded[i] for i in order[b : b + batch_size]]
        width = max(len(ids) for _, ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (_, ids) in enumerate(batch):
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention[r, width - len(ids) :] = 1
        gen = model.generate(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device),
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=eos, temperature=None, top_p=None, top_k=None)
        for r, (p, ids) in enumerate(batch):
            answer = gen[r, width:].tolist()
            if eos in answer:
                answer = answer[: answer.index(eos) + 1]
            n_tokens += len(answer)
            out[p["id"]] = Sequence(p["id"], p["category"], ids, answer)
        log(f"[data] {min(b + batch_size, len(order))}/{len(order)} prompts, {n_tokens} answer tokens, "
            f"{n_tokens / (time.perf_counter() - t0):.0f} tok/s")
    return [out[p["id"]] for p, _ in encoded]


def save_sequences(seqs: list, path: Path, provenance: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps({"provenance": provenance}) + "\n")
        for s in seqs:
            f.write(json.dumps(s.__dict__) + "\n")


def load_sequences(path: Path) -> tuple:
    lines = Path(path).read_text().splitlines()
    head = json.loads(lines[0])["provenance"]
    return [Sequence(**json.loads(l)) for l in lines[1:] if l.strip()], head


@dataclass
class Features:
    """Per-token training arrays for all sequences, concatenated (offsets delimit sequences)."""

    tokens: torch.Tensor  # [T] long
    final: torch.Tensor  # [T, H] fp16: post-norm last hidden state at each token
    exit_input: torch.Tensor | None  # [T, H] fp16: the input of the early exit's trained layer
    offsets: np.ndarray  # [S + 1]
    answer_start: np.ndarray  # [S]: index (within its sequence) of the first answer token


MAX_LEN = 2048  # tokens per recorded sequence


@torch.inference_mode()
def record_features(model, seqs: list, exit_layer: int | None, max_len: int = MAX_LEN, log=print) -> Features:
    """One target forward per sequence; hooks keep the hidden states the drafters need."""
    body = model.model
    grabbed: dict = {}
    hooks = [body.norm.register_forward_hook(lambda m, i, o: grabbed.__setitem__("final", o))]
    if exit_layer is not None:
        layer = body.layers[exit_layer - 1]
        hooks.append(layer.register_forward_pre_hook(
            lambda m, args, kwargs: grabbed.__setitem__("exit", (args[0] if args else kwargs["hidden_states"])),
            with_kwargs=True))
    toks, finals, exits, offsets, starts = [], [], [], [0], []
    t0 = time.perf_counter()
    try:
        for i, s in enumerate(seqs):
            ids = (s.prompt_ids + s.answer_ids)[:max_len]
            x = torch.tensor([ids], device=model.device)
            model.model(input_ids=x)
            toks.append(torch.tensor(ids))
            finals.append(grabbed["final"][0].half().cpu())
            if exit_layer is not None:
                exits.append(grabbed["exit"][0].half().cpu())
            offsets.append(offsets[-1] + len(ids))
            starts.append(len(s.prompt_ids))
            if (i + 1) % 100 == 0:
                log(f"[features] {i + 1}/{len(seqs)} sequences, {offsets[-1]} tokens, "
                    f"{offsets[-1] / (time.perf_counter() - t0):.0f} tok/s")
    finally:
        for h in hooks:
            h.remove()
    return Features(torch.cat(toks), torch.cat(finals), torch.cat(exits) if exits else None,
                    np.asarray(offsets), np.asarray(starts))
