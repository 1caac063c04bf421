"""Cost-aware drafting: every step verifies the draft that pays most on this machine, down to none.

A fixed tree size is right for one machine only. On a GPU a 64-node verify costs about one AR
forward, so a big tree is nearly free; on a small CPU scoring even two tokens costs 1.5 AR steps, so a
draft pays only when it is likely to be accepted. `CostAwareDrafter` sizes each step's draft from
two measured things:

- the verify-cost curve of the target (`costs.CostCurve`, measured on this machine), and
- the drafter's acceptance in this run so far (`AcceptanceModel`): for each drafted node, the chance
  that the target accepts it once its parent is accepted, learned from every node the target tested,
  per drafter, depth, sibling rank and draft-probability bin, with an optimistic bonus for what it
  has seen little of, so a draft it has never tried still gets tried.

Each step it drafts at the largest size, estimates each node's chance of being reached (the product
of its path's acceptance chances), and keeps the k most reachable nodes (always a tree: a node is
never more reachable than its parent) for the k that maximises

    expected tokens(k) − λ · cost(k)        (cost: verify of k nodes + root, plus drafting, in ms)

where λ is the rate to beat: the best of AR's (one token per AR forward) and the run's own so far.
Maximising this difference rather than the step's own ratio is what maximises the long-run rate
(Dinkelbach's method for ratio objectives). k = 0 is plain AR for that step. A drafter that costs
real time to run (a draft model) is skipped altogether while its drafted steps did worse than AR
would have, and tried again every few steps.

Lossless. Greedy: any draft is lossless. Sampling: a node drawn from a distribution that is kept or
dropped depending on its own drawn value would bias verification (the same reason sampled dynamic
trees are not reranked), so drafts with proposal distributions are cut to their first k nodes in
drafting order, with k chosen from earlier steps only ("value-blind"); a deterministic draft (point
masses: n-gram, retrieval) may be pruned by anything, since verification accepts a point mass x with
probability p(x) whatever chose it.
"""
from __future__ import annotations

import time
from collections import defaultdict, deque

import numpy as np
import torch

from ..config import ConfigError, SamplingConfig
from .drafters import Context, Draft, DrafterBase
from .retrieval import TrieDrafter
from .trie import TokenTrie

AUTO_MAX_NODES = 64  # the largest draft an auto-sized step may verify (the inner drafter's budget)
PROB_BINS = (0.05, 0.2, 0.5, 0.8, 0.999)  # draft-probability bins of the acceptance model; 1.0 is its own
OPTIMISM = 1.0  # standard deviations of optimism: how hard the model explores what it has seen little of
PRIOR_WEIGHT = 4.0  # pseudo-observations pulling a fine estimate toward its (drafter, depth) estimate
WINDOW = 16  # drafted steps remembered when deciding whether drafting pays at all
PROBE_EVERY = 8  # while drafting does not pay, still draft every this many steps, to notice when it does
COSTLY_DRAFT = 0.02  # drafting that takes more than this share of an AR forward may be skipped


def sibling_ranks(parent: np.ndarray) -> np.ndarray:
    """[M] each drafted node's rank among its siblings, in drafting order (parent indices: 0 = root)."""
    seen: dict = defaultdict(int)
    out = np.zeros(len(parent), dtype=np.int64)
    for i, p in enumerate(parent.tolist()):
        out[i] = seen[p]
        seen[p] += 1
    return out


def node_depths(parent: np.ndarray) -> np.ndarray:
    """[M] depth of each drafted node (root children: 1)."""
    depth = np.zeros(len(parent) + 1, dtype=np.int64)
    for i, p in enumerate(parent.tolist()):
        depth[i + 1] = depth[p] + 1
    return depth[1:]


