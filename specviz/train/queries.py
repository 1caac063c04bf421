"""Self-written queries (Magpie-style): the embedded model writes the user's side of the chat.

The templated prompt set covers the tasks but few topics, and a drafter trained on it agrees
with the target far less on unseen questions than on its own held-out data. An instruct model
given only the chat template up to the start of a user turn samples a plausible user message,
so sampling many of them yields questions as varied as the model's own chat data, at the cost
of a few dozen tokens each. An opener (the first words of the user message) steers each batch
toward a task type; the model picks the topic. The answers are then generated greedily.

The queries ship in `assets/prompts/self_queries.jsonl` (with the command that wrote them), so
the prompt set stays the same on every machine: sampling differs between torch builds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

SELF_QUERIES = Path(__file__).resolve().parents[2] / "assets" / "prompts" / "self_queries.jsonl"

# how a user message may begin: each batch continues one of these ("" leaves the model free); the
# openers steer the batch toward a task type, the model picks the topic
OPENERS = [
    "", "", "", "", "Write a Python function", "Write a program", "Explain", "Explain how", "What is", "What are",
    "How do I", "How does", "Why do", "Why is", "Can you help me", "Solve", "Calculate", "If a train", "A store sells",
    "Translate", "Summarize the following", "Summarize this article:", "Extract", "Write a short story",
    "Write a poem", "Write an email", "Write an essay", "Imagine you are", "Pretend to be", "Compare",
    "List", "Give me", "Describe", "What would happen if", "In what year", "Who was", "Tell me about",
    "Rewrite this sentence", "Help me plan", "Classify", "Here is a passage.",
]


def query_prefix(tokenizer) -> str:
    """The chat template (default system prompt) up to where the user's message begins."""
    marker = "\x00QUERY\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    return text[: text.index(marker)]


def _clean(text: str) -> str | None:
    """A usable query: finished, not trivially short or long, not a template fragment."""
    text = text.strip().strip('"').strip()
    if not 12 <= len(text) <= 1200 or "<|" in text or text.count("\n") > 30:
        return None
    return text


@torch.inference_mode()
def generate_queries(model, tokenizer, n: int, seed: int = 0, batch_size: int = 32, max_query_tokens: int = 96,
                     temperature: float = 0.8, top_p: float = 0.95, log=print) -> list:
    """About n distinct sampled user queries, [{id, category, prompt, opener}], seeded; batches
    cycle through OPENERS (a 135M model at temperature 1 writes too much nonsense). Queries the model did not finish within max_query_tokens are dropped."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    gen = torch.Generator(device="cpu").manual_seed(seed)
    seen, rows, t0 = set(), [], time.perf_counter()
    batch_no = 0
    while len(rows) < n and batch_no < 4 * (n // batch_size + 1):
        opener = OPENERS[batch_no % len(OPENERS)]
        ids = tokenizer(query_prefix(tokenizer) + opener, return_tensors="pt").input_ids.to(model.device)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        out = model.generate(ids.repeat(batch_size, 1), do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                             max_new_tokens=max_query_tokens, eos_token_id=end, pad_token_id=pad,
                             attention_mask=torch.ones_like(ids).repeat(batch_size, 1))
        for row in out[:, ids.shape[1]:].tolist():
            if end not in row:
                continue
            text = _clean(opener + tokenizer.decode(row[: row.index(end)], skip_special_tokens=True))
            if text is None or text.lower() in seen:
                continue
            seen.add(text.lower())
            rows.append({"id": f"selfq-{len(rows):05d}", "category": "self_query", "prompt": text, "opener": opener})
        batch_no += 1
        log(f"[queries] {len(rows)}/{n} after {batch_no} batches, {time.perf_counter() - t0:.0f} s")
    return rows[:n]


def save_queries(rows: list, path: Path, provenance: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps({"provenance": provenance}) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")


def load_queries(path: Path = SELF_QUERIES) -> list:
    if not path.exists():
        return []
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    return [json.loads(l) for l in lines[1:]]
