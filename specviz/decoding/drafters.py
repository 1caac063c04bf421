"""Drafters: cheap proposers of the tokens the target will verify.

A drafter sees the committed context and returns a `Draft`: tokens in
topological order with their parents (0 = the root, i.e. the last committed
token), the probability the drafter gave each token, and, when the drafter
samples from a distribution, that full distribution so that verification can
stay lossless. After verification the engine calls `on_commit` with the
accepted path so the drafter can roll back its own state.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


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


class NoDrafter:
    """Plain autoregressive decoding: every step is one target forward over the root alone."""

    name = "none"

    def reset(self, prompt_ids: np.ndarray) -> None:
        pass

    def propose(self, ctx: Context, max_depth: int, generator: torch.Generator) -> Draft:
        return Draft.empty(ctx.ids.device)

    def on_commit(self, accepted_path: list, n_committed: int) -> None:
        pass


class PromptLookupDrafter:
    """Model-free drafting: find the latest earlier occurrence of the context's
    last n tokens (n from `ngram` down to 2, or 1 if ngram is 1) and propose what followed it.

    Single-token matches are skipped unless asked for: they fire on almost
    every step and are usually wrong, and each wasted draft token costs target
    compute (on a CPU, a 5-token verify costs about twice a 1-token step)."""

    def __init__(self, ngram: int, draft_len: int, source: str = "ngram"):
        self.ngram = ngram
        self.draft_len = draft_len
        self.name = source

    def reset(self, prompt_ids: np.ndarray) -> None:
        pass

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

    def on_commit(self, accepted_path: list, n_committed: int) -> None:
        pass


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


def early_exit_model(target: nn.Module, n_layers: int) -> nn.Module:
    """A self-draft that shares the target's weights: its first `n_layers`
    decoder layers, then the final norm and LM head (early-exit self-speculation).

    Works for decoder-only models laid out as `model.layers` + `model.norm` +
    `lm_head` (Llama, Mistral, Qwen, SmolLM, Phi-3 …). No weights are copied.
    """
    body = getattr(target, "model", None)
    total = len(getattr(body, "layers", []))
    if total == 0 or not hasattr(body, "norm") or not hasattr(target, "lm_head"):
        raise ValueError(
            f"early-exit self-drafting needs a model with model.layers, model.norm and lm_head; "
            f"{type(target).__name__} is laid out differently. Give a draft model id instead."
        )
    if not 1 <= n_layers < total:
        raise ValueError(f"exit_layer={n_layers} is out of range: the target has {total} layers, so use 1..{total - 1}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:n_layers]
    with torch.device("meta"):
        draft = type(target)(config)
    draft.model.embed_tokens = body.embed_tokens
    draft.model.layers = nn.ModuleList(body.layers[:n_layers])
    draft.model.norm = body.norm
    if hasattr(body, "rotary_emb"):
        draft.model.rotary_emb = body.rotary_emb
    draft.lm_head = target.lm_head
    leftover = [n for n, p in list(draft.named_parameters()) + list(draft.named_buffers()) if p.is_meta]
    if leftover:
        raise ValueError(f"early-exit self-draft could not share {leftover[:3]} with the target")
    return draft.eval()


class FeatureTap:
    """Catches the target's final features (the output of its last norm, which its LM head reads)
    during the forwards it wraps, for drafters that read them: `with tap: target(...)`, then `take()`."""

    def __init__(self, target: nn.Module):
        norm = getattr(getattr(target, "model", None), "norm", None)
        if norm is None:
            raise ValueError(
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
