"""Preparing a run from user-facing settings: shared by the CLI, the app and the benchmarks.

Validates the knobs, fetches the models from the store, refuses mismatched
tokenizers, and builds a fresh drafter and decoder per prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import MAX_NEW_TOKENS, ConfigError, RunConfig, SamplingConfig
from .decoding.engine import SpeculativeDecoder
from .decoding.registry import Method, get_method
from .models import LoadedModel, ModelLoadError, ModelStore, check_tokenizers_match
from .models.loading import is_embedded


@dataclass
class PreparedRun:
    method: Method
    config: RunConfig
    target: LoadedModel
    draft: LoadedModel | None

    @property
    def draft_id(self) -> str | None:
        if self.draft is not None:
            return self.draft.model_id
        if self.method.name == "sps":
            return f"self:first-{self.config.knobs['exit_layer']}-layers"
        return None

    def decoder(self, prompt_ids, record: bool = True) -> SpeculativeDecoder:
        drafter = self.method.build(
            self.target.model, self.draft.model if self.draft else None, self.config.knobs, self.config.sampling
        )
        return SpeculativeDecoder(
            self.target.model,
            drafter,
            prompt_ids,
            self.config,
            eos_ids=self.target.eos_ids,
            record=record,
            max_positions=self.target.max_positions,
        )

    def limited(self, max_new_tokens: int) -> "PreparedRun":
        return PreparedRun(self.method, replace(self.config, max_new_tokens=max_new_tokens), self.target, self.draft)

    def baseline(self) -> "PreparedRun":
        """Plain AR on the same target and sampling settings: the speedup reference."""
        ar = get_method("ar")
        cfg = RunConfig("ar", self.config.max_new_tokens, self.config.sampling, {})
        return PreparedRun(ar, cfg, self.target, None)


def prepare_run(
    store: ModelStore,
    method: str,
    target_id: str | None = None,
    draft_id: str | None = None,
    knobs: dict | None = None,
    max_new_tokens=64,
    temperature=0.0,
    top_p=1.0,
    seed=0,
) -> PreparedRun:
    """Check everything the user chose, then load what is needed. Raises ConfigError / ModelLoadError."""
    m = get_method(method)
    knob_values = m.check_knobs(knobs or {})
    sampling = SamplingConfig.checked(temperature, top_p, seed)
    config = RunConfig(m.name, MAX_NEW_TOKENS.check(max_new_tokens), sampling, knob_values)
    draft_id = (draft_id or "").strip() or None
    if draft_id and not m.uses_draft_model:
        raise ConfigError(f"method {m.name!r} does not use a draft model; clear the draft model field")
    target = store.get(target_id)
    draft = None
    if draft_id:
        if is_embedded(draft_id) and is_embedded(target_id):
            raise ConfigError("the draft model is the target itself; leave it empty to use the early-exit self-draft")
        draft = store.get(draft_id)
        check_tokenizers_match(target, draft)
        if next(draft.model.parameters()).device != next(target.model.parameters()).device:
            raise ModelLoadError("the draft and the target ended up on different devices")
    elif m.name == "sps":
        n_layers = getattr(target.model.config, "num_hidden_layers", 0)
        if knob_values["exit_layer"] >= n_layers:
            raise ConfigError(
                f"exit_layer={knob_values['exit_layer']} is out of range: the target has {n_layers} layers, "
                f"so the early-exit self-draft can keep 1..{n_layers - 1}"
            )
    return PreparedRun(m, config, target, draft)
