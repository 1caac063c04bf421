"""A run is one settings object.

`RunSettings` (speculative methods, AR and Jacobi through the speculative engine) and
`LatticeSettings` (diffusion and Jacobi drawn as a lattice) are frozen: the method, its
typed knobs, sampling, and the model ids. They are built from a flat JSON dict in which
missing fields take their defaults, so `{}` is the default run and
`{"method": "retrieval", "max_new_tokens": 16}` changes two things; unknown fields are
refused with a message that says what exists. `to_dict()` gives the same flat form back,
with every field filled in, and a trace carries it, so any run can be reproduced from its
trace. Checks that need the loaded model (the exit layer against its depth, a tree preset
against trained heads, a corpus file) happen once, when the run is prepared (`specviz.runs`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .config import (AUTO, EMBEDDED_MODEL_ID, LATTICE_KNOBS, MAX_NEW_TOKENS, SCHEDULE, SEED, TEMPERATURE,
                     TOP_P, ConfigError, Knob, SamplingConfig, shown)
from .decoding.registry import METHODS, Method, get_method
from .decoding.schedules import SCHEDULES
from .trace import Trace

DEFAULT_METHOD = "auto"  # what the Speculative tab opens on: a run that shows speculation paying (τ 2.7 on a CPU)
TINY_MDM_ID = "tiny-mdm"
LATTICE_METHODS = ("diffusion", "jacobi")
GEN_LENGTH = replace(MAX_NEW_TOKENS, name="gen_length", default=32, high=256,
                     help="canvas cells after the prompt (Jacobi: tokens to generate at most)")
DIFFUSION_KNOB_NAMES = tuple(k.name for k in LATTICE_KNOBS if k.name != "window")
JACOBI_KNOB_NAMES = ("window",)
MAX_ID_CHARS = 1024  # a model id or local path (Hub ids are under 100 characters)


def _text(name: str, value, what: str = "a model id or path") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be text ({what}), got {shown(value)}")
    text = value.strip()
    if len(text) > MAX_ID_CHARS:
        raise ConfigError(f"{name} is {len(text):,} characters; the limit is {MAX_ID_CHARS:,} ({what})")
    return text


def _as_dict(data, what: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a JSON object of named fields, e.g. {{\"method\": \"sps\"}}; got "
                          f"{type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{what} field names must be text, got {shown(bad[:3])}")
    return data


def _refuse_unknown(data: dict, known: set, owner: str, elsewhere: dict) -> None:
    unknown = sorted(set(data) - known)
    if not unknown:
        return
    hints = []
    for name in unknown[:5]:
        where = elsewhere.get(name)
        hints.append(f"{name!r} (a knob of {', '.join(where)})" if where else shown(name, 40))
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    raise ConfigError(f"settings: {owner} has no field(s) {', '.join(hints)}{more}; its fields are "
                      f"{', '.join(sorted(known))}")


@dataclass(frozen=True)
class RunSettings:
    """One speculative run (AR and Jacobi included). `knobs` holds exactly the method's knobs, checked."""

    method: str = DEFAULT_METHOD
    knobs: dict = field(default_factory=dict)
    max_new_tokens: int = int(MAX_NEW_TOKENS.default)
    temperature: float = float(TEMPERATURE.default)
    top_p: float = float(TOP_P.default)
    seed: int = int(SEED.default)
    target: str = EMBEDDED_MODEL_ID
    draft: str = ""  # a draft model id (model-drafted methods) or a trained head id (trained methods); "" = default

    FIELDS = ("method", "max_new_tokens", "temperature", "top_p", "seed", "target", "draft")

    @property
    def spec(self) -> Method:
        return get_method(self.method)

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p, self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_dict(cls, data: dict | None = None) -> "RunSettings":
        """Check a flat settings dict; missing fields take their defaults (the method's own knob defaults)."""
        data = _as_dict(data, "settings")
        method = get_method(_text("method", data.get("method", DEFAULT_METHOD), "a method name") or DEFAULT_METHOD)
        _refuse_unknown(data, set(cls.FIELDS) | {k.name for k in method.knobs}, f"method {method.name!r}",
                        knob_owners())
        knobs = method.check_knobs({k.name: data[k.name] for k in method.knobs if k.name in data})
        draft = _text("draft", data.get("draft"))
        if draft and not (method.uses_draft_model or method.uses_trained):
            raise ConfigError(f"method {method.name!r} does not use a draft model; clear the draft field")
        return cls(
            method=method.name,
            knobs=knobs,
            max_new_tokens=MAX_NEW_TOKENS.check(data.get("max_new_tokens", MAX_NEW_TOKENS.default)),
            temperature=float(TEMPERATURE.check(data.get("temperature", TEMPERATURE.default))),
            top_p=float(TOP_P.check(data.get("top_p", TOP_P.default))),
            seed=SEED.check(data.get("seed", SEED.default)),
            target=_text("target", data.get("target")) or EMBEDDED_MODEL_ID,
            draft=draft,
        )

    def to_dict(self) -> dict:
        return {"method": self.method, **self.knobs, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed, "target": self.target,
                "draft": self.draft}

    def changed(self, **fields) -> "RunSettings":
        """These settings with some fields (knobs included, by name) changed, checked again."""
        return RunSettings.from_dict({**self.to_dict(), **fields})

    def live_changes(self, other: "RunSettings") -> dict | None:
        """The knobs to apply mid-run when `other` differs from these settings only in live knobs
        ({} when equal); None when the difference needs a new run."""
        if (self.method, *self._fixed()) != (other.method, *other._fixed()):
            return None
        knobs = self.spec.knob_map
        changed = {n: v for n, v in other.knobs.items() if self.knobs.get(n) != v}
        # a budget turned to or from "auto" changes the drafter itself, not only its size
        auto_toggled = any((v == AUTO) != (self.knobs.get(n) == AUTO) for n, v in changed.items())
        return changed if all(knobs[n].live for n in changed) and not auto_toggled else None

    def _fixed(self) -> tuple:
        return (self.max_new_tokens, self.temperature, self.top_p, self.seed, self.target, self.draft)

    def baseline(self) -> "RunSettings":
        """Plain AR on the same target, length and sampling: the speedup reference."""
        return RunSettings("ar", {}, self.max_new_tokens, self.temperature, self.top_p, self.seed, self.target)


