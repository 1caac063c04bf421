"""Drafters: cheap proposers of the tokens the target will verify.

A drafter sees the committed context and returns a `Draft`: tokens in
topological order with their parents (0 = the root, i.e. the last committed
token), the probability the drafter gave each token, and, when the drafter
samples from a distribution, that full distribution so that verification can
stay lossless. After verification the engine calls `commit` with the
accepted path so the drafter can roll back its own state.

The contract is the declared `Drafter` protocol; `DrafterBase` gives every
optional hook an explicit do-nothing default, so the engine calls each hook
unconditionally instead of probing with `hasattr`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..config import ConfigError


@dataclass
class Draft:
    token_ids: torch.Tensor  # [M] long, on the target's device
    parent: np.ndarray  # [M] tree indices of parents (0 = root, node j is token j-1)
    draft_probs: torch.Tensor  # [M] float
    # [M, V] the exact proposal each token was drawn from (siblings drawn without replacement:
    # renormalised over the tokens not drawn before it); an all-zero row, or None for the whole
    # draft, marks tokens chosen deterministically, which verification treats as point masses
    dists: torch.Tensor | None
    source: tuple  # [M] str
    forwards: int = 0  # drafter model forwards spent

    @classmethod
    def empty(cls, device) -> "Draft":
        return cls(
            torch.zeros(0, dtype=torch.long, device=device),
            np.zeros(0, dtype=np.int64),
            torch.zeros(0, device=device),
            None,
            (),
        )


@dataclass
class Context:
    """The committed tokens, root included, on the device and on the host."""

    ids: torch.Tensor  # [L] long
    ids_host: np.ndarray  # [L] int64


@runtime_checkable
class Drafter(Protocol):
    """What the engine needs from a drafter, per step: propose, then commit; reset per prompt.

    - `propose(ctx, max_depth, generator)`: the draft for the root `ctx.ids[-1]`, no deeper than max_depth;
    - `commit(accepted_path, n_committed)`: the tree nodes the target accepted (root excluded, in depth
      order) and how many tokens the step committed; a drafter with a cache keeps the accepted nodes';
    - `reset(prompt_ids)`: forget everything before a new prompt.
    Hooks (default: do nothing, see `DrafterBase`):
    - `reads_target_features` / `on_target_features(features)`: the target's final features of the
      tokens just committed (prefill, then each step's root and accepted nodes), for trained drafters;
    - `on_scored(logits, verdict)`: the target's logits over this step's tree (Jacobi reuses them);
    - `set_shape(knobs)`: live knobs (tree shape, window) changed mid-run; applies from the next step.
    """

    name: str
    reads_target_features: bool

    def reset(self, prompt_ids: np.ndarray) -> None: ...

    def propose(self, ctx: "Context", max_depth: int, generator: torch.Generator) -> "Draft": ...

    def commit(self, accepted_path: list, n_committed: int) -> None: ...

    def on_target_features(self, features: torch.Tensor) -> None: ...

    def on_scored(self, logits: torch.Tensor, verdict) -> None: ...

    def set_shape(self, knobs: dict) -> None: ...


class DrafterBase:
    """The optional hooks of the `Drafter` protocol, as explicit defaults."""

    name = "drafter"
    reads_target_features = False

    def reset(self, prompt_ids: np.ndarray) -> None:
        pass

    def commit(self, accepted_path: list, n_committed: int) -> None:
        pass

    def on_target_features(self, features: torch.Tensor) -> None:
        pass

    def on_scored(self, logits: torch.Tensor, verdict) -> None:
        pass

    def set_shape(self, knobs: dict) -> None:
        pass


class NoDrafter(DrafterBase):
    """Plain autoregressive decoding: every step is one target forward over the root alone."""

    name = "none"

    def propose(self, ctx: Context, max_depth: int, generator: torch.Generator) -> Draft:
        return Draft.empty(ctx.ids.device)


class PromptLookupDrafter(DrafterBase):
    """Model-free drafting: find the latest earlier occurrence of the context's
    last n tokens (n from `ngram` down to 2, or 1 if ngram is 1) and propose what followed it.

    Single-token matches are skipped unless asked for: they fire on almost
    every step and are usually wrong, and each wasted draft token costs target
    compute (on a CPU, a 5-token verify costs about twice a 1-token step)."""

    def __init__(self, ngram: int, draft_len: int, source: str = "ngram"):
        self.ngram = ngram
        self.draft_len = draft_len
        self.name = source

    def set_shape(self, knobs: dict) -> None:
        self.draft_len = knobs.get("draft_len", self.draft_len)

    def propose(self, ctx: Context, max_depth: int, generator: torch.Generator) -> Draft:
        gamma = min(self.draft_len, max_depth)
        found = ngram_continuations(ctx.ids_host, self.ngram, gamma) if gamma > 0 else []
        continuation = found[0] if found else []
        m = len(continuation)
        if m == 0:
            return Draft.empty(ctx.ids.device)
        return Draft(
            token_ids=torch.tensor(continuation, dtype=torch.long, device=ctx.ids.device),
            parent=np.arange(m, dtype=np.int64),
            draft_probs=torch.ones(m, device=ctx.ids.device),
            dists=None,
            source=(self.name,) * m,
        )


def ngram_continuations(ids: np.ndarray, max_n: int, length: int, min_n: int | None = None) -> list:
    """Prompt lookup's matches: what followed every earlier occurrence of the context's last n tokens.

    Longest n first, most recent occurrence first within one n; this order is
    the priority in which tree builders spend their budget."""
    n_ids = ids.shape[0]
    min_n = min(2, max_n) if min_n is None else min_n
    out = []
    for n in range(min(max_n, n_ids - 1), min_n - 1, -1):
        suffix = ids[n_ids - n :]
        # windows starting at 0 .. n_ids-n-1: every occurrence except the suffix itself
        windows = np.lib.stride_tricks.sliding_window_view(ids[: n_ids - 1], n)
        hits = np.flatnonzero(np.all(windows == suffix, axis=1))
        for start in hits[::-1]:
            follow = ids[start + n : start + n + length]
            if follow.shape[0] > 0:
                out.append(follow.tolist())
    return out


class FeatureTap:
    """Catches the target's final features (the output of its last norm, which its LM head reads)
    during the forwards it wraps, for drafters that read them: `with tap: target(...)`, then `take()`."""

    def __init__(self, target: nn.Module):
        norm = getattr(getattr(target, "model", None), "norm", None)
        if norm is None:
            raise ConfigError(
                f"this drafter reads the target's final features, which needs a model laid out as model.norm + "
                f"lm_head; {type(target).__name__} is laid out differently"
            )
        self.norm = norm
        self.value = None
        self._hook = None

    def __enter__(self):
        self._hook = self.norm.register_forward_hook(self._grab)
        return self

    def __exit__(self, *exc):
        self._hook.remove()
        self._hook = None

    def _grab(self, module, args, output):
        self.value = output

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("the target's forward did not pass through its final norm")
        return value
