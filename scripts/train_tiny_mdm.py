"""Train the shipped tiny masked-diffusion LM (assets/models/tiny-mdm/) on one CPU thread.

    PYTHONPATH=. .venv/bin/python scripts/train_tiny_mdm.py            # train, save, evaluate
    PYTHONPATH=. .venv/bin/python scripts/train_tiny_mdm.py --eval-only

Data: the embedded model's own answers (assets/corpus/selfgen_smollm2.jsonl) to the project's
prompts (assets/prompts/selfdistill_prompts.jsonl), paired by id and formatted as a chat.
Tokenizer: the embedded model's (SmolLM2), from the converted checkpoint in the specviz cache.

Objective (LLaDA / MDLM, written for this project): for each sequence draw t ~ U(0.05, 1), mask
every answer cell independently with probability t (a chat prompt stays visible, as in LLaDA's
SFT) and score the masked cells at their own positions (no shift) under full bidirectional
attention. The loss is the ELBO estimate  sum_{masked} CE / (t * n_answer), averaged over the
sequences of a step: per sequence that is, in expectation, the mean cross-entropy per answer
token; the 1/t weight makes lightly-masked sequences count as much as heavily-masked ones. The
plain mean cross-entropy over masked cells is printed beside it.

A quarter of the chat samples carry another document's prompt: the model then learns to give
some fluent answer to a prompt it does not know, which is every prompt a user types (without this,
unseen prompts got noticeably more word salad in a trial run). A quarter of all samples are
plain windows of the answers, without the chat template. Sequences are packed
into rows (each attends only to itself), so no compute goes to padding. The known ids' embeddings
start from the embedded model's own embeddings (their top principal directions), which speeds up
the first minutes; everything else starts from the usual random init.

Everything is seeded and runs in fp32 on one thread, so a rerun on the same software rebuilds the
same weights (wall time differs from machine to machine).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import string
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "assets" / "corpus" / "selfgen_smollm2.jsonl"
PROMPTS = ROOT / "assets" / "prompts" / "selfdistill_prompts.jsonl"
OUT = ROOT / "assets" / "models" / "tiny-mdm"

HP = dict(
    seed=0,
    hidden=192,
    layers=4,
    heads=4,
    kv_heads=2,
    max_positions=512,
    steps=1700,
    rows=8,  # each step: rows x row_len cells, packed with whole samples
    row_len=256,
    lr=2e-3,
    min_lr=2e-4,
    warmup=40,
    weight_decay=0.05,
    t_min=0.05,
    answer_min=16,  # chat samples keep the first L answer cells (EOS-padded), L ~ U[answer_min, answer_max]
    answer_max=96,
    plain_frac=0.25,  # share of samples that are plain text windows (no prompt, every cell maskable)
    plain_min=48,
    plain_max=128,
    prompt_swap=0.25,  # share of chat samples whose prompt is another document's
    unk_rate=0.02,  # visible inputs replaced by the unknown id, so unseen prompt tokens do no harm
    log_every=25,
    embed_init=True,  # known ids' embeddings start from the embedded model's (PCA to the hidden size)
)


def load_tokenizer():
    from transformers import AutoTokenizer

    from specviz.models.loading import EMBEDDED_CACHE_NAME, cache_dir, load_embedded

    path = cache_dir() / EMBEDDED_CACHE_NAME
    if not (path / "tokenizer.json").exists():
        load_embedded()  # converts the embedded GGUF once and writes the cache (about 30 s)
    return AutoTokenizer.from_pretrained(path)


def chat_prompt_ids(tokenizer, text: str) -> list:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def read_pairs() -> list:
    prompts = {}
    with open(PROMPTS, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                prompts[d["id"]] = d["prompt"]
    pairs = []
    with open(CORPUS, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                pairs.append((prompts[d["id"]], d["text"]))
    return pairs


def build_data(tokenizer):
    """Tokenized (prompt, answer) pairs and the sub-vocabulary (sorted tokenizer ids)."""
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    docs = []
    for prompt, answer in read_pairs():
        p = chat_prompt_ids(tokenizer, prompt)
        a = [int(i) for i in tokenizer(answer, add_special_tokens=False)["input_ids"]] + [eos]
        docs.append((p, a))
    vocab = set()
    for p, a in docs:
        vocab.update(p)
        vocab.update(a)
    specials = [tokenizer.eos_token_id, eos, tokenizer.convert_tokens_to_ids("<|im_start|>")]
    vocab.update(int(i) for i in specials if i is not None)
    # every printable ASCII character (alone and after a space) and a few newline runs, when one token
    for s in list(string.printable) + [" " + c for c in string.printable if not c.isspace()] + ["\n\n", "\n\n\n"]:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            vocab.add(int(ids[0]))
    return docs, sorted(vocab), eos


class Sampler:
    """Training sequences in local ids, packed into rows, with their masks and loss weights."""

    def __init__(self, docs, token_map, eos, hp, seed):
        self.to_local = {tid: j for j, tid in enumerate(token_map)}
        self.docs = [([self.to_local[i] for i in p], [self.to_local[i] for i in a]) for p, a in docs]
        self.stream = [i for _, a in self.docs for i in a]  # plain text: the answers back to back, each ending in EOS
        self.eos = self.to_local[eos]
        self.unk = len(token_map)
        self.mask = len(token_map) + 1
        self.hp = hp
        self.rng = np.random.default_rng(seed)
        self.n_sequences = self.n_answer_cells = 0  # what training saw, for the README

    def sample(self):
        """(local ids, prompt length): a chat sample or a plain text window (prompt length 0)."""
        hp, rng = self.hp, self.rng
        if rng.random() < hp["plain_frac"]:
            n = int(rng.integers(hp["plain_min"], hp["plain_max"] + 1))
            s = int(rng.integers(0, len(self.stream) - n))
            return np.array(self.stream[s : s + n]), 0
        p, a = self.docs[int(rng.integers(len(self.docs)))]
        if rng.random() < hp["prompt_swap"]:
            # another document's prompt: how to answer a prompt it has never seen (with some fluent answer)
            p = self.docs[int(rng.integers(len(self.docs)))][0]
        n = int(rng.integers(hp["answer_min"], hp["answer_max"] + 1))
        ans = (a + [self.eos] * n)[:n]  # LLaDA-style: a short answer is padded with EOS, which is trained on
        return np.array(p + ans), len(p)

    def batch(self, gen: torch.Generator):
        """`rows` rows of `row_len` cells, each packed with whole samples (the last one cut to fit).

        Returns local-id inputs/targets [B, S], per-cell segment ids (-1: padding), positions restarting
        at 0 in every segment, which cells are masked, per-cell loss weights and the number of segments."""
        hp, R = self.hp, self.hp["row_len"]
        B = hp["rows"]
        target = torch.full((B, R), self.eos, dtype=torch.long)
        segment = torch.full((B, R), -1, dtype=torch.long)
        pos = torch.zeros(B, R, dtype=torch.long)
        spans = []  # (row, start, end) of each segment's maskable (answer) cells
        for b in range(B):
            at = 0
            while R - at >= 24:
                seq, p = self.sample()
                seq = seq[: R - at]
                if len(seq) - p < 8:  # not enough answer left to be worth a segment
                    break
                n = len(seq)
                target[b, at : at + n] = torch.from_numpy(seq)
                segment[b, at : at + n] = len(spans)
                pos[b, at : at + n] = torch.arange(n)
                spans.append((b, at + p, at + n))
                at += n
        n_seg = len(spans)
        t_seg = hp["t_min"] + (1 - hp["t_min"]) * torch.rand(n_seg, generator=gen)
        t = torch.ones(B, R)
        weight = torch.zeros(B, R)
        maskable = torch.zeros(B, R, dtype=torch.bool)
        for k, (b, lo, hi) in enumerate(spans):
            t[b, lo:hi] = t_seg[k]
            weight[b, lo:hi] = 1.0 / (t_seg[k] * (hi - lo))  # the ELBO weight
            maskable[b, lo:hi] = True
        masked = (torch.rand(B, R, generator=gen) < t) & maskable
        self.n_answer_cells += int(maskable.sum())
        self.n_sequences += n_seg
        inputs = torch.where(masked, torch.full_like(target, self.mask), target)
        unk = (torch.rand(B, R, generator=gen) < hp["unk_rate"]) & ~masked & (segment >= 0)
        inputs[unk] = self.unk
        return inputs, target, segment, pos, masked, weight, n_seg


def make_model(vocab: int, hp):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hp["hidden"], intermediate_size=2 * hp["hidden"],
        num_hidden_layers=hp["layers"], num_attention_heads=hp["heads"], num_key_value_heads=hp["kv_heads"],
        max_position_embeddings=hp["max_positions"], tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    model = transformers.LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    return model


def segment_mask(segment: torch.Tensor) -> torch.Tensor:
    """Additive mask [B, 1, S, S]: each cell sees every cell of its own segment, in both directions."""
    same = segment[:, :, None] == segment[:, None, :]
    mask = torch.zeros(same.shape, dtype=torch.float32)
    mask.masked_fill_(~same, torch.finfo(mask.dtype).min)
    return mask[:, None]


def init_embeddings_from_embedded(model, token_map):
    """Start the known ids' embeddings from the embedded model's: its rows for the sub-vocabulary,
    projected on their top principal directions and scaled to the usual init size."""
    from safetensors import safe_open

    from specviz.models.loading import EMBEDDED_CACHE_NAME, cache_dir

    with safe_open(str(cache_dir() / EMBEDDED_CACHE_NAME / "model.safetensors"), "pt") as f:
        key = "model.embed_tokens.weight" if "model.embed_tokens.weight" in f.keys() else "lm_head.weight"
        rows = f.get_tensor(key)[torch.tensor(token_map)].double()
    rows = rows - rows.mean(0)
    u, sv, _ = torch.linalg.svd(rows, full_matrices=False)
    d = model.config.hidden_size
    proj = (u[:, :d] * sv[:d]).float()
    proj *= model.config.initializer_range / proj.std()
    with torch.no_grad():
        model.get_input_embeddings().weight[: len(token_map)] = proj


def lr_at(step: int, hp) -> float:
    if step < hp["warmup"]:
        return hp["lr"] * (step + 1) / hp["warmup"]
    frac = (step - hp["warmup"]) / max(1, hp["steps"] - hp["warmup"])
    return hp["min_lr"] + 0.5 * (hp["lr"] - hp["min_lr"]) * (1 + math.cos(math.pi * frac))


def train(hp, out: Path):
    random.seed(hp["seed"])
    np.random.seed(hp["seed"])
    torch.manual_seed(hp["seed"])
    tokenizer = load_tokenizer()
    docs, token_map, eos = build_data(tokenizer)
    V = len(token_map) + 2
    n_tokens = sum(len(a) for _, a in docs)
    print(f"{len(docs)} documents, {n_tokens} answer tokens; sub-vocabulary {len(token_map)} ids (+unk +mask = {V})")
    sampler = Sampler(docs, token_map, eos, hp, hp["seed"])
    gen = torch.Generator().manual_seed(hp["seed"])
    model = make_model(V, hp)
    if hp["embed_init"]:
        init_embeddings_from_embedded(model, token_map)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters (tied embeddings)")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp["lr"], betas=(0.9, 0.98), eps=1e-8)
    model.train()
    t0 = time.perf_counter()
    hist, hist_ce = [], []
    for step in range(hp["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, hp)
        inputs, target, segment, pos, masked, weight, n_seg = sampler.batch(gen)
        res = model.model(input_ids=inputs, position_ids=pos, attention_mask=segment_mask(segment))
        # the head only where a loss is taken: the masked cells, scored at their own positions (no shift)
        ce = torch.nn.functional.cross_entropy(model.lm_head(res.last_hidden_state[masked]), target[masked],
                                               reduction="none")
        loss = (ce * weight[masked]).sum() / n_seg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        hist.append(loss.item())
        hist_ce.append(ce.mean().item() if ce.numel() else float("nan"))
        if (step + 1) % hp["log_every"] == 0 or step == 0:
            k = hp["log_every"]
            print(f"step {step + 1:4d}  loss {np.mean(hist[-k:]):.3f}  masked CE {np.nanmean(hist_ce[-k:]):.3f}  "
                  f"lr {lr_at(step, hp):.2e}  {time.perf_counter() - t0:6.1f} s", flush=True)
    minutes = (time.perf_counter() - t0) / 60
    final_loss = float(np.mean(hist[-50:]))
    final_ce = float(np.nanmean(hist_ce[-50:]))
    print(f"trained {hp['steps']} steps in {minutes:.2f} min; final loss (mean of the last 50 steps) "
          f"{final_loss:.3f}, masked CE {final_ce:.3f}")
    seen = {"sequences_per_step": sampler.n_sequences / hp["steps"], "epochs": sampler.n_answer_cells / n_tokens}
    save(model, token_map, hp, minutes, final_loss, final_ce, n_params, n_tokens, seen, out)


def save(model, token_map, hp, minutes, final_loss, final_ce, n_params, n_tokens, seen, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "token_map.json", "README.md", "generation_config.json"):
        (out / name).unlink(missing_ok=True)
    model = model.eval().to(torch.float16)
    model.config.use_cache = False
    model.save_pretrained(out)
    gen_cfg = out / "generation_config.json"  # nothing generates from this model autoregressively
    if gen_cfg.exists():
        gen_cfg.unlink()
    n_known = len(token_map)
    train_info = {
        "steps": hp["steps"], "minutes": round(minutes, 2), "final_loss": round(final_loss, 4),
        "final_masked_ce": round(final_ce, 4), "seed": hp["seed"], "params": n_params,
        "epochs": round(seen["epochs"], 1),
        "data": f"assets/corpus/selfgen_smollm2.jsonl answers ({n_tokens} tokens) to "
                "assets/prompts/selfdistill_prompts.jsonl prompts, chat-formatted",
        "hyperparameters": hp, "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    meta = {"token_map": token_map, "unk_local": n_known, "mask_local": n_known + 1,
            "tokenizer": "SmolLM2-135M-Instruct", "train": train_info}
    with open(out / "token_map.json", "w", encoding="utf-8") as f:
        json.dump(meta, f)
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20  # the README itself adds ~3 KB
    plain = round(hp["plain_frac"] * 100)
    (out / "README.md").write_text(README.format(
        hidden=hp["hidden"], layers=hp["layers"], heads=hp["heads"], kv=hp["kv_heads"], params=n_params / 1e6,
        n_known=n_known, n_known_p1=n_known + 1, V=n_known + 2, n_tokens=n_tokens, steps=hp["steps"],
        rows=hp["rows"], row_len=hp["row_len"], minutes=minutes, loss=final_loss, ce=final_ce, seed=hp["seed"],
        torch=torch.__version__, size=size_mb, lr=hp["lr"], plain=plain, plain_rest=100 - plain,
        unk=hp["unk_rate"] * 100, amin=hp["answer_min"], amax=hp["answer_max"],
        swap=round(hp["prompt_swap"] * 100), per_step=seen["sequences_per_step"], epochs=seen["epochs"],
    ), encoding="utf-8")
    print(f"saved to {out} ({sum(p.stat().st_size for p in out.iterdir()) / 2**20:.2f} MiB)")


README = """# tiny-mdm: a toy masked-diffusion LM trained for specviz

