"""Method registry: name -> how to build its drafter, its knobs, and whether it is lossless.

The CLI's method list, the app's dropdown and knob controls, and validation all
read this table, so a new strategy is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import (BUDGET, CORPUS, DRAFT_LEN, DRAFT_VOCAB, EXIT_LAYER, JACOBI_WINDOW, NGRAM, PRUNE_PROB, TOP_K, TREE_DEPTH, TREE_PRESET,
                      ConfigError, Knob, SamplingConfig)
from .drafters import NoDrafter, PromptLookupDrafter, early_exit_model
from .jacobi import JacobiDrafter
from .retrieval import NgramTreeDrafter, RetrievalDrafter
from .shapes import chain
from .trained_drafters import FeatureTreeDrafter, MedusaDrafter
from .tree_drafters import DynamicShape, GraftDrafter, ModelTreeDrafter, StaticShape
from ..models.trained_heads import distilled_exit_model


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    summary: str
    knobs: tuple
    # build(target_model, draft_model_or_None, knob_values, sampling, datastores) -> drafter
    build: Callable
    uses_draft_model: bool = False
    uses_corpus: bool = False
    lossless: bool = True
    # a trained drafter kind ("medusa", "eagle", "exit") this method needs; its draft field is a head id
    uses_trained: str | None = None
    # knob defaults of this method where they differ from the knob's own (EAGLE-2's 60-node tree)
    defaults: tuple = ()

    def default(self, knob: Knob):
        return dict(self.defaults).get(knob.name, knob.default)

    def check_knobs(self, values: dict) -> dict:
        out = {}
        for knob in self.knobs:
            out[knob.name] = knob.check(values.get(knob.name, self.default(knob)))
        unknown = set(values) - {k.name for k in self.knobs}
        if unknown:
            raise ConfigError(f"method {self.name!r} has no knob(s) {sorted(unknown)}")
        return out


def _drafting_model(target, draft_model, knobs):
    """The draft model if one was given, else the target's own early exit; with its source label."""
    if draft_model is not None:
        return draft_model, "draft-model"
    return early_exit_model(target, knobs["exit_layer"]), f"early-exit-L{knobs['exit_layer']}"


def _retriever(knobs, datastores) -> RetrievalDrafter:
    use_context = knobs["corpus"] in ("context", "context+shipped")
    return RetrievalDrafter(datastores or {}, use_context, knobs["ngram"], knobs["depth"], knobs["budget"])


def _build_medusa(target, draft_model, knobs, sampling, datastores=None, trained=None):
    return MedusaDrafter(trained, target.lm_head, StaticShape(knobs["preset"], trained), sampling)


def _build_eagle(target, draft_model, knobs, sampling, datastores=None, trained=None):
    shape = DynamicShape(knobs["depth"], knobs["top_k"], knobs["budget"])
    return FeatureTreeDrafter(trained, target.model.embed_tokens, target.lm_head, shape, sampling,
                              draft_vocab=knobs["draft_vocab"])


def _build_exit_distilled(target, draft_model, knobs, sampling, datastores=None, trained=None):
    shape = DynamicShape(knobs["depth"], knobs["top_k"], knobs["budget"])
    return ModelTreeDrafter(distilled_exit_model(target, trained), shape, sampling,
                            f"distilled-exit-L{trained.exit_layer}")


def _build_ar(target, draft_model, knobs, sampling: SamplingConfig, datastores=None, trained=None):
    return NoDrafter()


def _build_sps(target, draft_model, knobs, sampling, datastores=None, trained=None):
    model, source = _drafting_model(target, draft_model, knobs)
    return ModelTreeDrafter(model, StaticShape(chain(knobs["draft_len"])), sampling, source)


def _build_static(target, draft_model, knobs, sampling, datastores=None, trained=None):
    model, source = _drafting_model(target, draft_model, knobs)
    return ModelTreeDrafter(model, StaticShape(knobs["preset"]), sampling, source)


def _build_dynamic(target, draft_model, knobs, sampling, datastores=None, trained=None):
    model, source = _drafting_model(target, draft_model, knobs)
    shape = DynamicShape(knobs["depth"], knobs["top_k"], knobs["budget"])
    return ModelTreeDrafter(model, shape, sampling, source)


def _build_prompt_lookup(target, draft_model, knobs, sampling, datastores=None, trained=None):
    return PromptLookupDrafter(knobs["ngram"], knobs["draft_len"])


def _build_ngram_tree(target, draft_model, knobs, sampling, datastores=None, trained=None):
    return NgramTreeDrafter(knobs["ngram"], knobs["depth"], knobs["budget"])


def _build_retrieval(target, draft_model, knobs, sampling, datastores=None, trained=None):
    return _retriever(knobs, datastores)


