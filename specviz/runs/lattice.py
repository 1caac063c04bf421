"""Preparing a lattice run: masked / block diffusion under a schedule, or Jacobi decoding of an AR model."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError
from ..decoding.diffusion import DiffusionConfig, DiffusionDecoder
# re-exported: the app asks whether a run's decoder takes pins through here, never importing the engine itself
from ..decoding.engine import Intervenable  # noqa: F401
from ..decoding.jacobi import JacobiLattice
from ..decoding.schedules import ScheduleParams
from ..models import ModelStore
from ..models.loading import is_embedded
from ..settings import TINY_MDM_ID, LatticeSettings, RunSettings
from ..textio import delimiter_ids
from .prepare import PreparedRun, prepare_run


@dataclass
class LatticeRun:
    """A prepared diffusion or Jacobi run: the checked settings, the model and its tokenizer."""

    settings: LatticeSettings
    model_id: str
    tokenizer: object
    eos_ids: tuple
    max_positions: int
    diffusion: object = None  # DiffusionLM
    spec: PreparedRun | None = None  # Jacobi runs through the speculative engine
    delimiter_ids: tuple = ()
    warnings: list = field(default_factory=list)

    method = property(lambda self: self.settings.method, doc="diffusion or jacobi")
    label = property(lambda self: self.settings.label)
    max_new_tokens = property(lambda self: self.settings.gen_length, doc="the canvas length")

    def diffusion_config(self) -> DiffusionConfig:
        s, k = self.settings, self.settings.knobs
        return DiffusionConfig(
            schedule=k["schedule"], gen_length=s.gen_length, block_size=k["block_size"], steps=k["steps"],
            params=ScheduleParams(k["threshold"], k["prophet_gap"], k["remask_below"]),
            adaptive_block=k["adaptive_block"], delimiter_threshold=k["delimiter_threshold"],
            use_cache=k["cache"] == "auto", temperature=s.temperature, seed=s.seed,
        )

    def can_pin(self, token_id: int) -> bool:
        """Whether the model has `token_id` of its own, so a pin of it means something (Jacobi: no pins at all)."""
        return self.diffusion is not None and self.diffusion.knows(token_id)

    def decoder(self, prompt_ids, record: bool = True):
        """A fresh `Decoder` whose records are `DiffusionStep`s."""
        if self.method == "jacobi":
            return JacobiLattice(self.spec.decoder(prompt_ids, record=True), self.eos_ids,
                                 settings=self.settings.to_dict())
        return DiffusionDecoder(self.diffusion, prompt_ids, self.diffusion_config(), self.delimiter_ids, record,
                                settings=self.settings.to_dict())


def prepare_lattice_run(store: ModelStore, settings: LatticeSettings | dict | None = None) -> LatticeRun:
    """Check the settings, then load the model. Raises ConfigError / ModelLoadError with a message for the user."""
    if not isinstance(settings, LatticeSettings):
        settings = LatticeSettings.from_dict(settings)
    model_id = settings.model
    if settings.method == "jacobi":
        if model_id in (TINY_MDM_ID, "tiny", "tiny-random-mdm"):
            raise ConfigError(f"{model_id} is a diffusion model; Jacobi decoding needs an autoregressive model "
                              "(the embedded SmolLM2, or a Hugging Face causal LM)")
        spec = prepare_run(store, RunSettings.from_dict({
            "method": "jacobi", "window": settings.knobs["window"], "max_new_tokens": settings.gen_length,
            "temperature": settings.temperature, "seed": settings.seed, "target": model_id}))
        t = spec.target
        return LatticeRun(settings, t.model_id, t.tokenizer, t.eos_ids, t.max_positions, spec=spec)
    if is_embedded(model_id):
        raise ConfigError("SmolLM2-135M-Instruct is autoregressive: run it with Jacobi decoding, or pick a diffusion "
                          f"model ({TINY_MDM_ID} runs offline)")
    if model_id == TINY_MDM_ID:
        from ..models.tiny_mdm import load_tiny_mdm

        tokenizer = store.get(None).tokenizer
        lm = store.cached("diffusion", TINY_MDM_ID, lambda: load_tiny_mdm(tokenizer))
    else:
        from ..models.diffusion import load_diffusion_model

        # the operator's choice, never a request's: for every model, or for listed ones at a pinned revision
        revision = store.remote_code_revisions.get(model_id)
        trust = store.trust_remote_code or revision is not None
        lm = store.cached("diffusion", (model_id, trust, revision),
                          lambda: load_diffusion_model(model_id, trust_remote_code=trust, revision=revision))
        if lm.tokenizer is None:
            raise ConfigError(f"{model_id} has no tokenizer, so it cannot take a text prompt")
    return LatticeRun(settings, lm.model_id, lm.tokenizer, lm.eos_ids, lm.max_positions, diffusion=lm,
                      delimiter_ids=delimiter_ids(lm.tokenizer), warnings=list(lm.warnings))
