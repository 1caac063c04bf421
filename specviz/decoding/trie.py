"""A draft tree under construction: a token trie whose nodes remember who proposed them.

Every tree builder (static, dynamic, n-gram, retrieval, grafted) ends in a
`TokenTrie`, so merging trees from several drafters is one operation: walk
each new sequence down the nodes that already hold its tokens (longest-prefix
matching, as RASD merges retrieval and draft trees) and append only the rest.
Node 0 is the root; nodes are appended after their parent, so the trie is
always in the topological order the verifier needs.
"""
from __future__ import annotations

import numpy as np


class TokenTrie:
    def __init__(self):
        self.tokens = [-1]
        self.parent = [-1]
        self.source = ["root"]
        self.draft_prob = [1.0]
        self.depth = [0]
        self.children: list[dict] = [{}]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_drafted(self) -> int:
        return len(self.tokens) - 1

    def child(self, node: int, token: int) -> int | None:
        return self.children[node].get(int(token))

    def add(self, node: int, token: int, source: str, prob: float = 1.0) -> int:
        """The child of `node` holding `token`, created if missing."""
        token = int(token)
        hit = self.children[node].get(token)
        if hit is not None:
            return hit
        idx = len(self.tokens)
        self.tokens.append(token)
        self.parent.append(node)
        self.source.append(source)
        self.draft_prob.append(float(prob))
        self.depth.append(self.depth[node] + 1)
        self.children.append({})
        self.children[node][token] = idx
        return idx

    def add_path(self, tokens, source: str, probs=None, budget: int | None = None, start: int = 0) -> int:
        """Merge one sequence below node `start`, stopping when the trie holds `budget` drafted nodes.

        Returns how many new nodes were created."""
        node, created = start, 0
        for j, t in enumerate(tokens):
            hit = self.child(node, t)
            if hit is None:
                if budget is not None and self.n_drafted >= budget:
                    break
                hit = self.add(node, t, source, 1.0 if probs is None else probs[j])
                created += 1
            node = hit
        return created

    def path_to(self, node: int) -> list:
        out = []
        while node > 0:
            out.append(node)
            node = self.parent[node]
        return out[::-1]

    def arrays(self):
        """(tokens [M], parent [M], draft_probs [M], sources) of the drafted nodes, parents indexed with 0 = root."""
        return (
            np.asarray(self.tokens[1:], dtype=np.int64),
            np.asarray(self.parent[1:], dtype=np.int64),
            np.asarray(self.draft_prob[1:], dtype=np.float32),
            tuple(self.source[1:]),
        )


def count_trie(sequences, counts=None, max_nodes: int = 1 << 30, source: str = "retrieval") -> TokenTrie:
    """The `max_nodes` most frequent prefixes of `sequences`, as a trie with siblings by frequency.

    A prefix's count is the number of sequences (weighted by `counts`) that
    start with it. A node is never more frequent than its parent, so taking
    nodes in order of count (ties: shallower, then first seen) keeps the
    selection closed under ancestors: always a tree.
    """
    weights = np.ones(len(sequences)) if counts is None else np.asarray(counts, dtype=np.float64)
    prefix_count: dict = {}
    first_seen: dict = {}
    for seq, w in zip(sequences, weights):
        for j in range(1, len(seq) + 1):
            key = tuple(int(t) for t in seq[:j])
            prefix_count[key] = prefix_count.get(key, 0.0) + w
            first_seen.setdefault(key, len(first_seen))
    total = float(weights.sum()) if len(sequences) else 1.0
    order = sorted(prefix_count, key=lambda k: (-prefix_count[k], len(k), first_seen[k]))[:max_nodes]
    # append shallow levels first so parents precede children, siblings by count
    order.sort(key=lambda k: (len(k), -prefix_count[k], first_seen[k]))
    trie = TokenTrie()
    node_of = {(): 0}
    for key in order:
        # the recorded draft probability is the conditional one: count(prefix) / count(parent prefix)
        parent_count = prefix_count[key[:-1]] if len(key) > 1 else total
        node_of[key] = trie.add(node_of[key[:-1]], key[-1], source, prefix_count[key] / parent_count)
    return trie