class AcceptanceModel:
    """P(node accepted | its parent accepted), learned from the run's verdicts.

    Two levels: a coarse (drafter, depth) estimate with a uniform prior, and a fine (drafter, depth,
    sibling rank, probability bin) estimate shrunk toward it; the value returned adds `OPTIMISM`
    standard errors, so keys seen rarely look better than they have been (upper confidence bound)."""

    def __init__(self, optimism: float = OPTIMISM):
        self.optimism = optimism
        self.coarse: dict = defaultdict(lambda: [0.0, 0.0])  # key -> [tested, accepted]
        self.fine: dict = defaultdict(lambda: [0.0, 0.0])

    @staticmethod
    def keys(source: str, depth: int, rank: int, prob: float | None) -> tuple:
        coarse = (source, min(int(depth), 8))
        pbin = -1 if prob is None else int(np.searchsorted(PROB_BINS, float(prob), side="right"))
        return coarse, (*coarse, min(int(rank), 2), pbin)

    def estimate(self, source: str, depth: int, rank: int, prob: float | None) -> float:
        coarse, fine = self.keys(source, depth, rank, prob)
        n_c, k_c = self.coarse[coarse] if coarse in self.coarse else (0.0, 0.0)
        mean_c = (k_c + 1.0) / (n_c + 2.0)
        n_f, k_f = self.fine[fine] if fine in self.fine else (0.0, 0.0)
        mean = (k_f + PRIOR_WEIGHT * mean_c) / (n_f + PRIOR_WEIGHT)
        spread = np.sqrt(mean * (1 - mean) / (n_f + PRIOR_WEIGHT))
        return float(min(1.0, mean + self.optimism * spread))

    def observe(self, source: str, depth: int, rank: int, prob: float | None, accepted: bool) -> None:
        for key, table in zip(self.keys(source, depth, rank, prob), (self.coarse, self.fine)):
            table[key][0] += 1
            table[key][1] += float(accepted)


def reach(parent: np.ndarray, accept: np.ndarray) -> np.ndarray:
    """[M] the chance each node lies on the accepted path, from per-node conditional acceptance chances.
    Siblings exclude one another (the target accepts at most one child per node), so their chances are
    scaled down where they sum past one."""
    accept = np.clip(np.asarray(accept, dtype=np.float64), 0.0, 1.0)
    total = np.zeros(len(parent) + 1)
    np.add.at(total, parent, accept)
    accept = accept / np.maximum(total[parent], 1.0)
    out = np.zeros(len(parent) + 1)
    out[0] = 1.0
    for i, p in enumerate(parent.tolist()):
        out[i + 1] = out[p] * accept[i]
    return out[1:]


def best_size(node_reach: np.ndarray, curve, rate: float, order: np.ndarray | None = None) -> tuple:
    """(k, expected tokens) maximising expected tokens − rate × verify ms, over the first k nodes of
    `order` (default: most reachable first, ties to the earlier node, so every prefix is a tree)."""
    if order is None:
        order = np.lexsort((np.arange(len(node_reach)), -node_reach))
    gains = 1.0 + np.concatenate([[0.0], np.cumsum(node_reach[order])])
    costs = np.asarray([curve.ms(k + 1) for k in range(len(gains))])
    k = int(np.argmax(gains - rate * costs))
    return k, float(gains[k])


