"""What a server lets its visitors do: the public-mode switch, the model allow-list and the caps.

A laptop user on localhost keeps every freedom (any model id or local directory, a corpus file path,
the knobs' full ranges). A public server (a Hugging Face Space, or a teacher serving a class on the
network) is shared with strangers, so in public mode:

- no field reaches the server's file system: local model directories, head directories and corpus
  file paths are refused;
- only the embedded model, the shipped diffusion model and the ids the operator lists load;
- models that need their repository's own code load only when the operator lists them with a pinned
  revision (`id@revision`), never at a request's wish;
- the sizes a request can ask for are capped (prompt, new tokens, tree size, canvas, steps);
- messages shown to visitors carry no server paths.

The policy is decided once, when the server starts (`ServerPolicy.from_env`), and every check raises
`ConfigError` naming the field to change, so the UI, the API and the CLI show it as a clear message.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .config import EMBEDDED_MODEL_ID, ConfigError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
CORPUS_SOURCES = ("context", "shipped", "context+shipped")
# ids that name models shipped with specviz (no download, no code): always allowed
SHIPPED_MODEL_IDS = {"", "embedded", EMBEDDED_MODEL_ID.lower(), "smollm2-135m-instruct", "tiny-mdm"}

# the caps of public mode: what one visitor's request may ask for at most. They keep a step in the
# tens of milliseconds to seconds on a CPU Space, so per-step turns stay short for everyone.
PUBLIC_CAPS = {
    "prompt_chars": 4000,  # characters of the prompt
    "max_new_tokens": 256,
    "gen_length": 128,  # diffusion canvas / Jacobi tokens
    "steps": 128,  # diffusion step budget
    "block_size": 128,
    "budget": 64,  # drafted nodes per step
    "depth": 8,
    "top_k": 8,
    "draft_len": 8,
    "window": 32,  # Jacobi
    "tree_nodes": 64,  # nodes of a typed static tree shape
    "bench_questions": 8,  # questions of one benchmark run from the app (every method decodes each)
    "bench_methods": 4,  # methods of one benchmark, the AR baseline included
    "bench_new_tokens": 64,  # new tokens per question and method in a benchmark
}
_ENV_TRUE = ("1", "true", "yes", "on")


def _flag(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in _ENV_TRUE


def _ids(text: str | None) -> tuple:
    return tuple(part.strip() for part in (text or "").replace("\n", ",").split(",") if part.strip())


@dataclass(frozen=True)
class ServerPolicy:
    """`public=False` (the default) allows everything; `public=True` applies the allow-lists and caps."""

    public: bool = False
    models: frozenset = frozenset()  # Hub ids the operator allows (targets, drafts, heads, diffusion models)
    remote_code: dict = field(default_factory=dict)  # id -> pinned revision, for models that run their own code
    caps: dict = field(default_factory=lambda: dict(PUBLIC_CAPS))
    why: str = "local use"  # how the mode was decided, shown in the app and the start-up log

    @classmethod
    def from_env(cls, environ=None, host: str | None = None) -> "ServerPolicy":
        """SPECVIZ_PUBLIC=1/0 decides when set; otherwise public on a Space (SPACE_ID set) or when the server
        listens beyond localhost. SPECVIZ_MODELS lists allowed Hub ids; SPECVIZ_REMOTE_CODE_MODELS lists
        `id@revision` of models allowed to run their own code; SPECVIZ_CAPS overrides caps (`name=value,...`)."""
        env = os.environ if environ is None else environ
        forced = _flag(env.get("SPECVIZ_PUBLIC"))
        if forced is not None:
            public, why = forced, f"SPECVIZ_PUBLIC={env.get('SPECVIZ_PUBLIC').strip()}"
        elif env.get("SPACE_ID"):
            public, why = True, "running on a Hugging Face Space"
        elif host is not None and host.strip().lower() not in LOCAL_HOSTS:
            public, why = True, f"listening on {host}, beyond this machine"
        else:
            public, why = False, "listening on localhost only"
        remote = {}
        for item in _ids(env.get("SPECVIZ_REMOTE_CODE_MODELS")):
            model_id, _, revision = item.partition("@")
            if not revision:
                raise ValueError(f"SPECVIZ_REMOTE_CODE_MODELS: {item!r} needs a pinned revision, as id@revision")
            remote[model_id] = revision
        caps = dict(PUBLIC_CAPS)
        for item in _ids(env.get("SPECVIZ_CAPS")):
            name, _, value = item.partition("=")
            if name.strip() not in caps:
                raise ValueError(f"SPECVIZ_CAPS: unknown cap {name!r}; caps are {', '.join(caps)}")
            caps[name.strip()] = int(value)
        models = frozenset(_ids(env.get("SPECVIZ_MODELS"))) | frozenset(remote)
        return cls(public, models, remote, caps, why)

    # models ------------------------------------------------------------------------------
    def check_model(self, model_id: str, field_name: str) -> None:
        """Refuse, in public mode, any model id the operator did not list (local directories included)."""
        if not self.public or model_id.strip().lower() in SHIPPED_MODEL_IDS:
            return
        if model_id.strip() in self.models:
            return
        listed = ", ".join(sorted(self.models)) or "none besides the embedded SmolLM2 and tiny-mdm"
        raise ConfigError(f"{field_name}: this public server loads only the models its operator listed "
                          f"({listed}); {model_id[:80]!r} is not one of them")

    def remote_code_revision(self, model_id: str) -> str | None:
        """The pinned revision under which `model_id` may run its own code on this public server, or None."""
        return self.remote_code.get(model_id.strip())

    # files -------------------------------------------------------------------------------
    def check_corpus(self, corpus: str) -> None:
        if self.public and corpus not in CORPUS_SOURCES:
            raise ConfigError("corpus: this public server does not read files; use context, shipped or "
                              "context+shipped")

    # sizes -------------------------------------------------------------------------------
    def check_prompt(self, prompt: str) -> None:
        cap = self.caps["prompt_chars"]
        if self.public and len(prompt) > cap:
            raise ConfigError(f"prompt: {len(prompt):,} characters is over this public server's cap of {cap:,}; "
                              "shorten it")

    def check_settings(self, settings) -> None:
        """Every model id and capped size of a RunSettings or LatticeSettings."""
        if not self.public:
            return
        values = {**settings.to_dict()}
        for name in ("target", "draft", "model"):
            if values.get(name):
                self.check_model(values[name], name)
        if "corpus" in values:
            self.check_corpus(values["corpus"])
        for name, cap in self.caps.items():
            value = values.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
                raise ConfigError(f"{name}={value} is over this public server's cap of {cap}; use {cap} or less")
        if isinstance(values.get("preset"), str):
            from .decoding.shapes import parse_shape

            try:
                nodes = len(parse_shape(values["preset"]))
            except ValueError:
                return  # not a shape this check can count (e.g. 'calibrated'); the run's own check decides
            if nodes > self.caps["tree_nodes"]:
                raise ConfigError(f"preset: a tree of {nodes} nodes is over this public server's cap of "
                                  f"{self.caps['tree_nodes']}; pick a smaller shape")

    # messages ----------------------------------------------------------------------------
    _PATH = re.compile(r"(?<![\w.])(?:/|~/|[A-Za-z]:\\)[^\s'\"]+")

    def scrub(self, message: str) -> str:
        """A message safe to show a stranger: in public mode server paths become '[server path]'."""
        return self._PATH.sub("[server path]", message) if self.public else message

    def model_hint(self, field_name: str) -> str:
        """The info line of a model field on a public server ('' on a local one)."""
        if not self.public:
            return ""
        listed = ", ".join(sorted(self.models))
        return (f"this public server loads the embedded model" + (f" and {listed}" if listed else " only")
                + "; no local paths")

    def describe(self) -> str:
        """One paragraph for the app: what this server allows and why."""
        if not self.public:
            return ""
        listed = ", ".join(sorted(self.models))
        c = self.caps
        return (f"**Public server** ({self.why}). It runs the embedded SmolLM2 and tiny-mdm"
                + (f", plus {listed}" if listed else "") + "; it reads no files. "
                f"Per request: prompts up to {c['prompt_chars']:,} characters, {c['max_new_tokens']} new tokens, "
                f"trees of {c['budget']} drafted nodes, canvases of {c['gen_length']} cells and {c['steps']} steps. "
                "Everyone shares the model one step at a time, so your run may wait briefly for others' steps.")
