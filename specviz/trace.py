"""The data contract between decoding and everything that shows it.

A strategy yields one `SpecStep` per target forward. Every view, the CLI's JSON
and the metrics are built from these records alone, so a run can be replayed,
scrubbed and exported without calling the model again.

Records hold host-side numpy arrays and token ids only: no text, no colours and
no torch tensors, so this module imports neither torch nor a tokenizer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import numpy as np

# node status inside a draft tree
ROOT, ACCEPTED, REJECTED, UNREACHED = 0, 1, 2, 3
STATUS_NAMES = ("root", "accepted", "rejected", "never-reached")

# how the one token the target adds at the end of a step came about
BONUS = "bonus"  # every draft on the path was accepted (or nothing was drafted)
CORRECTION = "correction"  # drawn after a rejection (residual sample or target argmax)


def tree_depths(parent: np.ndarray) -> np.ndarray:
    """Depth of each node of a topologically ordered tree (root 0)."""
    depth = np.zeros(parent.shape[0], dtype=np.int64)
    for i in range(1, parent.shape[0]):
        depth[i] = depth[parent[i]] + 1
    return depth


@dataclass(frozen=True)
class DraftTree:
    """A draft tree in topological order. Node 0 is the root: the last committed
    token, which the target has not yet seen. `parent[i] < i` for every i > 0."""

    token_ids: np.ndarray  # [N] int64
    parent: np.ndarray  # [N] int64, parent[0] == -1
    draft_probs: np.ndarray  # [N] float32, draft probability of each node's token (root: 1)
    source: tuple  # [N] str, which drafter proposed each node ("root" for node 0)

    @property
    def size(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def depth(self) -> np.ndarray:
        return tree_depths(self.parent)

    def is_chain(self) -> bool:
        return bool(np.all(self.parent[1:] == np.arange(self.size - 1)))


@dataclass(frozen=True)
class SpecStep:
    """One propose → score → select → commit iteration of speculative decoding."""

    step: int
    root_pos: int  # sequence position of the root token
    tree: DraftTree
    target_probs: np.ndarray  # [N] target probability of each node's token given its ancestors (root: 1)
    # [N] the chance verification gave the node when it was tested: given its parent was accepted
    # and its earlier siblings rejected (root: 1; NaN: never tested, e.g. after an accepted sibling)
    accept_probs: np.ndarray
    status: np.ndarray  # [N] int8, see STATUS_NAMES
    accepted_path: np.ndarray  # [A] node indices, root excluded, in depth order
    bonus_token: int
    bonus_prob: float  # target probability of the bonus token (of the processed distribution)
    bonus_kind: str  # BONUS or CORRECTION
    committed_ids: np.ndarray  # [C] tokens appended this step (accepted path + bonus, cut at EOS / limit)
    target_topk_ids: np.ndarray  # [N, K] target's top-k next tokens after each node
    target_topk_probs: np.ndarray  # [N, K]
    draft_ms: float
    verify_ms: float
    target_forwards: int  # target forwards this step (always 1 for speculative steps)
    draft_forwards: int  # drafter model forwards this step (0 for model-free drafters)
    lossless: bool = True
    # [N] the target's uncertainty after each node (from the logit-statistics kernel, at the run's
    # temperature, before top-p): entropy in nats and the gap between its two most likely tokens.
    # Empty when the run did not record.
    target_entropy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    target_top2_gap: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def n_drafted(self) -> int:
        return self.tree.size - 1

    @property
    def n_accepted(self) -> int:
        return int(self.accepted_path.shape[0])


_ARRAY_DTYPES = {
    "token_ids": np.int64,
    "parent": np.int64,
    "draft_probs": np.float32,
    "target_probs": np.float32,
    "accept_probs": np.float32,
    "status": np.int8,
    "accepted_path": np.int64,
    "committed_ids": np.int64,
    "target_topk_ids": np.int64,
    "target_topk_probs": np.float32,
    "target_entropy": np.float32,
    "target_top2_gap": np.float32,
}


@dataclass
class Trace:
    """A whole run: what was asked, every step record, and how long it took."""

    method: str
    config: dict
    target_id: str
    draft_id: str | None
    prompt_ids: np.ndarray
    steps: list = field(default_factory=list)
    wall_s: float = 0.0  # decode wall time, prefill included
    prefill_ms: float = 0.0
    finish_reason: str = ""  # "eos", "length" or "" while running
    backend: str = "reference (cpu)"  # which kernels ran: "triton (cuda)" or "reference (<device>)"
    lossless: bool = True

    @property
    def output_ids(self) -> np.ndarray:
        if not self.steps:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([s.committed_ids for s in self.steps]).astype(np.int64)

    def summary(self) -> dict:
        return summarize(self.steps, self.wall_s)

    # JSON round trip -------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "config": self.config,
            "target_id": self.target_id,
            "draft_id": self.draft_id,
            "prompt_ids": self.prompt_ids.tolist(),
            "steps": [_step_to_dict(s) for s in self.steps],
            "wall_s": self.wall_s,
            "prefill_ms": self.prefill_ms,
            "finish_reason": self.finish_reason,
            "backend": self.backend,
            "lossless": self.lossless,
            "summary": self.summary(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        return cls(
            method=d["method"],
            config=d["config"],
            target_id=d["target_id"],
            draft_id=d["draft_id"],
            prompt_ids=np.asarray(d["prompt_ids"], dtype=np.int64),
            steps=[_step_from_dict(s) for s in d["steps"]],
            wall_s=d["wall_s"],
            prefill_ms=d["prefill_ms"],
            finish_reason=d["finish_reason"],
            backend=d["backend"],
            lossless=d["lossless"],
        )

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        return cls.from_dict(json.loads(text))


def _step_to_dict(s: SpecStep) -> dict:
    out = {}
    for f in fields(s):
        v = getattr(s, f.name)
        if f.name == "tree":
            v = {
                "token_ids": v.token_ids.tolist(),
                "parent": v.parent.tolist(),
                "draft_probs": v.draft_probs.tolist(),
                "source": list(v.source),
            }
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[f.name] = v
    return out


def _arr(name, v):
    a = np.asarray(v, dtype=_ARRAY_DTYPES[name])
    if name.startswith("target_topk") and a.ndim == 1:
        a = a.reshape(0, 0)
    return a


def _step_from_dict(d: dict) -> SpecStep:
    t = d["tree"]
    tree = DraftTree(
        token_ids=_arr("token_ids", t["token_ids"]),
        parent=_arr("parent", t["parent"]),
        draft_probs=_arr("draft_probs", t["draft_probs"]),
        source=tuple(t["source"]),
    )
    kwargs = {k: (_arr(k, v) if k in _ARRAY_DTYPES else v) for k, v in d.items() if k != "tree"}
    return SpecStep(tree=tree, **kwargs)


# derived metrics --------------------------------------------------------------
def summarize(steps: list, wall_s: float = 0.0) -> dict:
    """Summary metrics of a run.

    tau: tokens committed per target forward, bonus included (the literature's
         mean accepted length; `tau_drafts_only` excludes the bonus).
    acceptance_by_depth[d]: accepted ÷ drafted among nodes at depth d+1 whose
         parent was accepted (i.e. that verification actually reached).
    path_reach_by_depth[d]: among steps whose tree was at least d+1 deep, the
         share whose accepted path reached depth d+1. For trees this is the
         figure that matters: siblings lower the per-node rate but raise this one.
    """
    new_tokens = int(sum(s.committed_ids.shape[0] for s in steps))
    target_forwards = int(sum(s.target_forwards for s in steps))
    draft_forwards = int(sum(s.draft_forwards for s in steps))
    drafted = int(sum(s.n_drafted for s in steps))
    accepted = int(sum(s.n_accepted for s in steps))
    max_depth = max((int(s.tree.depth.max()) for s in steps if s.tree.size > 1), default=0)
    reached = np.zeros(max_depth, dtype=np.int64)
    hit = np.zeros(max_depth, dtype=np.int64)
    for s in steps:
        if s.tree.size <= 1:
            continue
        depth = s.tree.depth
        for i in range(1, s.tree.size):
            if s.status[i] in (ACCEPTED, REJECTED):
                reached[depth[i] - 1] += 1
                hit[depth[i] - 1] += s.status[i] == ACCEPTED
    by_depth = [float(h / r) if r else None for h, r in zip(hit, reached)]
    deep_enough = np.zeros(max_depth, dtype=np.int64)
    reached_path = np.zeros(max_depth, dtype=np.int64)
    for s in steps:
        if s.tree.size > 1:
            deep_enough[: int(s.tree.depth.max())] += 1
            reached_path[: s.n_accepted] += 1
    reach = [float(h / r) if r else None for h, r in zip(reached_path, deep_enough)]
    decode_s = wall_s if wall_s > 0 else sum(s.draft_ms + s.verify_ms for s in steps) / 1000.0
    return {
        "new_tokens": new_tokens,
        "steps": len(steps),
        "target_forwards": target_forwards,
        "draft_forwards": draft_forwards,
        "tau": new_tokens / target_forwards if target_forwards else 0.0,
        "tau_drafts_only": accepted / target_forwards if target_forwards else 0.0,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
        "acceptance_by_depth": by_depth,
        "path_reach_by_depth": reach,
        "draft_ms": float(sum(s.draft_ms for s in steps)),
        "verify_ms": float(sum(s.verify_ms for s in steps)),
        "wall_s": decode_s,
        "tok_per_s": new_tokens / decode_s if decode_s > 0 else 0.0,
    }


def check_invariants(trace: Trace, eos_ids=(), max_new_tokens: int | None = None) -> None:
    """Raise AssertionError if the trace breaks the contract. Run by the tests."""
    pos = int(trace.prompt_ids.shape[0]) - 1
    for k, s in enumerate(trace.steps):
        t = s.tree
        n = t.size
        assert s.step == k, f"step {k} numbered {s.step}"
        assert s.root_pos == pos, f"step {k}: root at {s.root_pos}, expected {pos}"
        assert t.parent[0] == -1 and np.all(t.parent[1:] < np.arange(1, n)), "parents must precede children"
        assert np.all(t.parent[1:] >= 0)
        assert len(t.source) == n and t.source[0] == "root"
        assert t.draft_probs.shape[0] == n
        for name in ("target_probs", "accept_probs", "status"):
            assert getattr(s, name).shape[0] == n, f"step {k}: {name} has the wrong length"
        for name in ("draft_probs", "target_probs", "accept_probs"):
            a = getattr(t, name) if name == "draft_probs" else getattr(s, name)
            a = a[np.isfinite(a)] if name == "accept_probs" else a
            assert np.all((a >= 0) & (a <= 1 + 1e-5)), f"step {k}: {name} outside [0, 1]"
        if np.all(np.isfinite(s.target_probs)):  # recorded: every accepted node was tested
            assert np.all(np.isfinite(s.accept_probs[s.accepted_path])), f"step {k}: accepted node never tested"
        assert s.status[0] == ROOT and np.all(s.status[1:] != ROOT)
        # accepted path: a root-to-node chain of accepted nodes, in depth order
        prev = 0
        for node in s.accepted_path:
            assert t.parent[node] == prev, f"step {k}: accepted path is not a chain"
            assert s.status[node] == ACCEPTED
            prev = int(node)
        assert int(np.sum(s.status == ACCEPTED)) == s.n_accepted, "accepted nodes off the path"
        # a node is reached only if its parent was accepted (or is the root)
        for i in range(1, n):
            parent_ok = s.status[t.parent[i]] in (ROOT, ACCEPTED)
            assert (s.status[i] != UNREACHED) == parent_ok, f"step {k}: node {i} reached status wrong"
        # committed = accepted tokens then the bonus, possibly cut short
        full = np.concatenate([t.token_ids[s.accepted_path], [s.bonus_token]])
        c = s.committed_ids
        assert 1 <= c.shape[0] <= full.shape[0] and np.array_equal(c, full[: c.shape[0]]), f"step {k}: committed ids"
        if c.shape[0] < full.shape[0]:
            last = k == len(trace.steps) - 1
            assert last, f"step {k}: only the last step may be cut short"
        if s.bonus_kind == CORRECTION:
            assert np.any(s.status == REJECTED), "a correction follows a rejection"
        assert s.target_forwards == 1
        pos += int(c.shape[0])
    out = trace.output_ids
    if eos_ids and out.shape[0] > 0:
        eos_at = [i for i, x in enumerate(out) if int(x) in set(eos_ids)]
        assert not eos_at or eos_at[0] == out.shape[0] - 1, "tokens after EOS"
    if max_new_tokens is not None:
        assert out.shape[0] <= max_new_tokens


@dataclass(frozen=True)
class CommittedToken:
    token_id: int
    kind: str  # "accepted", BONUS or CORRECTION
    step: int
    depth: int  # depth in that step's tree (the bonus sits one below the last accepted node)
    target_prob: float  # target probability of the token when it was committed


def committed_tokens(steps: list) -> list:
    """Every generated token with the step and the way it was committed."""
    out = []
    for s in steps:
        depth = s.tree.depth
        for j, tok in enumerate(s.committed_ids):
            if j < s.n_accepted:
                node = int(s.accepted_path[j])
                out.append(CommittedToken(int(tok), "accepted", s.step, int(depth[node]), float(s.target_probs[node])))
            else:
                out.append(CommittedToken(int(tok), s.bonus_kind, s.step, s.n_accepted + 1, float(s.bonus_prob)))
    return out
