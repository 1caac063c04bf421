"""Method registry: name -> how to build its drafter, its knobs, and whether it is lossless.

The CLI's method list, the app's dropdown and knob controls, the settings
validation and every method-wide test read this table, so a new strategy is one
drafter module plus one `register_method(Method(...))` (see README, "Adding a method").
A builder takes one `BuildContext` and returns a `Drafter`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from ..config import (AUTO, BUDGET, CORPUS, DRAFT_LEN, DRAFT_VOCAB, EXIT_LAYER, JACOBI_WINDOW, NGRAM, PRUNE_PROB, TOP_K, TREE_DEPTH, TREE_PRESET,
                      ConfigError, Knob, SamplingConfig, shown)
from .auto import AUTO_MAX_NODES, CostAwareDrafter, MergedTrieDrafter
from .drafters import NoDrafter, PromptLookupDrafter
from ..models.early_exit import early_exit_model
from .jacobi import JacobiDrafter
from .retrieval import NgramTreeDrafter, RetrievalDrafter
from .shapes import chain
from .trained_drafters import FeatureTreeDrafter, MedusaDrafter
from .tree_drafters import DynamicShape, GraftDrafter, ModelTreeDrafter, StaticShape
from ..models.trained_heads import distilled_exit_model


@dataclass(frozen=True)
class BuildContext:
    """What a drafter builder may use: the target, an optional draft model, the checked knobs, the
    sampling settings, the retrieval datastores and the trained drafter module, when the method has them."""

    target: object  # the target model (nn.Module)
    knobs: dict = field(default_factory=dict)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    draft_model: object = None
    datastores: dict = field(default_factory=dict)
    trained: object = None
    # this machine's verify-cost curve of the target (a CostCurve, or a callable measuring it on first use),
    # for drafts sized by cost: a budget of "auto" and the auto method
    costs: object = None


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    summary: str
    knobs: tuple
    build: Callable  # (BuildContext) -> Drafter
    uses_draft_model: bool = False
    uses_corpus: bool = False
    lossless: bool = True
    # a trained drafter kind ("medusa", "eagle", "exit") this method needs; its draft field is a head id
    uses_trained: str | None = None
    # knob defaults of this method where they differ from the knob's own (EAGLE-2's 60-node tree)
    defaults: tuple = ()

    def default(self, knob: Knob):
        return dict(self.defaults).get(knob.name, knob.default)

    @property
    def knob_map(self) -> dict:
        return {k.name: k for k in self.knobs}

    def drafter(self, target, knobs: dict | None = None, sampling: SamplingConfig | None = None, **context):
        """Build this method's drafter; knobs are checked (missing ones take the method's defaults)."""
        return self.make(BuildContext(target, self.check_knobs(knobs or {}), sampling or SamplingConfig(),
                                      **context))

    def make(self, ctx: BuildContext):
        """The drafter for checked knobs. A budget of "auto" builds the drafter at the largest budget an
        auto-sized step may verify and lets `CostAwareDrafter` cut each step's draft to what pays."""
        if ctx.knobs.get("budget") != AUTO:
            return self.build(ctx)
        inner = self.build(replace(ctx, knobs={**ctx.knobs, "budget": AUTO_MAX_NODES}))
        return CostAwareDrafter(inner, ctx.costs, ctx.sampling)

    def check_knobs(self, values: dict) -> dict:
        out = {}
        for knob in self.knobs:
            out[knob.name] = knob.check(values.get(knob.name, self.default(knob)))
        unknown = set(values) - {k.name for k in self.knobs}
        if unknown:
            raise ConfigError(f"method {self.name!r} has no knob(s) {sorted(unknown)}")
        return out


def _drafting_model(ctx: BuildContext):
    """The draft model if one was given, else the target's own early exit; with its source label."""
    if ctx.draft_model is not None:
        return ctx.draft_model, "draft-model"
    k = ctx.knobs["exit_layer"]
    return early_exit_model(ctx.target, k), f"early-exit-L{k}"


def _dynamic_shape(knobs) -> DynamicShape:
    return DynamicShape(knobs["depth"], knobs["top_k"], knobs["budget"])