A **toy**: a {layers}-layer Llama ({hidden} hidden, {heads} heads, {kv} KV heads, {params:.2f} M parameters,
tied embeddings) trained for {minutes:.1f} minutes on **one CPU thread**. It exists so that the Diffusion tab
shows real confidence dynamics offline (a random model's confidences are flat and meaningless). It writes
English-looking, SmolLM2-flavoured text; it is not meant to be correct or useful.

- **Architecture:** `LlamaForCausalLM` run with a *full bidirectional* attention mask (a 4D additive mask of
  zeros) and explicit position ids; cell j's logits are read at position j (no shift).
- **Vocabulary:** the embedded model's tokenizer (SmolLM2-135M-Instruct, 49152 ids), restricted to the
  {n_known} ids that occur in the training text plus the chat special tokens and single-token printable
  ASCII. The model works in local ids: local j < {n_known} is tokenizer id `token_map[j]`
  (`token_map.json`), local {n_known} is *unknown* (any other tokenizer id) and local {n_known_p1} is the
  *mask*, so its vocabulary is {V}. `specviz.models.tiny_mdm.load_tiny_mdm(tokenizer)` wraps it in a
  `DiffusionLM` that speaks tokenizer ids (the mask is the pseudo-id 49152).
- **Data:** the embedded model's own greedy answers (`assets/corpus/selfgen_smollm2.jsonl`, {n_tokens} tokens)
  to the 120 prompts written for this project (`assets/prompts/selfdistill_prompts.jsonl`), paired by id. See
  the READMEs beside them for provenance: no third-party text, nothing from Spec-Bench.
- **Objective (LLaDA/MDLM):** {plain_rest}% of samples are the prompt in SmolLM2's chat template (always
  visible) followed by the first L ~ U[{amin}, {amax}] answer tokens (an answer that ends sooner is padded with
  `<|im_end|>`, which is trained on, as in LLaDA's SFT); {plain}% are plain windows of the answers. Each sequence
  draws t ~ U(0.05, 1) and masks each answer cell with probability t; the loss is the ELBO estimate, the sum
  over masked cells of cross-entropy / (t * answer length), whose expectation is the mean cross-entropy per
  answer token. {swap}% of chat samples carry another document's prompt, so that the model answers prompts
  it has never seen with pieces of some fluent answer (without this, unseen prompts got noticeably more
  word salad in a trial run). {unk:.0f}% of visible inputs are replaced by the unknown id so prompts with unseen
  tokens still work.
- **Init:** the known ids' input/output embeddings (tied) start from SmolLM2's own embedding rows, projected on
  their top {hidden} principal directions and scaled to std 0.02; every other weight is randomly initialised.
- **Training:** {steps} steps of {rows} rows of {row_len} cells packed with whole samples (on average
  {per_step:.1f} sequences; each attends only to itself), AdamW (lr {lr:g}, 40 warmup steps, cosine to a tenth, weight
  decay 0.05 on matrices, gradient clip 1.0), fp32, seed {seed}, torch {torch}, 1 thread.
- **Measured:** {minutes:.1f} min of training; final loss (mean of the last 50 steps) {loss:.3f}; plain masked
  cross-entropy {ce:.3f} nats. Weights stored in fp16 (loaded as fp32): {size:.1f} MiB for this folder.
  Training saw each answer token about {epochs:.0f} times (as a target or as context), so the model leans
  heavily on its data: expect fragments of SmolLM2's answers, often unrelated to the prompt, with repeated
  words ("message message finds finds you well") and odd joins; prompts from its training set come out best.

Rebuild (deterministic on the same software and machine type; the training time above plus about a minute
for the example decodes it prints at the end):

    PYTHONPATH=. .venv/bin/python scripts/train_tiny_mdm.py

License: trained by this project on text generated by this project; released under the repository's license.
"""


def evaluate(path: Path = OUT, prompts=None):
    """Decode a few prompts with the project's own decoder and print what happened."""
    from specviz.decoding.diffusion import DiffusionConfig, diffuse
    from specviz.decoding.schedules import ScheduleParams
    from specviz.models.tiny_mdm import load_tiny_mdm
    from specviz.trace import REVEALED, check_invariants

    tokenizer = load_tokenizer()
    lm = load_tiny_mdm(tokenizer, path=path)
    prompts = prompts or [
        "I keep forgetting to drink water during the day. Can you give me a few simple tricks to remember?",
        "Write a short poem about the sea at night.",
        "What is the capital of France?",
    ]
    for text in prompts:
        ids = chat_prompt_ids(tokenizer, text)
        print(f"\n### {text}")
        for schedule in ("low_confidence", "threshold"):
            cfg = DiffusionConfig(schedule=schedule, gen_length=32, block_size=8, steps=32, params=ScheduleParams())
            tr = diffuse(lm, ids, cfg)
            check_invariants(tr, lm.eos_ids)
            s = tr.summary()
            # the probability of each cell's token when it was revealed, and every scored cell's confidence
            at_reveal = np.concatenate([st.confidence[st.cell_state == REVEALED] for st in tr.steps])
            scored = np.concatenate([st.confidence[np.isfinite(st.confidence)] for st in tr.steps])
            print(f"[{schedule}] steps {s['steps']}, tokens/forward {s['tokens_per_forward']:.2f}, "
                  f"new tokens {s['new_tokens']}, finish {tr.finish_reason}; confidence at reveal: median "
                  f"{np.median(at_reveal):.2f}, >0.5: {np.mean(at_reveal > 0.5):.0%}; all scored cells: "
                  f"median {np.median(scored):.2f}, max {scored.max():.2f}")
            print("   " + repr(tokenizer.decode(tr.output_ids)))


def main():
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval-only", action="store_true", help="only decode a few prompts with the shipped model")
    ap.add_argument("--steps", type=int, default=HP["steps"], help="training steps (the shipped model: default)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not args.eval_only:
        hp = dict(HP, steps=args.steps)
        train(hp, args.out)
    evaluate(args.out)


if __name__ == "__main__":
    main()
