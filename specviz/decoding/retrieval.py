"""Model-free tree drafters: n-gram tries over the context and retrieval from a datastore.

`SuffixArray` indexes a token corpus (REST-style datastore): every occurrence
of a query n-gram is one contiguous range of the sorted suffixes, found by
binary search, so the continuations of the current suffix and their counts
come back in O(m log n). The corpus can be the prompt plus the text generated
so far (rebuilt each step, cheap at a few thousand tokens), a shipped text
corpus, or a user's file; documents are separated so no continuation runs
across a boundary.

Both drafters are deterministic functions of the context, so under sampling
their nodes are verified as point masses, which keeps verification lossless.
"""
from __future__ import annotations

import numpy as np
import torch

from .drafters import Context, Draft, DrafterBase, ngram_continuations
from .trie import TokenTrie, count_trie

SEPARATOR = -1  # between documents in a corpus; never a token id
MAX_OCCURRENCES = 512  # continuations read per lookup; a strided sample beyond that keeps the frequencies


class SuffixArray:
    """The suffix array of an int token array, built by prefix doubling (numpy lexsorts)."""

    def __init__(self, tokens):
        self.tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        self.order = _suffix_order(self.tokens)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def _prefix(self, i: int, m: int) -> list:
        s = int(self.order[i])
        return self.tokens[s : s + m].tolist()

    def find(self, query) -> tuple:
        """[lo, hi): the range of suffixes that start with `query`."""
        q = [int(t) for t in query]
        m = len(q)
        lo, hi = 0, len(self)
        while lo < hi:  # first suffix whose m-prefix is >= q
            mid = (lo + hi) // 2
            if self._prefix(mid, m) < q:
                lo = mid + 1
            else:
                hi = mid
        start, hi = lo, len(self)
        while lo < hi:  # first suffix whose m-prefix is > q
            mid = (lo + hi) // 2
            if self._prefix(mid, m) <= q:
                lo = mid + 1
            else:
                hi = mid
        return start, lo

    def count(self, query) -> int:
        lo, hi = self.find(query)
        return hi - lo

    def continuations(self, query, length: int, limit: int = MAX_OCCURRENCES) -> list:
        """The up-to-`length` tokens after each occurrence of `query` (empty ones and separators dropped)."""
        lo, hi = self.find(query)
        if hi <= lo:
            return []
        starts = self.order[lo:hi]
        if starts.shape[0] > limit:
            starts = starts[np.linspace(0, starts.shape[0] - 1, limit).astype(np.int64)]
        m = len(query)
        out = []
        for s in starts.tolist():
            follow = self.tokens[s + m : s + m + length]
            cut = np.flatnonzero(follow == SEPARATOR)
            if cut.shape[0]:
                follow = follow[: cut[0]]
            if follow.shape[0]:
                out.append(follow.tolist())
        return out


def _suffix_order(tokens: np.ndarray) -> np.ndarray:
    n = tokens.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rank = np.unique(tokens, return_inverse=True)[1].astype(np.int64)
    k = 1
    while True:
        second = np.full(n, -1, dtype=np.int64)
        if k < n:
            second[: n - k] = rank[k:]
        order = np.lexsort((second, rank))
        first_s, second_s = rank[order], second[order]
        new_group = np.concatenate([[0], ((first_s[1:] != first_s[:-1]) | (second_s[1:] != second_s[:-1])).astype(np.int64)])
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.cumsum(new_group)
        if rank.max() == n - 1 or k >= n:
            return order
        k *= 2


