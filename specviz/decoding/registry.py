"""Method registry: name -> how to build its drafter, its knobs, and whether it is lossless.

The CLI's method list, the app's dropdown and knob sliders, and validation all
read this table, so a new strategy is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import DRAFT_LEN, EXIT_LAYER, NGRAM, ConfigError, Knob, SamplingConfig
from .drafters import ModelDrafter, NoDrafter, PromptLookupDrafter, early_exit_model


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    summary: str
    knobs: tuple
    # build(target_model, draft_model_or_None, knob_values, sampling) -> drafter
    build: Callable
    uses_draft_model: bool = False
    lossless: bool = True

    def check_knobs(self, values: dict) -> dict:
        out = {}
        for knob in self.knobs:
            out[knob.name] = knob.check(values.get(knob.name, knob.default))
        unknown = set(values) - {k.name for k in self.knobs}
        if unknown:
            raise ConfigError(f"method {self.name!r} has no knob(s) {sorted(unknown)}")
        return out


def _build_ar(target, draft_model, knobs, sampling: SamplingConfig):
    return NoDrafter()


def _build_sps(target, draft_model, knobs, sampling: SamplingConfig):
    if draft_model is not None:
        return ModelDrafter(draft_model, knobs["draft_len"], sampling, source="draft-model")
    self_draft = early_exit_model(target, knobs["exit_layer"])
    return ModelDrafter(self_draft, knobs["draft_len"], sampling, source=f"early-exit-L{knobs['exit_layer']}")


def _build_prompt_lookup(target, draft_model, knobs, sampling: SamplingConfig):
    return PromptLookupDrafter(knobs["ngram"], knobs["draft_len"])


METHODS = {
    m.name: m
    for m in (
        Method(
            "ar",
            "Autoregressive (baseline)",
            "One target forward per token. The lossless oracle every other method is checked against.",
            (),
            _build_ar,
        ),
        Method(
            "sps",
            "Draft-model chain (SpS)",
            "A smaller model drafts a chain that the target verifies in one pass. Without a draft model id, "
            "the draft is the target's own first k layers + final norm + LM head (early-exit self-speculation).",
            (DRAFT_LEN, EXIT_LAYER),
            _build_sps,
            uses_draft_model=True,
        ),
        Method(
            "prompt_lookup",
            "Prompt lookup (n-gram)",
            "Model-free: find the latest earlier occurrence of the last n tokens in the prompt and the text "
            "so far, and draft what followed it.",
            (NGRAM, DRAFT_LEN),
            _build_prompt_lookup,
        ),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def knob_table() -> dict[str, Knob]:
    return {k.name: k for m in METHODS.values() for k in m.knobs}
