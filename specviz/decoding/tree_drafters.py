"""Model-drafted trees: chains, static shapes, EAGLE-2-style dynamic trees, and Graft.

One expansion loop serves every shape. Each level, the drafter forwards the
nodes chosen for expansion in a single pass over its own KV cache, under a
tree mask, and each expanded node gets its top-k children:

- greedy runs take the k most likely tokens;
- sampled runs draw k distinct tokens with Gumbel-top-k, i.e. sampling without
  replacement (RSD), and remember each child's exact proposal distribution
  (the draft distribution minus the siblings drawn before it) so recursive
  rejection sampling can verify the siblings losslessly.

Shapes decide which nodes expand and how many children they get:
`StaticShape` follows a rank-path list; `DynamicShape` expands the `top_k`
nodes of each level with the highest cumulative draft probability and, in
greedy runs, reranks all nodes to the budget (EAGLE-2). A value-dependent
rerank would bias the sampled siblings, so sampled dynamic trees skip it and
stop expanding at the budget instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from ..config import SamplingConfig
from ..kernels.tree_attention import TreeMask
from ..models import attention
from ..models.cache import SlabCache
from . import kv
from .drafters import Context, Draft, DrafterBase
from .retrieval import RetrievalDrafter, draft_from_trie
from .sampling import processed_probs
from .shapes import chain, parse_shape
from .tree import additive_mask, ancestor_matrix, upload
from .trie import TokenTrie
from .verify import to_host


def slot_mask(context_len: int, slot_parent: list, parent_slots: list) -> np.ndarray:
    """[q, context_len + n_slots + q] bool for q new tree nodes: each sees the committed context, its
    ancestor slots (following `slot_parent`; -1 is the root) and itself."""
    n_slots, q = len(slot_parent), len(parent_slots)
    allowed = np.ones((q, context_len + n_slots + q), dtype=bool)
    # the slots and the new nodes form a forest under the root; a new node's row is its ancestor row
    allowed[:, context_len:] = ancestor_matrix([*slot_parent, *parent_slots])[n_slots:]
    return allowed


class DraftKV:
    """The drafter's cache: the committed context, then the tree nodes forwarded this step ("slots").

    Slot s sits at cache index context_len + s. After verification the
    accepted nodes that own slots are moved into place, so the next step's
    catch-up forwards only what the drafter has not seen.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.cache = None
        self.n_cached = 0
        self.context_len = 0
        self.slot_parent: list = []  # parent slot of each slot (-1: the root)
        self.slot_depth: list = []

    def reset(self) -> None:
        self.cache = attention.new_cache(self.model)
        self.n_cached = 0

    def catch_up(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed the committed tokens the cache lacks; returns the logits after the root, [V]."""
        new = ids[self.n_cached :].unsqueeze(0)
        out = self.model(input_ids=new, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.context_len = self.n_cached = int(ids.shape[0])
        self.slot_parent, self.slot_depth = [], []
        return out.logits[0, -1]

    def forward(self, tokens: torch.Tensor, parent_slots: list) -> torch.Tensor:
        """Forward new tree nodes whose parents are the root (-1) or earlier slots; returns [Q, V] logits."""
        q = len(parent_slots)
        n_slots = len(self.slot_parent)
        depths = [1 if p < 0 else self.slot_depth[p] + 1 for p in parent_slots]
        # one node continuing a chain: the causal path is the same computation without a mask
        if q == 1 and parent_slots[0] == n_slots - 1 and self._slots_form_chain():
            out = self.model(input_ids=tokens.view(1, 1), past_key_values=self.cache, use_cache=True)
        else:
            allowed = slot_mask(self.context_len, self.slot_parent, parent_slots)
            device = tokens.device
            positions = upload([[self.context_len - 1 + d for d in depths]], device)
            if isinstance(self.cache, SlabCache):
                # the slots are the tree block; the committed context before them is visible to all
                mask = TreeMask.from_allowed(allowed[:, self.context_len :], device)
                out = self.model(input_ids=tokens.view(1, q), position_ids=positions, past_key_values=self.cache,
                                 use_cache=True, tree_mask=mask)
            else:
                out = self.model(input_ids=tokens.view(1, q), attention_mask=additive_mask(allowed, self.model.dtype, device),
                                 position_ids=positions, past_key_values=self.cache, use_cache=True)
        self.slot_parent += list(parent_slots)
        self.slot_depth += depths
        return out.logits[0]

    def _slots_form_chain(self) -> bool:
        return all(p == s - 1 for s, p in enumerate(self.slot_parent))

    def keep(self, accepted_slots: list) -> None:
        """Keep the context plus these slots (an accepted root-to-node run, in depth order)."""
        kv.keep_path(self.cache, self.context_len - 1, [s + 1 for s in accepted_slots])
        self.n_cached = self.context_len + len(accepted_slots)


@dataclass
class Expansion:
    """The tree the drafter grew this step (node 0 = root), before selection."""

    token: list = field(default_factory=lambda: [-1])
    parent: list = field(default_factory=lambda: [-1])
    depth: list = field(default_factory=lambda: [0])
    logp: list = field(default_factory=lambda: [0.0])  # cumulative log draft probability
    prob: list = field(default_factory=lambda: [1.0])  # draft probability of the node's token given its parent
    slot: list = field(default_factory=lambda: [-1])  # drafter cache slot once forwarded
    rank_path: list = field(default_factory=lambda: [()])
    drawn_before: list = field(default_factory=lambda: [()])  # tokens drawn for earlier siblings
    dist: dict = field(default_factory=dict)  # node -> the draft distribution after it, [V]
    caught_up: bool = False  # the drafter's cache saw the context this step

    def add(self, parent: int, token: int, prob: float, rank: int, drawn_before: tuple) -> int:
        self.token.append(token)
        self.parent.append(parent)
        self.depth.append(self.depth[parent] + 1)
        self.logp.append(self.logp[parent] + float(np.log(max(prob, 1e-30))))
        self.prob.append(prob)
        self.slot.append(-1)
        self.rank_path.append(self.rank_path[parent] + (rank,))
        self.drawn_before.append(drawn_before)
        return len(self.token) - 1

    def __len__(self) -> int:
        return len(self.token)


class StaticShape:
    def __init__(self, spec, drafter=None):
        self.drafter = drafter  # trained heads, for the "calibrated" shape they ship with
        self._set(parse_shape(spec, drafter))

    def _set(self, paths) -> None:
        self.paths = paths
        # parent rank path -> the ranks of its children, built once per shape rather than per level
        self.child_ranks: dict = {}
        for p in paths:
            self.child_ranks.setdefault(p[:-1], []).append(p[-1])
        for ranks in self.child_ranks.values():
            ranks.sort()

    def set_knobs(self, knobs: dict) -> None:
        if "preset" in knobs:
            self._set(parse_shape(knobs["preset"], self.drafter))
        if "draft_len" in knobs and all(set(p) == {0} for p in self.paths):
            self._set(chain(knobs["draft_len"]))

    def plan(self, exp: Expansion, level: list, max_depth: int, greedy: bool = True) -> list:
        """(node, ranks of the children to create) for the nodes of this level that have children.

        The shape is fixed before anything is drawn, so greedy and sampled runs grow it alike."""
        out = []
        for node in level:
            base = exp.rank_path[node]
            ranks = self.child_ranks.get(base) if len(base) < max_depth else None
            if ranks:
                out.append((node, list(ranks)))
        return out

    def select(self, exp: Expansion, sampling: SamplingConfig) -> list:
        return list(range(1, len(exp)))


class DynamicShape:
    def __init__(self, depth: int, top_k: int, budget: int):
        self.depth, self.top_k, self.budget = depth, top_k, budget

    def set_knobs(self, knobs: dict) -> None:
        self.depth = knobs.get("depth", self.depth)
        self.top_k = knobs.get("top_k", self.top_k)
        self.budget = knobs.get("budget", self.budget)

    def plan(self, exp: Expansion, level: list, max_depth: int, greedy: bool = True) -> list:
        k = self.top_k
        if exp.depth[level[0]] >= min(self.depth, max_depth):
            return []
        frontier = [0] if level == [0] else sorted(level, key=lambda n: (-exp.logp[n], n))[:k]
        # greedy trees grow fully and are reranked to the budget afterwards; sampled trees
        # cannot be reranked (see the module doc), so they stop growing where the budget runs out
        room = 1 << 30 if greedy else self.budget - (len(exp) - 1)
        plan = []
        for node in frontier:
            n_children = min(k, room)
            if n_children <= 0:
                break
            plan.append((node, list(range(n_children))))
            room -= n_children
        return plan

    def select(self, exp: Expansion, sampling: SamplingConfig) -> list:
        nodes = range(1, len(exp))
        if not sampling.greedy:
            return list(nodes)
        # EAGLE-2 rerank: the budget's most likely nodes; a child never outranks its parent
        # (ties go to the earlier-created node, the parent), so the selection is a tree
        return sorted(sorted(nodes, key=lambda n: (-exp.logp[n], n))[: self.budget])


class ModelTreeDrafter(DrafterBase):
    """A draft model (or the target's early exit) growing a chain, a static tree or a dynamic tree.

    `propose` = `grow` + the shape's selection + `adopt`; composite drafters (Graft) call the
    same three public steps with their own selection in between."""

    def __init__(self, model: nn.Module, shape, sampling: SamplingConfig, source: str):
        self.kv = DraftKV(model)
        self.shape = shape
        self.sampling = sampling
        self.name = source
        self.forwards = 0  # drafter forwards spent on the current step
        self._chosen: list = []  # drafted tree node i + 1 -> its expansion node (None: not this drafter's)
        self._exp: Expansion | None = None

    def set_shape(self, knobs: dict) -> None:
        self.shape.set_knobs(knobs)

    def reset(self, prompt_ids: np.ndarray) -> None:
        self.kv.reset()

    @torch.inference_mode()
    def grow(self, ctx: Context, max_depth: int, generator) -> Expansion:
        """Expand the tree level by level under the shape: one drafter forward and one host read per level."""
        exp = Expansion()
        self.adopt(exp, [])
        self.forwards = 0
        if max_depth <= 0:
            return exp
        exp.caught_up = True
        exp.dist[0] = processed_probs(self.kv.catch_up(ctx.ids), self.sampling)
        self.forwards = 1
        level = [0]
        while level:
            plan = self.shape.plan(exp, level, max_depth, greedy=self.sampling.greedy)
            if not plan:
                break
            need = [n for n, _ in plan if n not in exp.dist]
            if need:
                tokens = upload([exp.token[n] for n in need], ctx.ids.device)
                dists = processed_probs(self.kv.forward(tokens, [exp.slot[exp.parent[n]] for n in need]), self.sampling)
                self.forwards += 1
                base = len(self.kv.slot_parent) - len(need)
                for i, n in enumerate(need):
                    exp.slot[n] = base + i
                    exp.dist[n] = dists[i]
            level = self._expand(exp, plan, generator)
        return exp

    def _expand(self, exp: Expansion, plan: list, generator) -> list:
        """Add the planned children of one level; returns the new nodes.

        Each planned node's children are its top tokens (greedy) or a without-replacement draw
        (Gumbel-top-k: perturb log p with Gumbel noise, take the top k: the order sequential sampling
        without replacement would draw them). The whole level's candidates come back in one read;
        tokens of probability 0 are never drafted."""
        dists = torch.stack([exp.dist[n] for n, _ in plan])  # [P, V]
        k = min(max(max(ranks) for _, ranks in plan) + 1, dists.shape[-1])
        if self.sampling.greedy:
            probs, order = dists.topk(k, dim=-1)
        else:
            u = torch.rand(dists.shape, generator=generator, device=dists.device).clamp_(1e-20, 1.0)
            order = (dists.log() - (-u.log()).log()).topk(k, dim=-1).indices
            probs = dists.gather(1, order)
        order, probs = to_host(order, probs)
        nxt = []
        for (node, ranks), row, p in zip(plan, order.tolist(), probs.tolist()):
            drawn = [t for t, q in zip(row, p) if q > 0]  # zero-probability tokens rank last
            for r in ranks:
                if r < len(drawn):
                    nxt.append(exp.add(node, drawn[r], p[r], r, tuple(drawn[:r])))
        return nxt

    def propose(self, ctx: Context, max_depth: int, generator) -> Draft:
        exp = self.grow(ctx, max_depth, generator)
        chosen = self.shape.select(exp, self.sampling) if len(exp) > 1 else []
        return self.adopt(exp, chosen, ctx.ids.device)

    def ranked(self, exp: Expansion) -> list:
        """The expansion's nodes the shape keeps under a greedy rerank (parents before children)."""
        return self.shape.select(exp, SamplingConfig()) if len(exp) > 1 else []

    def adopt(self, exp: Expansion, chosen: list, device=None) -> Draft | None:
        """Make `chosen` (expansion nodes, or None for nodes another drafter added) this step's drafted
        nodes, in tree order, so `commit` keeps the cache of the accepted ones. With a device, also
        returns them as a Draft (every entry must then be an expansion node)."""
        self._exp, self._chosen = exp, list(chosen)
        if device is None:
            return None
        return self._draft(exp, chosen, device, exact=not self.sampling.greedy)

    def _draft(self, exp: Expansion, chosen: list, device, exact: bool) -> Draft:
        if not chosen:
            return Draft.empty(device)
        index = {n: i + 1 for i, n in enumerate(chosen)}
        dists = None
        if exact:
            # drawn without replacement: each child's proposal is its parent's distribution without the
            # tokens drawn for its earlier siblings, renormalised
            dists = torch.stack([exp.dist[exp.parent[n]] for n in chosen])
            drawn = [(i, t) for i, n in enumerate(chosen) for t in exp.drawn_before[n]]
            if drawn:
                rows, cols = upload(drawn, device).unbind(1)
                dists[rows, cols] = 0.0
            dists = dists / dists.sum(dim=-1, keepdim=True)
        return Draft(
            token_ids=upload([exp.token[n] for n in chosen], device),
            parent=np.asarray([index.get(exp.parent[n], 0) for n in chosen], dtype=np.int64),
            draft_probs=upload([exp.prob[n] for n in chosen], device, torch.float32),
            dists=dists,
            source=(self.name,) * len(chosen),
            forwards=self.forwards,
        )

    def commit(self, accepted_path: list, n_committed: int) -> None:
        if self._exp is None or not self._exp.caught_up:
            return
        slots = []
        for node in accepted_path:
            exp_node = self._chosen[node - 1] if node - 1 < len(self._chosen) else None
            if exp_node is None or self._exp.slot[exp_node] < 0:
                break
            slots.append(self._exp.slot[exp_node])
        self.kv.keep(slots)


class GraftDrafter(DrafterBase):
    """Graft: prune the model's dynamic tree to its confident nodes, then graft retrieved
    continuations into the budget that pruning freed (merged by longest prefix, RASD-style).

    Pruning depends on the drafted values, so under sampling every node is
    verified as a point mass (still lossless, see verify.py)."""

    def __init__(self, model_drafter: ModelTreeDrafter, retriever: RetrievalDrafter, prune_prob: float):
        self.model = model_drafter
        self.retriever = retriever
        self.prune_prob = prune_prob
        self.name = "graft"

    def set_shape(self, knobs: dict) -> None:
        self.model.set_shape(knobs)
        self.retriever.set_shape(knobs)
        self.prune_prob = knobs.get("prune_prob", self.prune_prob)

    def reset(self, prompt_ids: np.ndarray) -> None:
        self.model.reset(prompt_ids)

    def propose(self, ctx: Context, max_depth: int, generator) -> Draft:
        m = self.model
        exp = m.grow(ctx, max_depth, generator)
        budget = m.shape.budget
        ranked = m.ranked(exp)  # greedy rerank to the budget
        floor = np.log(max(self.prune_prob, 1e-30))
        kept = [n for n in ranked if exp.logp[n] >= floor]  # monotone along paths, so still a tree
        trie = TokenTrie()
        trie_of, exp_of = {0: 0}, {}
        for n in kept:  # parents first: `ranked` is sorted by node id
            idx = trie.add(trie_of[exp.parent[n]], exp.token[n], m.name, exp.prob[n])
            trie_of[n], exp_of[idx] = idx, n
        # graft in the retriever's priority order (by count); each node adds at most itself
        graft = self.retriever.build(ctx.ids_host, max_depth)
        for node in range(1, len(graft)):
            if trie.n_drafted >= budget:
                break
            trie.add_path([graft.tokens[j] for j in graft.path_to(node)], graft.source[node], budget=budget)
        # map trie nodes back to expansion nodes so the drafter can keep its cache of accepted ones
        m.adopt(exp, [exp_of.get(i) for i in range(1, len(trie))])
        # the drafter's forwards count even when pruning and retrieval left nothing to draft
        return replace(draft_from_trie(trie, ctx.ids.device), forwards=m.forwards)

    def commit(self, accepted_path: list, n_committed: int) -> None:
        self.model.commit(accepted_path, n_committed)
