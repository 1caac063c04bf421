"""Trained drafters that ride on the target: Medusa heads, an EAGLE-style feature drafter, and a
distilled early exit. The modules here hold only the trained weights; the target's embedding and
LM head are passed in (shared, frozen), so what ships is a few MB.

Features are the target's final hidden states after its last norm: exactly what its LM head
reads, so `lm_head(feature)` is the target's own next-token logits.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Medusa-1's head body: x + SiLU(W x + b), W zero-initialised so a fresh head starts as the
    target's own next-token guess (the residual is the identity)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        return x + F.silu(self.linear(x))


class MedusaHeads(nn.Module):
    """K heads; head k (1-based) reads the feature at position t and guesses the token at t + 1 + k.

    Head k's logits are `lm_head(heads[k-1](feature))` with the target's LM head, unless a Hub
    checkpoint brought its own per-head LM heads (`own_lm_heads`)."""

    def __init__(self, hidden: int, n_heads: int, n_blocks: int = 1):
        super().__init__()
        self.hidden, self.n_heads, self.n_blocks = hidden, n_heads, n_blocks
        self.heads = nn.ModuleList(nn.Sequential(*[ResBlock(hidden) for _ in range(n_blocks)]) for _ in range(n_heads))
        self.own_lm_heads: nn.ModuleList | None = None
        # Medusa's calibrated sparse tree: rank paths fitted to the heads' held-out rank accuracies
        self.tree: list | None = None
        self.rank_accuracy: list | None = None

    def forward(self, features: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
        """[..., H] -> [K, ..., V] logits."""
        outs = []
        for k, head in enumerate(self.heads):
            h = head(features)
            outs.append(self.own_lm_heads[k](h) if self.own_lm_heads is not None else lm_head(h))
        return torch.stack(outs)

    def config(self) -> dict:
        out = {"kind": "medusa", "hidden": self.hidden, "n_heads": self.n_heads, "n_blocks": self.n_blocks}
        if self.tree:
            out.update(tree=[list(p) for p in self.tree], rank_accuracy=self.rank_accuracy)
        return out


def _rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class DraftKVCache:
    """The feature drafter's one-layer KV: keys and values [B, kv_heads, T, D].

    With a `capacity` (inference) it is preallocated like the target's slab: entries are written in
    place behind a fill length, `k` / `v` are views of the filled part, and the buffer doubles if a
    run outgrows it. Without one (training, the default) each `append` concatenates, so autograd
    sees fresh tensors rather than a buffer written in place after it was read."""

    def __init__(self, capacity: int = 0):
        self.capacity = int(capacity)
        self._k = self._v = None
        self.length = 0

    def __len__(self) -> int:
        return self.length

    @property
    def k(self):
        return None if self._k is None else self._k[..., : self.length, :]

    @property
    def v(self):
        return None if self._v is None else self._v[..., : self.length, :]

    def append(self, k, v):
        n = k.shape[-2]
        if not self.capacity:
            self._k = k if self._k is None else torch.cat([self.k, k], dim=-2)
            self._v = v if self._v is None else torch.cat([self.v, v], dim=-2)
        else:
            self._reserve(self.length + n, k)
            self._k[..., self.length : self.length + n, :] = k
            self._v[..., self.length : self.length + n, :] = v
        self.length += n
        return self.k, self.v

    def _reserve(self, length: int, like: torch.Tensor) -> None:
        size = 0 if self._k is None else self._k.shape[-2]
        if length <= size:
            return
        size = max(length, 2 * size, self.capacity)
        shape = (*like.shape[:-2], size, like.shape[-1])
        k, v = like.new_zeros(shape), like.new_zeros(shape)
        if self.length:
            k[..., : self.length, :], v[..., : self.length, :] = self.k, self.v
        self._k, self._v = k, v

    def truncate(self, length: int) -> None:
        """Keep the first `length` entries."""
        self.length = min(self.length, int(length))
        if not self.capacity and self._k is not None:
            self._k, self._v = self.k, self.v

    def keep(self, index: torch.Tensor) -> None:
        """Keep the entries at `index`, in that order."""
        if self._k is None:
            return
        k, v = self.k.index_select(-2, index), self.v.index_select(-2, index)
        self.length = 0
        if not self.capacity:
            self._k = self._v = None
        self.append(k, v)


class FeatureDrafter(nn.Module):
    """EAGLE-style drafter: one Llama decoder layer over fc([embed(token_{t+1}); feature_t]) that
    predicts feature_{t+1}; the target's LM head turns predicted features into draft logits.

    Named like EAGLE's checkpoints (fc, layers.0.self_attn.*, layers.0.mlp.*,
    layers.0.post_attention_layernorm), whose first layer has no input norm."""

    def __init__(self, hidden: int, n_heads: int, n_kv_heads: int, intermediate: int, rope_theta: float = 10000.0,
                 rms_eps: float = 1e-5, head_dim: int | None = None, fc_bias: bool = True):
        super().__init__()
        self.hidden, self.n_heads, self.n_kv_heads, self.intermediate = hidden, n_heads, n_kv_heads, intermediate
        self.head_dim = head_dim or hidden // n_heads
        self.rope_theta, self.rms_eps, self.fc_bias = rope_theta, rms_eps, fc_bias
        self.fc = nn.Linear(2 * hidden, hidden, bias=fc_bias)
        self.q_proj = nn.Linear(hidden, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, hidden, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=rms_eps)
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        # token ids ranked by frequency in the training data (FR-Spec); drafting may use a prefix of it
        self.draft_vocab: torch.Tensor | None = None

    @classmethod
    def for_target(cls, config) -> "FeatureDrafter":
        return cls(config.hidden_size, config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads,
                   config.intermediate_size, float(_rope_theta(config)), float(config.rms_norm_eps),
                   getattr(config, "head_dim", None))

    def config(self) -> dict:
        return {"kind": "eagle", "hidden": self.hidden, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
                "intermediate": self.intermediate, "rope_theta": self.rope_theta, "rms_eps": self.rms_eps,
                "head_dim": self.head_dim, "fc_bias": self.fc_bias,
                "draft_vocab": 0 if self.draft_vocab is None else int(self.draft_vocab.numel())}

    def _rope(self, x, positions):
        inv = 1.0 / (self.rope_theta ** (torch.arange(0, self.head_dim, 2, device=x.device, dtype=torch.float32) / self.head_dim))
        ang = positions.to(torch.float32)[..., None] * inv  # [B, T, D/2]
        emb = torch.cat([ang, ang], dim=-1)[:, None]  # [B, 1, T, D]
        return (x * emb.cos().to(x.dtype)) + (_rotate_half(x) * emb.sin().to(x.dtype))

    def forward(self, token_embeds: torch.Tensor, features: torch.Tensor, positions: torch.Tensor,
                allowed: torch.Tensor | None = None, cache: DraftKVCache | None = None) -> torch.Tensor:
        """token_embeds, features: [B, T, H]; positions [B, T]; allowed: bool [T, S] (S = cached + T)
        or None for causal. Returns the predicted features [B, T, H]."""
        b, t, _ = features.shape
        x = self.fc(torch.cat([token_embeds, features], dim=-1))
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self._rope(q, positions), self._rope(k, positions)
        if cache is not None:
            k, v = cache.append(k, v)
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if allowed is None:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=k.shape[-2] == t) if k.shape[-2] == t else \
                F.scaled_dot_product_attention(q, k, v)
        else:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        h = x + self.o_proj(att.transpose(1, 2).reshape(b, t, -1))
        m = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


def _rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        params = getattr(config, "rope_parameters", None) or {}
        theta = params.get("rope_theta", 10000.0)
    return theta


class ExitDraftLayers(nn.Module):
    """The trained part of the distilled early exit: the last `n_trained` of its decoder layers and
    the exit norm. The layers before them stay the target's own (shared, not shipped)."""

    def __init__(self, target, exit_layer: int, n_trained: int = 1):
        super().__init__()
        body = target.model
        self.exit_layer, self.n_trained = exit_layer, n_trained
        self.layers = nn.ModuleList(copy.deepcopy(body.layers[i]) for i in range(exit_layer - n_trained, exit_layer))
        self.norm = copy.deepcopy(body.norm)
        for p in self.parameters():
            p.requires_grad_(True)

    def config(self) -> dict:
        return {"kind": "exit", "exit_layer": self.exit_layer, "n_trained": self.n_trained}


def distilled_exit_model(target, trained: ExitDraftLayers) -> nn.Module:
    """The target's first layers with the trained top layers and norm swapped in: a causal LM the
    model-tree drafter can drive like any draft model."""
    from .early_exit import early_exit_model

    draft = early_exit_model(target, trained.exit_layer)
    first = trained.exit_layer - trained.n_trained
    draft.model.layers = nn.ModuleList(list(draft.model.layers[:first]) + list(trained.layers))
    for i, layer in enumerate(draft.model.layers):
        if hasattr(layer, "self_attn"):
            layer.self_attn.layer_idx = i
    draft.model.norm = trained.norm
    return draft.eval()


def cosine_lr(step: int, total: int, base: float, warmup: int = 50) -> float:
    warmup = min(warmup, total // 10 + 1)  # short runs (tests) still spend most steps at full rate
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
