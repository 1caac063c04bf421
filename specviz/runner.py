"""Preparing a run from user-facing settings: shared by the CLI, the app and the benchmarks.

Validates the knobs, fetches the models from the store, refuses mismatched
tokenizers, and builds a fresh drafter and decoder per prompt.
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import MAX_NEW_TOKENS, ConfigError, RunConfig, SamplingConfig
from .decoding.engine import SpeculativeDecoder
from .decoding.registry import Method, get_method
from .models import LoadedModel, ModelLoadError, ModelStore, check_tokenizers_match
from .decoding.retrieval import SuffixArray, corpus_tokens
from .decoding.shapes import parse_shape
from .models.loading import is_embedded
from .models.trained import load_hub_head, shipped_drafters

SHIPPED_CORPUS_DIR = Path(__file__).resolve().parents[1] / "assets" / "corpus"
MAX_CORPUS_BYTES = 50 << 20


@dataclass
class PreparedRun:
    method: Method
    config: RunConfig
    target: LoadedModel
    draft: LoadedModel | None
    datastores: dict = field(default_factory=dict)
    trained: object = None  # the trained drafter module (Medusa heads, EAGLE drafter, distilled exit)
    trained_source: str | None = None

    @property
    def draft_id(self) -> str | None:
        if self.draft is not None:
            return self.draft.model_id
        if self.trained_source:
            return self.trained_source
        if self.method.uses_draft_model and "exit_layer" in self.config.knobs:
            return f"self:first-{self.config.knobs['exit_layer']}-layers"
        return None

    def decoder(self, prompt_ids, record: bool = True) -> SpeculativeDecoder:
        drafter = self.method.build(
            self.target.model, self.draft.model if self.draft else None, self.config.knobs, self.config.sampling,
            self.datastores, trained=self.trained,
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
        return replace(self, config=replace(self.config, max_new_tokens=max_new_tokens))

    def with_knobs(self, knobs: dict) -> "PreparedRun":
        """The same run with other knob values (checked), e.g. another tree shape for the what-if panel."""
        values = self.method.check_knobs({**self.config.knobs, **knobs})
        return replace(self, config=replace(self.config, knobs=values))

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
    if draft_id and not (m.uses_draft_model or m.uses_trained):
        raise ConfigError(f"method {m.name!r} does not use a draft model; clear the draft model field")
    target = store.get(target_id)
    draft = None
    trained, trained_source = None, None
    if m.uses_trained:
        trained, trained_source = trained_drafter(target, m.uses_trained, draft_id)
    elif draft_id:
        if is_embedded(draft_id) and is_embedded(target_id):
            raise ConfigError("the draft model is the target itself; leave it empty to use the early-exit self-draft")
        draft = store.get(draft_id)
        check_tokenizers_match(target, draft)
        if next(draft.model.parameters()).device != next(target.model.parameters()).device:
            raise ModelLoadError("the draft and the target ended up on different devices")
    elif m.uses_draft_model and "exit_layer" in knob_values:
        n_layers = getattr(target.model.config, "num_hidden_layers", 0)
        if knob_values["exit_layer"] >= n_layers:
            raise ConfigError(
                f"exit_layer={knob_values['exit_layer']} is out of range: the target has {n_layers} layers, "
                f"so the early-exit self-draft can keep 1..{n_layers - 1}"
            )
    if "preset" in knob_values:
        try:
            parse_shape(knob_values["preset"], trained)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    datastores = load_datastores(target, knob_values["corpus"]) if m.uses_corpus else {}
    return PreparedRun(m, config, target, draft, datastores, trained, trained_source)


_HUB_HEADS: OrderedDict = OrderedDict()
_HUB_HEADS_LOCK = threading.Lock()


def trained_drafter(target: LoadedModel, kind: str, head_id: str | None) -> tuple:
    """(module, label): the shipped drafter of this kind for the target, or a Hub / local head checkpoint."""
    if not head_id:
        found = shipped_drafters(target.model_id, target.model)
        return found.get(kind), f"trained:{kind} ({Path(found.source).name})"
    if kind == "exit":
        raise ConfigError("the distilled early exit is a shipped drafter only; clear the head field")
    key = (target.model_id, kind, head_id)
    with _HUB_HEADS_LOCK:
        if key not in _HUB_HEADS:
            _HUB_HEADS[key] = load_hub_head(head_id, kind, target.model)
            while len(_HUB_HEADS) > 4:
                _HUB_HEADS.popitem(last=False)
        _HUB_HEADS.move_to_end(key)
        return _HUB_HEADS[key], f"{kind}-head:{head_id}"


_DATASTORES: OrderedDict = OrderedDict()
_DATASTORES_LOCK = threading.Lock()


def shipped_documents() -> list:
    """The texts of the shipped retrieval corpus (assets/corpus/*.jsonl, one {"text": ...} per line)."""
    docs = []
    for path in sorted(SHIPPED_CORPUS_DIR.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            docs += [json.loads(line)["text"] for line in f if line.strip()]
    return docs


def load_datastores(target: LoadedModel, corpus: str) -> dict:
    """Suffix-array datastores for a corpus setting, tokenised with the target's tokenizer and cached.

    "context" needs none (the drafter indexes the context itself each step)."""
    stores = {}
    if corpus in ("shipped", "context+shipped"):
        stores["retrieval:shipped"] = _datastore(target, "shipped", shipped_documents)
    elif corpus != "context":
        path = Path(os.path.expanduser(corpus))
        if not path.is_file():
            raise ConfigError(f"corpus file {corpus!r} does not exist (use context, shipped, context+shipped or a text file path)")
        if path.stat().st_size > MAX_CORPUS_BYTES:
            raise ConfigError(f"corpus file {corpus!r} is larger than {MAX_CORPUS_BYTES >> 20} MB")

        def read():
            try:
                return [path.read_text(encoding="utf-8")]
            except UnicodeDecodeError:
                raise ConfigError(f"corpus file {corpus!r} is not UTF-8 text") from None

        stat = path.stat()
        stores["retrieval:file"] = _datastore(target, f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}", read)
    return stores


def _datastore(target: LoadedModel, key: str, documents) -> SuffixArray:
    cache_key = (target.model_id, key)
    with _DATASTORES_LOCK:
        if cache_key in _DATASTORES:
            _DATASTORES.move_to_end(cache_key)
            return _DATASTORES[cache_key]
    docs = documents()
    if not docs or not any(d.strip() for d in docs):
        raise ConfigError(f"the {key.split(':')[0]} corpus is empty")
    ids = [target.tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    index = SuffixArray(corpus_tokens(ids))
    with _DATASTORES_LOCK:
        _DATASTORES[cache_key] = index
        while len(_DATASTORES) > 4:
            _DATASTORES.popitem(last=False)
    return index


def what_if(prepared: PreparedRun, prompt_ids, output_ids) -> list:
    """Replay a finished greedy run under other shapes and builders (see decoding/whatif.py)."""
    from .config import EXIT_LAYER, NGRAM
    from .decoding.drafters import PromptLookupDrafter, early_exit_model
    from .decoding.retrieval import NgramTreeDrafter, RetrievalDrafter
    from .decoding.whatif import what_if as replay

    if not prepared.config.sampling.greedy:
        raise ConfigError("the what-if replay needs a greedy run (temperature 0): only then is the output "
                          "the same for every drafter")
    if len(output_ids) == 0:
        raise ConfigError("nothing was generated yet: run or step first")
    if prepared.draft is not None:
        model, label = prepared.draft.model, "draft model"
    elif prepared.method.uses_trained == "exit":
        from .models.trained_heads import distilled_exit_model

        model, label = distilled_exit_model(prepared.target.model, prepared.trained), "distilled exit"
    else:
        n_layers = getattr(prepared.target.model.config, "num_hidden_layers", 2)
        k = min(int(prepared.config.knobs.get("exit_layer", EXIT_LAYER.default)), n_layers - 1)
        model, label = early_exit_model(prepared.target.model, k), f"early exit, {k} layers"
    n = int(prepared.config.knobs.get("ngram", NGRAM.default))
    shipped = load_datastores(prepared.target, "shipped")
    builders = {
        f"prompt lookup (chain 3, n≤{n})": PromptLookupDrafter(n, 3),
        f"n-gram tree (depth 5, 32 nodes, n≤{n})": NgramTreeDrafter(n, 5, 32),
        "retrieval: context (32 nodes)": RetrievalDrafter({}, True, n, 5, 32),
        "retrieval: context+shipped (32 nodes)": RetrievalDrafter(shipped, True, n, 5, 32),
    }
    return replay(model, label, builders, prompt_ids, output_ids)


# lattice runs: masked/block diffusion and Jacobi decoding ------------------------
LATTICE_METHODS = ("diffusion", "jacobi")
TINY_MDM_ID = "tiny-mdm"
# single tokens that end a phrase: AdaBlock-style blocks end after one of them
DELIMITER_TEXTS = (".", "\n", "!", "?", ";", ":", ",", ".\n", "\n\n", ".\n\n")

_DIFFUSION_MODELS: OrderedDict = OrderedDict()
_DIFFUSION_LOCK = threading.Lock()


@dataclass
class LatticeRun:
    """A prepared diffusion or Jacobi run: the model, its tokenizer and the checked settings."""

    method: str  # "diffusion" or "jacobi"
    model_id: str
    tokenizer: object
    eos_ids: tuple
    max_positions: int
    knobs: dict
    max_new_tokens: int
    temperature: float
    seed: int
    diffusion: object = None  # DiffusionLM
    spec: PreparedRun | None = None  # jacobi runs through the speculative engine
    delimiter_ids: tuple = ()
    warnings: list = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.method == "jacobi":
            return f"Jacobi (window {self.knobs['window']})"
        return f"{self.knobs['schedule']}" + (" · adaptive blocks" if self.knobs["adaptive_block"] == "on" else "")

    def diffusion_config(self):
        from .decoding.diffusion import DiffusionConfig
        from .decoding.schedules import ScheduleParams

        k = self.knobs
        return DiffusionConfig(
            schedule=k["schedule"], gen_length=self.max_new_tokens, block_size=k["block_size"], steps=k["steps"],
            params=ScheduleParams(k["threshold"], k["prophet_gap"], k["remask_below"]),
            adaptive_block=k["adaptive_block"] == "on", delimiter_threshold=k["delimiter_threshold"],
            use_cache=k["cache"] == "auto", temperature=self.temperature, seed=self.seed,
        )

    def decoder(self, prompt_ids, record: bool = True):
        """A fresh decoder with `.step()`, `.done`, `.finish_reason`, `.prompt_ids` and `.backend`."""
        from .decoding.diffusion import DiffusionDecoder
        from .decoding.jacobi import JacobiLattice

        if self.method == "jacobi":
            return JacobiLattice(self.spec.decoder(prompt_ids, record=True), self.eos_ids)
        return DiffusionDecoder(self.diffusion, prompt_ids, self.diffusion_config(), self.delimiter_ids, record)

    def trace(self, decoder, steps: list, wall_s: float = 0.0):
        from .decoding.diffusion import diffusion_trace

        if self.method == "jacobi":
            tr = decoder.trace(steps)
            tr.target_id = self.model_id
            tr.wall_s = wall_s or tr.wall_s
            return tr
        return diffusion_trace(decoder, steps, wall_s)

    def with_knobs(self, knobs: dict) -> "LatticeRun":
        values = {**self.knobs, **knobs}
        return replace(self, knobs={k.name: k.check(values[k.name]) for k in _lattice_knobs()})


def _lattice_knobs():
    from .config import LATTICE_KNOBS

    return LATTICE_KNOBS


def delimiter_ids(tokenizer) -> tuple:
    ids = set()
    for text in DELIMITER_TEXTS:
        enc = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.add(int(enc[0]))
    return tuple(sorted(ids))


def _diffusion_model(key: str, load):
    with _DIFFUSION_LOCK:
        if key in _DIFFUSION_MODELS:
            _DIFFUSION_MODELS.move_to_end(key)
            return _DIFFUSION_MODELS[key]
        lm = load()
        _DIFFUSION_MODELS[key] = lm
        while len(_DIFFUSION_MODELS) > 2:
            _DIFFUSION_MODELS.popitem(last=False)
        return lm


def prepare_lattice_run(store: ModelStore, method: str, model_id: str | None = None, knobs: dict | None = None,
                        max_new_tokens=32, temperature=0.0, seed=0, trust_remote_code: bool = False) -> LatticeRun:
    """Check the settings, then load the model. Raises ConfigError / ModelLoadError with a message for the user."""
    from .config import TEMPERATURE, SEED

    if method not in LATTICE_METHODS:
        raise ConfigError(f"unknown lattice method {method!r}: use diffusion or jacobi")
    values = knobs or {}
    unknown = set(values) - {k.name for k in _lattice_knobs()}
    if unknown:
        raise ConfigError(f"no lattice knob(s) {sorted(unknown)}")
    checked = {k.name: k.check(values.get(k.name, k.default)) for k in _lattice_knobs()}
    max_new = MAX_NEW_TOKENS.check(max_new_tokens)
    temperature, seed = TEMPERATURE.check(temperature), SEED.check(seed)
    model_id = (model_id or "").strip()
    if method == "jacobi":
        if model_id in (TINY_MDM_ID, "tiny", "tiny-random-mdm"):
            raise ConfigError(f"{model_id} is a diffusion model; Jacobi decoding needs an autoregressive model "
                              "(the embedded SmolLM2, or a Hugging Face causal LM)")
        spec = prepare_run(store, "jacobi", model_id or None, None, {"window": checked["window"]}, max_new,
                           temperature, 1.0, seed)
        t = spec.target
        return LatticeRun("jacobi", t.model_id, t.tokenizer, t.eos_ids, t.max_positions, checked, max_new,
                          temperature, seed, spec=spec)
    if not model_id or is_embedded(model_id):
        raise ConfigError("SmolLM2-135M-Instruct is autoregressive: run it with Jacobi decoding, or pick a diffusion "
                          f"model ({TINY_MDM_ID} runs offline)")
    if model_id == TINY_MDM_ID:
        from .models.tiny_mdm import load_tiny_mdm

        tokenizer = store.get(None).tokenizer
        lm = _diffusion_model(TINY_MDM_ID, lambda: load_tiny_mdm(tokenizer))
    else:
        from .models.diffusion import load_diffusion_model

        lm = _diffusion_model(f"{model_id}|{trust_remote_code}",
                              lambda: load_diffusion_model(model_id, trust_remote_code=trust_remote_code))
        if lm.tokenizer is None:
            raise ConfigError(f"{model_id} has no tokenizer, so it cannot take a text prompt")
    return LatticeRun("diffusion", lm.model_id, lm.tokenizer, lm.eos_ids, lm.max_positions, checked, max_new,
                      temperature, seed, diffusion=lm, delimiter_ids=delimiter_ids(lm.tokenizer),
                      warnings=list(lm.warnings))