class CostAwareDrafter(DrafterBase):
    """Wraps a drafter built at `AUTO_MAX_NODES` and cuts each step's draft to the size that pays.

    `curve` is a CostCurve or a callable returning one (measured on first use)."""

    def __init__(self, inner, curve, sampling: SamplingConfig | None = None, optimism: float = OPTIMISM):
        self.inner = inner
        self._curve = curve
        self.sampling = sampling or SamplingConfig()
        self.name = inner.name
        self.reads_target_features = inner.reads_target_features
        self.acceptance = AcceptanceModel(optimism)
        self.reset_stats()

    def reset_stats(self) -> None:
        self.committed_tokens = 0.0
        self.spent_ms = 0.0  # cost-model milliseconds of every step so far
        self.drafted = deque(maxlen=WINDOW)  # net value of recent drafted steps (tokens − λ·ms)
        self.skipped = 0
        self.by_index = defaultdict(lambda: [0.0, 0.0])  # value-blind: drafting index -> [verified, reached]
        self._step = None  # what this step drafted and kept, for the commit
        self.draft_ms = 0.0  # mean drafting time of drafted steps
        self.n_drafted_steps = 0
        self.last_choice: dict = {}

    @property
    def curve(self):
        if callable(self._curve):
            self._curve = self._curve()
        if self._curve is None:
            raise ConfigError("budget 'auto' needs this machine's cost curve of the target, which is not available")
        return self._curve

    @property
    def rate(self) -> float:
        """λ: tokens per cost-model millisecond to beat, the best of AR's and this run's so far."""
        ar = 1.0 / self.curve.ar_ms
        return max(ar, self.committed_tokens / self.spent_ms) if self.spent_ms > 0 else ar

    # the Drafter protocol -------------------------------------------------------------------------
    def reset(self, prompt_ids: np.ndarray) -> None:
        self.inner.reset(prompt_ids)
        self.reset_stats()

    def set_shape(self, knobs: dict) -> None:
        self.inner.set_shape({k: v for k, v in knobs.items() if k != "budget"})

    def on_target_features(self, features: torch.Tensor) -> None:
        self.inner.on_target_features(features)

    def on_scored(self, logits, verdict) -> None:
        self.inner.on_scored(logits, verdict)

    def propose(self, ctx: Context, max_depth: int, generator) -> Draft:
        curve = self.curve
        if self._skip_drafting():
            self.skipped += 1
            self._step = None
            self.last_choice = {"drafted": 0, "kept": 0, "expected": 1.0, "skipped": True}
            return Draft.empty(ctx.ids.device)
        self.skipped = 0
        t0 = time.perf_counter()
        if isinstance(self.inner, TrieDrafter):
            # host arrays straight from the trie: no device round trip to read the draft back
            tokens, parent, probs, source = self.inner.build(ctx.ids_host, max_depth).arrays()
            draft, exact = None, False
        else:
            draft = self.inner.propose(ctx, max_depth, generator)
            parent, source = draft.parent, draft.source
            exact = not self.sampling.greedy and draft.dists is not None
            # value-blind drafts need no read of their values; the others are read once, here
            probs = (draft.draft_probs.float().cpu().numpy() if len(parent) and not exact
                     else np.ones(len(parent), np.float32))
        draft_ms = (time.perf_counter() - t0) * 1000
        n_drafted = len(parent)
        depth, rank = node_depths(parent), sibling_ranks(parent)
        if exact:
            # value-blind: the first k in drafting order, k from earlier steps' reach by drafting index
            est = np.asarray([self._index_estimate(i) for i in range(n_drafted)])
            k, expected = best_size(est, curve, self.rate, order=np.arange(n_drafted))
            keep = np.arange(k)
        else:
            accept = np.asarray([self.acceptance.estimate(s, d, r, p)
                                 for s, d, r, p in zip(source, depth, rank, probs)])
            node_reach = reach(parent, accept)
            k, expected = best_size(node_reach, curve, self.rate)
            keep = np.sort(np.lexsort((np.arange(n_drafted), -node_reach))[:k])
        self._step = {"parent": _renumbered(parent, keep), "source": tuple(source[i] for i in keep),
                      "depth": depth[keep], "rank": rank[keep], "probs": probs[keep], "keep": keep,
                      "draft_ms": draft_ms, "exact": exact}
        self.last_choice = {"drafted": n_drafted, "kept": int(k), "expected": expected, "skipped": False}
        if draft is None:
            return _trie_draft(tokens, parent, probs, source, keep, ctx.ids.device)
        return _subset(draft, keep)

    def commit(self, accepted_path: list, n_committed: int) -> None:
        step, self._step = self._step, None
        curve = self.curve
        if step is None:  # an AR step
            self.committed_tokens += n_committed
            self.spent_ms += curve.ar_ms
            self.inner.commit([], n_committed)
            return
        keep, parent = step["keep"], step["parent"]
        on_path = set(int(n) for n in accepted_path)
        tested = [i for i, p in enumerate(parent.tolist()) if p == 0 or p in on_path]
        for i in tested:
            self.acceptance.observe(step["source"][i], step["depth"][i], step["rank"][i],
                                    None if step["exact"] else float(step["probs"][i]), (i + 1) in on_path)
        for i in range(len(keep)):
            counts = self.by_index[i]
            counts[0] += 1
            counts[1] += float((i + 1) in on_path)
        cost = curve.ms(len(keep) + 1) + step["draft_ms"]
        rate = self.rate
        self.drafted.append(n_committed - rate * cost)
        self.n_drafted_steps += 1
        self.draft_ms += (step["draft_ms"] - self.draft_ms) / self.n_drafted_steps
        self.committed_tokens += n_committed
        self.spent_ms += cost
        # the inner drafter keeps its own state (a draft model's cache) for the nodes it drafted
        self.inner.commit([int(keep[n - 1]) + 1 for n in accepted_path], n_committed)

    # decisions ------------------------------------------------------------------------------------
    def _index_estimate(self, i: int) -> float:
        n, k = self.by_index[i] if i in self.by_index else (0.0, 0.0)
        mean = (k + 1.0) / (n + 2.0)
        return float(min(1.0, mean + self.acceptance.optimism * np.sqrt(mean * (1 - mean) / (n + 2.0))))

    def _skip_drafting(self) -> bool:
        """Skip a drafter that costs real time while its drafted steps have done worse than AR steps
        would have (probing again every PROBE_EVERY steps); cheap drafters are never skipped, since a
        step that finds nothing worth verifying already costs only an AR forward."""
        if len(self.drafted) < 4 or self.draft_ms < COSTLY_DRAFT * self.curve.ar_ms:
            return False
        ar_net = 1.0 - self.rate * self.curve.ar_ms
        return float(np.mean(self.drafted)) < ar_net and self.skipped < PROBE_EVERY - 1


