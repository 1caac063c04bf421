"""Training loops for the three trained drafters, on recorded target features.

All three distil the target's own next-token distribution (soft labels: the target's LM head on
its recorded final features), restricted to the tokens that occur in the training data. The
restriction is what makes CPU training affordable: the LM head over the full 49k vocabulary
would cost ten times the rest of a step, and the target puts almost no mass outside the data's
own tokens on data it generated itself. Inference always uses the full LM head.

- Medusa head k at position t matches the target's distribution at t + k (the token at t + 1 + k),
  weighted 0.8^k as in Medusa.
- The feature drafter (EAGLE-1 recipe) reads (embed(token_{t+1}), feature_t) with causal
  attention and is trained on smooth-L1 feature regression plus 0.1 × the distillation loss of
  lm_head(predicted feature_{t+1}); uniform noise on the input features (EAGLE's augmentation)
  teaches it to cope with its own imperfect features deeper in the tree.
- The distilled exit trains its top layer(s) and norm so that lm_head(norm(h_exit)) matches the
  target's distribution at the same position.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..models.trained_heads import DraftKVCache, ExitDraftLayers, FeatureDrafter, MedusaHeads, cosine_lr
from ..decoding.shapes import best_static_tree
from .data import Features


@dataclass
class TrainStats:
    steps: int = 0
    seconds: float = 0.0
    losses: list = field(default_factory=list)  # (step, loss) every few steps
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    top1: float = float("nan")  # held-out agreement of the drafter's argmax with the target's

    def to_dict(self) -> dict:
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "first_loss": round(self.first_loss, 4),
                "last_loss": round(self.last_loss, 4), "heldout_top1": self.top1,
                "curve": [(s, round(l, 4)) for s, l in self.losses]}


class SubVocab:
    """The data's tokens: a slice of the frozen LM head, and the target's soft labels over it."""

    def __init__(self, feats: Features, lm_head_weight: torch.Tensor):
        self.ids = torch.unique(feats.tokens)
        self.weight = lm_head_weight.detach()[self.ids].float()  # [V', H]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h.float() @ self.weight.T

    @torch.no_grad()
    def target_probs(self, final: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(final), dim=-1)


def soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || drafter): cross-entropy minus the target's entropy, so 0 means a perfect copy
    (same gradient as the cross-entropy; the reported number is readable)."""
    log_target = torch.log(target_probs.clamp_min(1e-30))
    return (target_probs * (log_target - torch.log_softmax(logits, dim=-1))).sum(-1).mean()


def _sequences(feats: Features, min_len: int = 3) -> list:
    return [(int(a), int(b), int(s)) for a, b, s in zip(feats.offsets[:-1], feats.offsets[1:], feats.answer_start) if b - a >= min_len]


def header_length(feats: Features) -> int:
    """Tokens every sequence starts with (the chat template's system header): never worth a loss."""
    first = feats.tokens[int(feats.offsets[0]) : int(feats.offsets[1])]
    n = len(first)
    for a, b in zip(feats.offsets[1:50], feats.offsets[2:51]):
        seq = feats.tokens[int(a) : int(b)]
        m = min(n, len(seq))
        diff = (seq[:m] != first[:m]).nonzero()
        n = int(diff[0]) if len(diff) else m
    return n


def ranked_vocabulary(feats: Features, n: int) -> torch.Tensor:
    """The data's tokens by frequency (after the chat header), at most n: the EAGLE drafter's
    reduced draft vocabulary (FR-Spec)."""
    header = header_length(feats)
    keep = torch.ones(len(feats.tokens), dtype=torch.bool)
    for a in feats.offsets[:-1]:
        keep[int(a) : int(a) + header] = False
    ids, counts = torch.unique(feats.tokens[keep], return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)
    return ids[order][:n].clone()


def split_heldout(feats: Features, frac: float = 0.05, seed: int = 0) -> tuple:
    """Sequence indices for training and for the held-out agreement check."""
    seqs = _sequences(feats)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(seqs))
    n_held = max(1, int(len(seqs) * frac))
    return [seqs[i] for i in order[n_held:]], [seqs[i] for i in order[:n_held]]