@dataclass(frozen=True)
class LatticeSettings:
    """One diffusion run (a schedule on a masked/block diffusion model) or Jacobi run drawn as a lattice."""

    method: str = "diffusion"
    knobs: dict = field(default_factory=dict)
    model: str = TINY_MDM_ID  # "" picks the method's default model
    gen_length: int = int(GEN_LENGTH.default)
    temperature: float = 0.0
    seed: int = 0

    FIELDS = ("method", "model", "gen_length", "temperature", "seed")

    @property
    def knob_names(self) -> tuple:
        return DIFFUSION_KNOB_NAMES if self.method == "diffusion" else JACOBI_KNOB_NAMES

    @classmethod
    def from_dict(cls, data: dict | None = None) -> "LatticeSettings":
        data = _as_dict(data, "settings")
        if "trust_remote_code" in data:
            raise ConfigError("trust_remote_code is not a setting: remote code is enabled by whoever starts the "
                              "server (SPECVIZ_TRUST_REMOTE_CODE=1, or the CLI's --trust-remote-code), never by a "
                              "request")
        method = _text("method", data.get("method", "diffusion"), "diffusion or jacobi") or "diffusion"
        if method not in LATTICE_METHODS:
            raise ConfigError(f"unknown lattice method {shown(method)}: use diffusion or jacobi")
        own = DIFFUSION_KNOB_NAMES if method == "diffusion" else JACOBI_KNOB_NAMES
        other = JACOBI_KNOB_NAMES if method == "diffusion" else DIFFUSION_KNOB_NAMES
        _refuse_unknown(data, set(cls.FIELDS) | set(own), f"lattice method {method!r}",
                        {n: ["jacobi" if method == "diffusion" else "diffusion"] for n in other})
        knobs = {k.name: lattice_knob(k).check(data.get(k.name, k.default)) for k in LATTICE_KNOBS if k.name in own}
        model = _text("model", data.get("model"))
        default_model = TINY_MDM_ID if method == "diffusion" else EMBEDDED_MODEL_ID
        return cls(
            method=method,
            knobs=knobs,
            model=model or default_model,
            gen_length=GEN_LENGTH.check(data.get("gen_length", GEN_LENGTH.default)),
            temperature=float(TEMPERATURE.check(data.get("temperature", 0.0))),
            seed=SEED.check(data.get("seed", 0)),
        )

    def to_dict(self) -> dict:
        return {"method": self.method, **self.knobs, "model": self.model, "gen_length": self.gen_length,
                "temperature": self.temperature, "seed": self.seed}

    def changed(self, **fields) -> "LatticeSettings":
        return LatticeSettings.from_dict({**self.to_dict(), **fields})

    def live_changes(self, other: "LatticeSettings") -> dict | None:
        """As `RunSettings.live_changes`: the knobs to apply mid-run ({} when equal), or None for a new run."""
        if self._fixed() != other._fixed():
            return None
        changed = {n: v for n, v in other.knobs.items() if self.knobs.get(n) != v}
        knobs = {k.name: k for k in LATTICE_KNOBS}
        return changed if all(knobs[n].live for n in changed) else None

    def _fixed(self) -> tuple:
        return (self.method, self.model, self.gen_length, self.temperature, self.seed)

    @property
    def label(self) -> str:
        if self.method == "jacobi":
            return f"Jacobi (window {self.knobs['window']})"
        return self.knobs["schedule"] + (" · adaptive blocks" if self.knobs["adaptive_block"] else "")


def lattice_knob(knob: Knob) -> Knob:
    """The knob as checked now: the schedule's options are whatever the schedule registry holds."""
    return replace(SCHEDULE, choices=tuple(SCHEDULES)) if knob.name == SCHEDULE.name else knob


def knob_owners() -> dict:
    """knob name -> the methods that have it (speculative methods and the lattice methods)."""
    owners: dict = {}
    for m in METHODS.values():
        for k in m.knobs:
            owners.setdefault(k.name, []).append(m.name)
    for k in LATTICE_KNOBS:
        owners.setdefault(k.name, []).append("jacobi (lattice)" if k.name == "window" else "diffusion")
    return owners


def settings_from_trace(trace: Trace | dict):
    """The settings a trace (a Trace, or its JSON dict) was recorded with, as a settings object: rerun
    them to reproduce the run."""
    settings = trace.settings if isinstance(trace, Trace) else (trace.get("settings") or trace.get("config") or {})
    # what the decoder added about itself, and the remote-code flag of traces before it became the server's
    keys = {k: v for k, v in settings.items() if k not in ("mode", "family", "mask_id", "trust_remote_code")}
    if keys.get("method") in LATTICE_METHODS and "model" in keys:
        return LatticeSettings.from_dict(keys)
    return RunSettings.from_dict(keys)