def _renumbered(parent: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The parents of the kept nodes, renumbered into the kept tree (0 = root)."""
    index = {0: 0, **{int(old) + 1: new + 1 for new, old in enumerate(keep.tolist())}}
    return np.asarray([index[int(parent[i])] for i in keep.tolist()], dtype=np.int64)


def _subset(draft: Draft, keep: np.ndarray) -> Draft:
    """The draft cut to the nodes `keep` (indices into its drafted nodes, closed under parents)."""
    if len(keep) == len(draft.parent):
        return draft
    idx = torch.from_numpy(keep).to(draft.token_ids.device)
    return Draft(
        token_ids=draft.token_ids.index_select(0, idx),
        parent=_renumbered(draft.parent, keep),
        draft_probs=draft.draft_probs.index_select(0, idx),
        dists=None if draft.dists is None else draft.dists.index_select(0, idx),
        source=tuple(draft.source[i] for i in keep.tolist()),
        forwards=draft.forwards,
    )


def _trie_draft(tokens, parent, probs, source, keep, device) -> Draft:
    if len(keep) == 0:
        return Draft.empty(device)
    return Draft(
        token_ids=torch.from_numpy(tokens[keep]).to(device),
        parent=_renumbered(parent, keep),
        draft_probs=torch.from_numpy(probs[keep]).to(device),
        dists=None,
        source=tuple(source[i] for i in keep.tolist()),
    )


class MergedTrieDrafter(TrieDrafter):
    """Several model-free drafters' tries merged into one (shared prefixes once, first drafter first),
    each node labelled with the drafter that proposed it, so the acceptance model learns each one."""

    def __init__(self, drafters: list, depth: int, budget: int):
        self.drafters, self.depth, self.budget = list(drafters), depth, budget
        self.name = "auto"

    def set_shape(self, knobs: dict) -> None:
        super().set_shape(knobs)
        for d in self.drafters:
            d.set_shape({"depth": self.depth, "budget": self.budget})

    def build(self, ids_host: np.ndarray, max_depth: int) -> TokenTrie:
        merged = TokenTrie()
        for drafter in self.drafters:
            trie = drafter.build(ids_host, min(max_depth, self.depth))
            node_of = {0: 0}
            for node in range(1, len(trie)):  # parents come before children
                if merged.n_drafted >= self.budget:
                    return merged
                node_of[node] = merged.add(node_of[trie.parent[node]], trie.tokens[node], trie.source[node],
                                           trie.draft_prob[node])
        return merged
