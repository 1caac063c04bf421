"""Preparing a speculative run: settings in, a `PreparedRun` out that builds a fresh decoder per prompt.

The settings were checked on their own when they were built (`specviz.settings`);
here they are checked once more against the loaded models (the exit layer against
the target's depth, a tree preset against trained heads, the draft's tokenizer
against the target's), and the models, heads and datastores come from the store.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import ConfigError
from ..decoding.drafters import NoDrafter
from ..decoding.engine import SpeculativeDecoder
from ..decoding.registry import BuildContext, Method
from ..decoding.shapes import parse_shape
from ..models import LoadedModel, ModelLoadError, ModelStore, check_tokenizers_match
from ..models.loading import is_embedded
from ..models.trained import load_hub_head, shipped_drafters, trained_kind
from ..settings import RunSettings
from .corpus import load_datastores
from .costs import cost_curve


@dataclass
class PreparedRun:
    settings: RunSettings
    target: LoadedModel
    draft: LoadedModel | None = None
    datastores: dict = field(default_factory=dict)
    trained: object = None  # the trained drafter module (Medusa heads, EAGLE drafter, distilled exit)
    trained_source: str | None = None
    costs: object = None  # this machine's cost curve of the target, or a callable measuring it once

    @property
    def method(self) -> Method:
        return self.settings.spec

    @property
    def draft_id(self) -> str | None:
        if self.draft is not None:
            return self.draft.model_id
        if self.trained_source:
            return self.trained_source
        if self.method.uses_draft_model and "exit_layer" in self.settings.knobs:
            return f"self:first-{self.settings.knobs['exit_layer']}-layers"
        return None

    def build_context(self, settings: RunSettings | None = None) -> BuildContext:
        s = settings or self.settings
        return BuildContext(self.target.model, s.knobs, s.sampling, self.draft.model if self.draft else None,
                            self.datastores, self.trained, self.costs)

    def drafter(self):
        return self.method.make(self.build_context())

    def decoder(self, prompt_ids, record: bool = True) -> SpeculativeDecoder:
        return SpeculativeDecoder(
            self.target.model, self.drafter(), prompt_ids, self.settings, eos_ids=self.target.eos_ids,
            record=record, max_positions=self.target.max_positions, target_id=self.target.model_id,
            draft_id=self.draft_id,
        )

    def limited(self, max_new_tokens: int) -> "PreparedRun":
        return replace(self, settings=replace(self.settings, max_new_tokens=max_new_tokens))

    def with_knobs(self, knobs: dict) -> "PreparedRun":
        """The same run with other knob values (checked), e.g. another tree shape for the what-if panel."""
        return replace(self, settings=self.settings.changed(**knobs))

    def baseline(self) -> "PreparedRun":
        """Plain AR on the same target and sampling settings: the speedup reference."""
        return PreparedRun(self.settings.baseline(), self.target)


def prepare_run(store: ModelStore, settings: RunSettings | dict | None = None) -> PreparedRun:
    """Check the settings against the models, then load what is needed. Raises ConfigError / ModelLoadError."""
    if not isinstance(settings, RunSettings):
        settings = RunSettings.from_dict(settings)
    m = settings.spec
    knobs = settings.knobs
    target = store.get(settings.target)
    store.cached("warm", (target.model_id, id(target.model)), lambda: warm_up(target))
    draft = None
    trained, trained_source = None, None
    if m.uses_trained:
        trained, trained_source = trained_drafter(store, target, m.uses_trained, settings.draft)
    elif settings.draft:
        if is_embedded(settings.draft) and is_embedded(settings.target):
            raise ConfigError("the draft model is the target itself; leave it empty to use the early-exit self-draft")
        draft = store.get(settings.draft)
        check_tokenizers_match(target, draft)
        if next(draft.model.parameters()).device != next(target.model.parameters()).device:
            raise ModelLoadError("the draft and the target ended up on different devices")
    elif m.uses_draft_model and "exit_layer" in knobs:
        n_layers = getattr(target.model.config, "num_hidden_layers", 0)
        if knobs["exit_layer"] >= n_layers:
            raise ConfigError(
                f"exit_layer={knobs['exit_layer']} is out of range: the target has {n_layers} layers, "
                f"so the early-exit self-draft can keep 1..{n_layers - 1}"
            )
    if "preset" in knobs:
        try:
            parse_shape(knobs["preset"], trained)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    datastores = load_datastores(store, target, knobs["corpus"]) if m.uses_corpus else {}
    return PreparedRun(settings, target, draft, datastores, trained, trained_source,
                       costs=lambda: cost_curve(store, target))


WARM_UP_PROMPT = 8  # tokens


def warm_up(target: LoadedModel) -> bool:
    """One short plain decode through the engine, untimed, once per loaded target. The first decode in a process
    pays one-time set-up inside its timed prefill (the slab cache's and the attention path's first calls: about
    0.25 s of a 0.4 s prefill for the embedded model on a 2-core CPU); whichever run came first, a method or the AR
    baseline it is timed against, would carry it and skew the speedup."""
    vocab = int(getattr(target.model.config, "vocab_size", 0) or 2)
    ids = [i % vocab for i in range(1, WARM_UP_PROMPT + 1)]
    decoder = SpeculativeDecoder(target.model, NoDrafter(), ids, RunSettings("ar", {}, 2), record=False,
                                 max_positions=target.max_positions)
    for _ in decoder.steps():
        pass
    return True


def trained_drafter(store: ModelStore, target: LoadedModel, kind_name: str, head_id: str | None) -> tuple:
    """(module, label): the shipped drafter of this kind for the target, or a Hub / local head checkpoint."""
    kind = trained_kind(kind_name)
    if not head_id:
        # keyed by the loaded target itself: the drafters share its weights (the distilled exit its layers)
        found = store.cached("trained", (target.model_id, id(target.model)),
                             lambda: shipped_drafters(target.model_id, target.model))
        return found.get(kind.name), f"trained:{kind.name} ({Path(found.source).name})"
    if not kind.hub_heads:
        raise ConfigError(f"the {kind.label} is a shipped drafter only; clear the head field")
    module = store.cached("hub_head", (target.model_id, kind.name, head_id),
                          lambda: load_hub_head(head_id, kind.name, target.model))
    return module, f"{kind.name}-head:{head_id}"