def _log_every(stats: TrainStats, step: int, loss: float, log, every: int, name: str, t0: float, total: int):
    if step == 0:
        stats.first_loss = loss
    stats.last_loss = loss
    if step % every == 0 or step == total - 1:
        stats.losses.append((step, loss))
        log(f"[train {name}] step {step + 1}/{total} loss {loss:.4f} ({time.perf_counter() - t0:.0f} s)")


def _fit_sequences(module, batch_loss, train_seqs: list, per_batch: int, epochs: float, lr: float, warmup: int,
                   gen: torch.Generator, name: str, log) -> TrainStats:
    """AdamW over length-bucketed batches of whole sequences, cosine schedule, clipped gradients."""
    total = max(1, int(epochs * ((len(train_seqs) + per_batch - 1) // per_batch)))
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    stats, t0, step = TrainStats(), time.perf_counter(), 0
    while step < total:
        for batch in _batches(train_seqs, per_batch, gen):
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, lr, warmup=warmup)
            loss = batch_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            _log_every(stats, step, loss.item(), log, 25, name, t0, total)
            step += 1
    stats.steps, stats.seconds = total, time.perf_counter() - t0
    return stats


# ---------------------------------------------------------------- Medusa
def _medusa_positions(seqs: list, k: int, from_token: int | None = None) -> torch.Tensor:
    """Global indices t whose head-k label (the token at t + 1 + k) is an answer token, or any
    token from index `from_token` on (prompt text included)."""
    out = []
    for a, b, s in seqs:
        lo, hi = a + (from_token if from_token is not None else max(0, s - 1 - k)), b - 1 - k
        if hi > lo:
            out.append(torch.arange(lo, hi))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def train_medusa(target, feats: Features, n_heads: int = 4, epochs: float = 2.0, lr: float = 1e-3,
                 batch: int = 1024, on_prompt: bool = False, tree_nodes: int = 64, seed: int = 0, log=print) -> tuple:
    torch.manual_seed(seed)
    heads = MedusaHeads(feats.final.shape[1], n_heads)
    vocab = SubVocab(feats, target.lm_head.weight)
    train_seqs, held = split_heldout(feats, seed=seed)
    # head k's positions shrink with k; an epoch is counted on head 1's
    start = header_length(feats) if on_prompt else None
    pos = [_medusa_positions(train_seqs, k, start) for k in range(1, n_heads + 1)]
    total = max(1, int(epochs * len(pos[0]) / batch))
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.0)
    stats, t0 = TrainStats(), time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    for step in range(total):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, lr)
        loss = 0.0
        for k in range(1, n_heads + 1):
            idx = pos[k - 1][torch.randint(len(pos[k - 1]), (batch,), generator=gen)]
            h = heads.heads[k - 1](feats.final[idx].float())
            loss = loss + 0.8 ** (k - 1) * soft_ce(vocab.logits(h), vocab.target_probs(feats.final[idx + k]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _log_every(stats, step, loss.item(), log, 25, "medusa", t0, total)
    stats.steps, stats.seconds = total, time.perf_counter() - t0
    # Medusa's sparse tree: the tree_nodes paths most likely to be accepted under the held-out rank accuracies
    heads.rank_accuracy = medusa_rank_accuracy(heads, feats, held, vocab)
    heads.tree = [list(p) for p in best_static_tree(heads.rank_accuracy, tree_nodes)]
    stats.top1 = [row[0] for row in heads.rank_accuracy]
    return heads.eval(), stats


@torch.no_grad()
def medusa_rank_accuracy(heads: MedusaHeads, feats: Features, seqs: list, vocab: SubVocab, ranks: int = 10) -> list:
    """Per head k: how often the target's argmax token at t + 1 + k is the head's rank-r guess,
    for r < `ranks` (held out). Row k's first entry is head k's top-1 agreement."""
    out = []
    for k in range(1, heads.n_heads + 1):
        idx = _medusa_positions(seqs, k)
        if len(idx) == 0:
            out.append([0.0] * ranks)
            continue
        guess = vocab.logits(heads.heads[k - 1](feats.final[idx].float())).topk(ranks, dim=-1).indices
        want = vocab.logits(feats.final[idx + k].float()).argmax(-1)
        out.append([round(float((guess[:, r] == want).float().mean()), 4) for r in range(ranks)])
    return out


# ---------------------------------------------------------------- EAGLE-style feature drafter
def _batches(seqs: list, per_batch: int, gen: torch.Generator) -> list:
    """Length-bucketed batches of sequences, in random order."""
    by_len = sorted(seqs, key=lambda s: s[1] - s[0])
    batches = [by_len[i : i + per_batch] for i in range(0, len(by_len), per_batch)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def _eagle_batch(feats: Features, batch: list, embed: torch.nn.Module, device="cpu"):
    """Right-padded inputs (embed(t_{j+1}), f_j), targets f_{j+1}, and masks, for sequences [a, b).

    `nxt` holds embed(t_{j+2}) (zero past the end): the second unrolled step's input."""
    n = max(b - a for a, b, _ in batch) - 1
    hdim = feats.final.shape[1]
    emb = torch.zeros(len(batch), n, hdim)
    nxt = torch.zeros(len(batch), n, hdim)
    fin = torch.zeros(len(batch), n, hdim)
    tgt = torch.zeros(len(batch), n, hdim)
    valid = torch.zeros(len(batch), n, dtype=torch.bool)
    answer = torch.zeros(len(batch), n, dtype=torch.bool)
    for r, (a, b, s) in enumerate(batch):
        m = b - a - 1
        with torch.no_grad():
            e = embed(feats.tokens[a + 1 : b]).float()
        emb[r, :m] = e
        nxt[r, : m - 1] = e[1:]
        fin[r, :m] = feats.final[a : b - 1].float()
        tgt[r, :m] = feats.final[a + 1 : b].float()
        valid[r, :m] = True
        # the prediction at j (feature_{j+1}) drafts the token at j + 2: count it when that is an answer token
        j = torch.arange(m)
        answer[r, :m] = (j + 2 >= s) & (j + 2 < b - a)
    positions = torch.arange(n).unsqueeze(0).expand(len(batch), n)
    return emb, fin, tgt, valid, answer, positions, nxt


def _second_step_mask(n: int) -> torch.Tensor:
    """Attention of the unrolled second step, [n, 2n + 1]: n queries over the n + 1 first-step
    entries, then over themselves. The query at position j + 1 (fed the drafter's own
    feature_{j+1}) sees the first step's entries at positions <= j and itself, as a depth-2 tree
    node does at inference."""
    first = torch.ones(n, n + 1, dtype=torch.bool).tril()
    return torch.cat([first, torch.eye(n, dtype=torch.bool)], dim=1)


def train_eagle(target, feats: Features, epochs: float = 4.0, lr: float = 5e-4, per_batch: int = 8,
                noise: float = 0.1, cls_weight: float = 0.1, unroll: int = 1, cls_on_prompt: bool = False,
                draft_vocab: int = 16384, seed: int = 0, log=print) -> tuple:
    """`unroll=2` adds an EAGLE-3-style training-time test step: the drafter's own predicted
    features are fed back once, so depth-2 drafts are trained on the inputs they will see.
    `cls_on_prompt` applies the distillation loss on prompt positions too (the long documents of
    the prompt set are the model's own text, so its distribution there is as good a label)."""
    torch.manual_seed(seed)
    drafter = FeatureDrafter.for_target(target.config)
    embed = target.model.embed_tokens
    vocab = SubVocab(feats, target.lm_head.weight)
    train_seqs, held = split_heldout(feats, seed=seed)
    scale = float(feats.final.float().std())
    gen = torch.Generator().manual_seed(seed)
    header = header_length(feats)

    def step_loss(pred, tgt, valid, labelled):
        reg = F.smooth_l1_loss(pred[valid] / scale, tgt[valid] / scale)
        cls = soft_ce(vocab.logits(pred[labelled]), vocab.target_probs(tgt[labelled])) if labelled.any() else pred.sum() * 0
        return reg + cls_weight * cls

    def batch_loss(batch):
        emb, fin, tgt, valid, answer, positions, nxt = _eagle_batch(feats, batch, embed)
        labelled = (valid & (positions >= header - 2)) if cls_on_prompt else answer
        fin_in = fin + (torch.rand(fin.shape, generator=gen) - 0.5) * (2 * noise * scale)
        cache = DraftKVCache() if unroll > 1 else None
        pred = drafter(emb, fin_in, positions, cache=cache)
        loss = step_loss(pred, tgt, valid, labelled)
        if unroll > 1:
            # step 2: the query at j + 1 reads (embed(t_{j+2}), predicted f_{j+1}) and predicts f_{j+2} = tgt[j + 1]
            n = pred.shape[1]
            pred2 = drafter(nxt[:, :-1], pred[:, :-1], positions[:, 1:], _second_step_mask(n - 1), cache=cache)
            loss = loss + step_loss(pred2, tgt[:, 1:], valid[:, 1:], labelled[:, 1:])
        return loss

    stats = _fit_sequences(drafter, batch_loss, train_seqs, per_batch, epochs, lr, 50, gen, "eagle", log)
    stats.top1 = eagle_agreement(drafter, feats, held, embed, vocab)
    if draft_vocab:
        drafter.draft_vocab = ranked_vocabulary(feats, draft_vocab)
    return drafter.eval(), stats


@torch.no_grad()
def eagle_agreement(drafter: FeatureDrafter, feats: Features, seqs: list, embed, vocab: SubVocab) -> float:
    """Held out, teacher-forced: how often argmax lm_head(predicted feature) is the target's argmax."""
    hits = total = 0
    for i in range(0, len(seqs), 8):
        emb, fin, tgt, valid, answer, positions, _ = _eagle_batch(feats, seqs[i : i + 8], embed)
        pred = drafter(emb, fin, positions)
        if answer.any():
            hits += int((vocab.logits(pred[answer]).argmax(-1) == vocab.logits(tgt[answer]).argmax(-1)).sum())
            total += int(answer.sum())
    return round(hits / max(1, total), 4)


# ---------------------------------------------------------------- distilled early exit
def _exit_forward(trained: ExitDraftLayers, target, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    cos_sin = target.model.rotary_emb(x, positions)
    for layer in trained.layers:
        out = layer(x, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
        x = out[0] if isinstance(out, tuple) else out
    return trained.norm(x)


def _exit_batch(feats: Features, batch: list):
    n = max(b - a for a, b, _ in batch)
    hdim = feats.final.shape[1]
    x = torch.zeros(len(batch), n, hdim)
    fin = torch.zeros(len(batch), n, hdim)
    answer = torch.zeros(len(batch), n, dtype=torch.bool)
    for r, (a, b, s) in enumerate(batch):
        x[r, : b - a] = feats.exit_input[a:b].float()
        fin[r, : b - a] = feats.final[a:b].float()
        # position j predicts the token at j + 1
        answer[r, max(0, s - 1) : b - a - 1] = True
    return x, fin, answer, torch.arange(n).unsqueeze(0).expand(len(batch), n)


def train_exit(target, feats: Features, exit_layer: int, n_trained: int = 1, epochs: float = 1.0, lr: float = 2e-4,
               per_batch: int = 8, seed: int = 0, log=print) -> tuple:
    if feats.exit_input is None:
        raise ValueError("the features were recorded without the exit layer's input")
    torch.manual_seed(seed)
    trained = ExitDraftLayers(target, exit_layer, n_trained).float().train()
    sdpa_config = copy.deepcopy(target.config)
    sdpa_config._attn_implementation = "sdpa"
    for layer in trained.layers:  # train under SDPA with a causal mask, whatever the target runs on
        layer.self_attn.config = sdpa_config
    vocab = SubVocab(feats, target.lm_head.weight)
    train_seqs, held = split_heldout(feats, seed=seed)
    gen = torch.Generator().manual_seed(seed)

    def batch_loss(batch):
        x, fin, answer, positions = _exit_batch(feats, batch)
        h = _exit_forward(trained, target, x, positions)
        return soft_ce(vocab.logits(h[answer]), vocab.target_probs(fin[answer]))

    stats = _fit_sequences(trained, batch_loss, train_seqs, per_batch, epochs, lr, 20, gen, "exit", log)
    stats.top1 = exit_agreement(trained, target, feats, held, vocab)
    return trained.eval(), stats


@torch.no_grad()
def exit_agreement(trained: ExitDraftLayers, target, feats: Features, seqs: list, vocab: SubVocab) -> float:
    hits = total = 0
    for i in range(0, len(seqs), 8):
        x, fin, answer, positions = _exit_batch(feats, seqs[i : i + 8])
        h = _exit_forward(trained, target, x, positions)
        hits += int((vocab.logits(h[answer]).argmax(-1) == vocab.logits(fin[answer]).argmax(-1)).sum())
        total += int(answer.sum())
    return round(hits / max(1, total), 4)