def corpus_tokens(documents: list) -> np.ndarray:
    """Concatenate tokenised documents with separators between them."""
    parts = []
    for doc in documents:
        parts.append(np.asarray(doc, dtype=np.int64))
        parts.append(np.array([SEPARATOR], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def suffix_continuations(index: SuffixArray, context: np.ndarray, max_n: int, min_n: int, length: int):
    """Continuations of the longest context suffix (max_n down to min_n tokens) that the index holds."""
    for n in range(min(max_n, context.shape[0]), min_n - 1, -1):
        found = index.continuations(context[context.shape[0] - n :], length)
        if found:
            return n, found
    return 0, []


def draft_from_trie(trie: TokenTrie, device, forwards: int = 0) -> Draft:
    """A deterministic draft (every node a point mass for verification) from a trie."""
    if trie.n_drafted == 0:
        return Draft.empty(device)
    tokens, parent, probs, source = trie.arrays()
    return Draft(
        token_ids=torch.from_numpy(tokens).to(device),
        parent=parent,
        draft_probs=torch.from_numpy(probs).to(device),
        dists=None,
        source=source,
        forwards=forwards,
    )


class TrieDrafter(DrafterBase):
    """A model-free drafter: `build(context ids, max depth)` returns a trie; no state between steps."""

    depth: int
    budget: int

    def build(self, ids_host: np.ndarray, max_depth: int) -> TokenTrie:
        raise NotImplementedError

    def set_shape(self, knobs: dict) -> None:
        self.depth = knobs.get("depth", self.depth)
        self.budget = knobs.get("budget", self.budget)

    def propose(self, ctx: Context, max_depth: int, generator) -> Draft:
        return draft_from_trie(self.build(ctx.ids_host, max_depth), ctx.ids.device)


class NgramTreeDrafter(TrieDrafter):
    """Every continuation prompt lookup finds (n-gram sizes ngram..2), merged into one trie under a budget."""

    name = "ngram"

    def __init__(self, ngram: int, depth: int, budget: int):
        self.ngram, self.depth, self.budget = ngram, depth, budget

    def build(self, ids_host: np.ndarray, max_depth: int) -> TokenTrie:
        trie = TokenTrie()
        depth = min(self.depth, max_depth)
        if depth <= 0:
            return trie
        for seq in ngram_continuations(ids_host, self.ngram, depth):
            if trie.n_drafted >= self.budget:
                break
            trie.add_path(seq, self.name, budget=self.budget)
        return trie


class RetrievalDrafter(TrieDrafter):
    """REST / RASD-style retrieval: the most frequent continuations of the current suffix, as a trie.

    `datastores` maps a source name ("retrieval:shipped", "retrieval:file") to a
    SuffixArray built once; `use_context` adds the prompt plus the text so far,
    re-indexed each step. Counts from every store are pooled, so a continuation
    seen in both ranks higher.
    """

    def __init__(self, datastores: dict, use_context: bool, ngram: int, depth: int, budget: int, min_ngram: int = 2):
        self.datastores = datastores
        self.use_context = use_context
        self.ngram, self.depth, self.budget, self.min_ngram = ngram, depth, budget, min(min_ngram, ngram)
        names = [*datastores] + (["retrieval:context"] if use_context else [])
        self.name = names[0] if len(names) == 1 else "retrieval"

    def build(self, ids_host: np.ndarray, max_depth: int) -> TokenTrie:
        depth = min(self.depth, max_depth)
        if depth <= 0:
            return TokenTrie()
        stores = dict(self.datastores)
        if self.use_context:
            # the last token has no continuation yet; index everything before it
            stores["retrieval:context"] = SuffixArray(ids_host[:-1])
        sequences, labels = [], []
        for name, index in stores.items():
            _, found = suffix_continuations(index, ids_host, self.ngram, self.min_ngram, depth)
            sequences += found
            labels += [name] * len(found)
        if not sequences:
            return TokenTrie()
        trie = count_trie(sequences, max_nodes=self.budget, source=self.name)
        if len(stores) > 1:
            _label_sources(trie, sequences, labels)
        return trie


def _label_sources(trie: TokenTrie, sequences: list, labels: list) -> None:
    """Name each node after the store that contributed most of its continuations."""
    votes: list[dict] = [{} for _ in range(len(trie))]
    for seq, label in zip(sequences, labels):
        node = 0
        for t in seq:
            node = trie.child(node, t)
            if node is None:
                break
            votes[node][label] = votes[node].get(label, 0) + 1
    for i in range(1, len(trie)):
        if votes[i]:
            trie.source[i] = max(votes[i], key=votes[i].get)