def _retriever(ctx: BuildContext) -> RetrievalDrafter:
    k = ctx.knobs
    use_context = k["corpus"] in ("context", "context+shipped")
    return RetrievalDrafter(ctx.datastores or {}, use_context, k["ngram"], k["depth"], k["budget"])


def _build_medusa(ctx: BuildContext):
    return MedusaDrafter(ctx.trained, ctx.target.lm_head, StaticShape(ctx.knobs["preset"], ctx.trained), ctx.sampling)


def _build_eagle(ctx: BuildContext):
    return FeatureTreeDrafter(ctx.trained, ctx.target.model.embed_tokens, ctx.target.lm_head,
                              _dynamic_shape(ctx.knobs), ctx.sampling, draft_vocab=ctx.knobs["draft_vocab"])


def _build_exit_distilled(ctx: BuildContext):
    return ModelTreeDrafter(distilled_exit_model(ctx.target, ctx.trained), _dynamic_shape(ctx.knobs), ctx.sampling,
                            f"distilled-exit-L{ctx.trained.exit_layer}")


def _build_ar(ctx: BuildContext):
    return NoDrafter()


def _build_sps(ctx: BuildContext):
    model, source = _drafting_model(ctx)
    return ModelTreeDrafter(model, StaticShape(chain(ctx.knobs["draft_len"])), ctx.sampling, source)


def _build_static(ctx: BuildContext):
    model, source = _drafting_model(ctx)
    return ModelTreeDrafter(model, StaticShape(ctx.knobs["preset"]), ctx.sampling, source)


def _build_dynamic(ctx: BuildContext):
    model, source = _drafting_model(ctx)
    return ModelTreeDrafter(model, _dynamic_shape(ctx.knobs), ctx.sampling, source)


def _build_prompt_lookup(ctx: BuildContext):
    return PromptLookupDrafter(ctx.knobs["ngram"], ctx.knobs["draft_len"])


def _build_ngram_tree(ctx: BuildContext):
    return NgramTreeDrafter(ctx.knobs["ngram"], ctx.knobs["depth"], ctx.knobs["budget"])


def _build_graft(ctx: BuildContext):
    model, source = _drafting_model(ctx)
    return GraftDrafter(ModelTreeDrafter(model, _dynamic_shape(ctx.knobs), ctx.sampling, source), _retriever(ctx),
                        ctx.knobs["prune_prob"])


def _build_auto(ctx: BuildContext):
    # prompt lookup's every match (the n-gram tree) first, then the datastores' most frequent continuations;
    # the context is already the n-gram tree's, so retrieval reads only the shipped corpus or a file
    ngram = NgramTreeDrafter(ctx.knobs["ngram"], ctx.knobs["depth"], AUTO_MAX_NODES)
    stores = RetrievalDrafter(ctx.datastores or {}, False, ctx.knobs["ngram"], ctx.knobs["depth"], AUTO_MAX_NODES)
    drafters = [ngram, stores] if ctx.datastores else [ngram]
    return CostAwareDrafter(MergedTrieDrafter(drafters, ctx.knobs["depth"], AUTO_MAX_NODES), ctx.costs, ctx.sampling)


def _build_jacobi(ctx: BuildContext):
    return JacobiDrafter(ctx.knobs["window"])


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
            _retriever,
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
            "auto",
            "Auto: cheap drafters sized by this machine's costs",
            "Model-free drafts (every prompt-lookup match, plus the shipped corpus or your file) merged into one "
            "tree, cut each step to the nodes worth verifying on this machine: the target's measured verify cost "
            "against each node's chance of acceptance, learned from this run. No draft at all when none pays.",
            (NGRAM, TREE_DEPTH, CORPUS),
            _build_auto,
            uses_corpus=True,
            defaults=(("depth", 8), ("corpus", "shipped")),
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


def register_method(method: Method) -> Method:
    """Add a method to the registry (the app, the CLI, validation and the method-wide tests pick it up)."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name) -> Method:
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method {shown(name)}; choose one of {', '.join(METHODS)}") from None


def knob_table() -> dict[str, Knob]:
    """Every method's knobs, each once, in registry order."""
    return {k.name: k for m in METHODS.values() for k in m.knobs}
