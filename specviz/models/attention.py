"""The attention every decoding forward runs through: specviz's tree attention kernel.

Registered with transformers' attention interface under the name "specviz",
so an unmodified Hugging Face model calls our kernel in each layer. A forward
passes `tree_mask=TreeMask(...)` to score a draft tree; without it the rule is
causal (prefill, plain decoding, chains). A caller that passes its own 4D mask
gets SDPA with that mask, unchanged.
"""
from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ..kernels.tree_attention import TreeMask, tree_attention

NAME = "specviz"


def specviz_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      tree_mask: TreeMask | None = None, **kwargs):
    if attention_mask is not None and tree_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    out = tree_attention(query, key, value, tree_mask, scale=scaling)
    # transformers wants [B, Q, H, D]
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, specviz_attention)


def install(model: torch.nn.Module) -> torch.nn.Module:
    """Route the model's attention through specviz's kernels (idempotent)."""
    if model.config._attn_implementation != NAME:
        model.set_attn_implementation(NAME)
    return model


@contextlib.contextmanager
def implementation(model: torch.nn.Module, name: str):
    """Run a block under another attention implementation, e.g. an independent oracle under "sdpa"."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


def supports(model: torch.nn.Module) -> bool:
    """Whether the model can run on our attention kernel and slab cache.

    It must use transformers' attention interface, and have no sliding-window
    layers (the kernel attends to the whole prefix). Other models keep SDPA,
    transformers' DynamicCache and 4D masks: slower, same tokens.
    """
    config = getattr(model, "config", None)
    if config is None or not getattr(model, "_supports_attention_backend", False):
        return False
    if getattr(config, "sliding_window", None) or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return False
    return True


def new_cache(model: torch.nn.Module, capacity: int = 1024):
    """A slab cache wired to our kernels when the model supports them, else a DynamicCache; the model's
    linear layers get the packed CPU path (`fast_linear`) either way."""
    from transformers import DynamicCache

    from . import fast_linear
    from .cache import SlabCache

    fast_linear.install(model)  # float32 CPU forwards on oneDNN's prepacked linear (SPECVIZ_FAST_LINEAR=0: off)
    if supports(model):
        install(model)
        return SlabCache(model.config.num_hidden_layers, capacity)
    return DynamicCache()