def _build_graft(target, draft_model, knobs, sampling, datastores=None, trained=None):
    model, source = _drafting_model(target, draft_model, knobs)
    shape = DynamicShape(knobs["depth"], knobs["top_k"], knobs["budget"])
    return GraftDrafter(ModelTreeDrafter(model, shape, sampling, source), _retriever(knobs, datastores),
                        knobs["prune_prob"])


def _build_jacobi(target, draft_model, knobs, sampling, datastores=None, trained=None):
    return JacobiDrafter(knobs["window"])


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
            "static_tree",
            "Static tree (Medusa-style shape)",
            "The draft model fills a fixed tree shape: node (0, 1) is the 2nd-best token after the best one. "
            "Siblings give the target several chances per position, in the same single verify pass.",
            (TREE_PRESET, EXIT_LAYER),
            _build_static,
            uses_draft_model=True,
        ),
        Method(
            "dynamic_tree",
            "Dynamic tree (EAGLE-2 style)",
            "Grow the tree level by level from the nodes with the highest cumulative draft probability, "
            "top-k children each, then keep the budget's most likely nodes.",
            (TREE_DEPTH, TOP_K, BUDGET, EXIT_LAYER),
            _build_dynamic,
            uses_draft_model=True,
        ),
        Method(
            "prompt_lookup",
            "Prompt lookup (n-gram chain)",
            "Model-free: find the latest earlier occurrence of the last n tokens in the prompt and the text "
            "so far, and draft what followed it.",
            (NGRAM, DRAFT_LEN),
            _build_prompt_lookup,
        ),
        Method(
            "ngram_tree",
            "N-gram tree (all lookups merged)",
            "Model-free: every continuation that prompt lookup finds, for n-gram sizes ngram down to 2, "
            "merged into one trie (longest matches and most recent first) under a node budget.",
            (NGRAM, TREE_DEPTH, BUDGET),
            _build_ngram_tree,
        ),
        Method(
            "retrieval",
            "Retrieval tree (REST / RASD style)",
            "Model-free: a suffix-array datastore returns the most frequent continuations of the current "
            "suffix, as a trie. Corpus: the prompt + text so far, the shipped corpus, or your text file.",
            (CORPUS, NGRAM, TREE_DEPTH, BUDGET),
            _build_retrieval,
            uses_corpus=True,
        ),
        Method(
            "graft",
            "Grafted hybrid tree (Graft)",
            "Prune the model's dynamic tree to nodes above a cumulative probability, then graft retrieved "
            "continuations into the budget that pruning freed. Each node records who proposed it.",
            (TREE_DEPTH, TOP_K, BUDGET, PRUNE_PROB, CORPUS, NGRAM, EXIT_LAYER),
            _build_graft,
            uses_draft_model=True,
            uses_corpus=True,
        ),
        Method(
            "jacobi",
            "Jacobi decoding (fixed-point iteration)",
            "No drafter: the target refines guesses for the next `window` positions in parallel; guesses that "
            "match its predictions have converged and are committed. The Diffusion tab shows it as a lattice.",
            (JACOBI_WINDOW,),
            _build_jacobi,
        ),
        Method(
            "eagle",
            "EAGLE-style drafter, dynamic tree (trained)",
            "A trained one-layer drafter reads the target's own features and predicts the next feature, "
            "autoregressively; the target's LM head turns each into draft tokens, grown into an EAGLE-2 "
            "dynamic tree. Shipped for the embedded model; for a Hub target give an EAGLE head id.",
            (TREE_DEPTH, TOP_K, BUDGET, DRAFT_VOCAB),
            _build_eagle,
            uses_trained="eagle",
            defaults=(("depth", 6), ("top_k", 8), ("budget", 60), ("draft_vocab", 8192)),
        ),
        Method(
            "medusa",
            "Medusa heads, static tree (trained)",
            "K trained heads read the target's last feature; head k guesses the token k+1 ahead, and the "
            "static tree takes each head's top choices. Shipped for the embedded model; for a Hub target "
            "give a Medusa head id.",
            (TREE_PRESET,),
            _build_medusa,
            uses_trained="medusa",
            defaults=(("preset", "calibrated"),),
        ),
        Method(
            "exit_distilled",
            "Distilled early exit, dynamic tree (trained)",
            "The target's first layers with a fine-tuned top layer and exit norm, trained on the target's own "
            "outputs (LayerSkip / FastDraft style), drafting a dynamic tree. Shipped for the embedded model.",
            (TREE_DEPTH, TOP_K, BUDGET),
            _build_exit_distilled,
            uses_trained="exit",
            defaults=(("depth", 6), ("top_k", 4), ("budget", 24)),
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
