"""Early-exit self-drafting: the target's first layers plus its final norm and LM head, sharing its weights."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..config import ConfigError


def early_exit_model(target: nn.Module, n_layers: int) -> nn.Module:
    """A self-draft that shares the target's weights: its first `n_layers`
    decoder layers, then the final norm and LM head (early-exit self-speculation).

    Works for decoder-only models laid out as `model.layers` + `model.norm` +
    `lm_head` (Llama, Mistral, Qwen, SmolLM, Phi-3 …). No weights are copied.
    """
    body = getattr(target, "model", None)
    total = len(getattr(body, "layers", []))
    if total == 0 or not hasattr(body, "norm") or not hasattr(target, "lm_head"):
        raise ConfigError(
            f"early-exit self-drafting needs a model with model.layers, model.norm and lm_head; "
            f"{type(target).__name__} is laid out differently. Give a draft model id instead."
        )
    if not 1 <= n_layers < total:
        raise ConfigError(f"exit_layer={n_layers} is out of range: the target has {total} layers, so use 1..{total - 1}")
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
