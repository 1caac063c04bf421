"""Trained drafter weights: the shipped ones for the embedded model, and Hub EAGLE / Medusa heads.

Shipped drafters live in `assets/drafters/<target slug>/` as fp16 safetensors plus a
`manifest.json` (recipe, data, seed, training time, hardware, the command that rebuilt them, and
each file's size and SHA-256). The files use the Hub layouts, so one loader reads both:

- EAGLE (EAGLE-1/2 checkpoints): `fc.*`, `layers.0.self_attn.{q,k,v,o}_proj.weight`,
  `layers.0.mlp.{gate,up,down}_proj.weight`, `layers.0.post_attention_layernorm.weight`, plus a
  `config.json` with the Llama sizes (an `embed_tokens.weight` copy, if present, is ignored: the
  target's own embedding is used);
- Medusa: `{head}.{block}.linear.{weight,bias}` and optionally `{head}.{n_blocks}.weight` (a
  per-head LM head), with `medusa_num_heads` / `medusa_num_layers` in `config.json`;
- the distilled exit (ours): `layers.{i}.*` of the trained top layers and `norm.weight`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .loading import EMBEDDED_MODEL_ID, ModelLoadError, hub_reachable, is_embedded, path_exists
from .trained_heads import ExitDraftLayers, FeatureDrafter, MedusaHeads, distilled_exit_model

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "drafters"
SHIPPED = {EMBEDDED_MODEL_ID: ASSETS / "smollm2-135m-instruct"}
MANIFEST = "manifest.json"


@dataclass
class TrainedDrafters:
    target_id: str
    modules: dict = field(default_factory=dict)  # kind -> nn.Module
    manifest: dict = field(default_factory=dict)
    source: str = ""

    def get(self, kind: str) -> nn.Module:
        if kind not in self.modules:
            raise ModelLoadError(missing_message(kind, self.target_id))
        return self.modules[kind]


def missing_message(kind: str, target_id: str) -> str:
    if is_embedded(target_id):
        return (f"the embedded model has no shipped {trained_kind(kind).label} (looked in {SHIPPED[EMBEDDED_MODEL_ID]}); "
                f"rebuild them with `python -m specviz train`, or pick another method")
    return (f"{target_id!r} has no shipped {trained_kind(kind).label}: give a head checkpoint (Hub id or local directory) "
            f"trained for this target in the trained-head field")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ state-dict layouts
_EAGLE_HUB = {"q_proj": "layers.0.self_attn.q_proj", "k_proj": "layers.0.self_attn.k_proj",
              "v_proj": "layers.0.self_attn.v_proj", "o_proj": "layers.0.self_attn.o_proj",
              "gate_proj": "layers.0.mlp.gate_proj", "up_proj": "layers.0.mlp.up_proj",
              "down_proj": "layers.0.mlp.down_proj", "post_attention_layernorm": "layers.0.post_attention_layernorm",
              "fc": "fc"}


DRAFT_VOCAB_KEY = "draft_vocab"  # our addition to the EAGLE layout: frequency-ranked token ids


def eagle_to_hub(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        mod, _, leaf = k.rpartition(".")
        out[f"{_EAGLE_HUB[mod]}.{leaf}"] = v
    return out


def eagle_from_hub(state: dict) -> dict:
    back = {v: k for k, v in _EAGLE_HUB.items()}
    out, unknown = {}, []
    for k, v in state.items():
        mod, _, leaf = k.rpartition(".")
        if mod in back:
            out[f"{back[mod]}.{leaf}"] = v
        elif k != "embed_tokens.weight":
            unknown.append(k)
    if unknown:
        raise ModelLoadError(f"not an EAGLE-1/2 head checkpoint (unexpected weights {unknown[:4]}); "
                             f"EAGLE-3 heads are not supported yet")
    return out


def medusa_to_hub(state: dict) -> dict:
    return {k.removeprefix("heads."): v for k, v in state.items()}


def medusa_from_hub(state: dict, n_blocks: int) -> tuple:
    """(our head state, per-head LM head state or {})."""
    heads, lm = {}, {}
    for k, v in state.items():
        head, block, rest = k.split(".", 2)
        if int(block) == n_blocks:
            lm[f"{head}.{rest}"] = v
        else:
            heads[f"heads.{k}"] = v
    return heads, lm


# ------------------------------------------------------------------ one record per drafter kind
def _device(target) -> torch.device:
    return next(target.parameters()).device


def _build_eagle(config: dict, state: dict, target) -> nn.Module:
    m = FeatureDrafter(config["hidden"], config["n_heads"], config["n_kv_heads"], config["intermediate"],
                       config["rope_theta"], config["rms_eps"], config.get("head_dim"), config.get("fc_bias", True))
    state = dict(state)
    ranked = state.pop(DRAFT_VOCAB_KEY, None)
    m.load_state_dict(eagle_from_hub(state))
    if ranked is not None:
        if int(ranked.max()) >= target.config.vocab_size:
            raise ModelLoadError("the EAGLE drafter's ranked vocabulary has ids beyond the target's vocabulary")
        m.draft_vocab = ranked.to(device=_device(target), dtype=torch.long)
    return m


def _build_medusa(config: dict, state: dict, target) -> nn.Module:
    m = MedusaHeads(config["hidden"], config["n_heads"], config.get("n_blocks", 1))
    m.tree, m.rank_accuracy = config.get("tree"), config.get("rank_accuracy")
    heads, lm = medusa_from_hub(state, m.n_blocks)
    m.load_state_dict(heads)
    if lm:
        vocab = next(iter(lm.values())).shape[0]
        m.own_lm_heads = nn.ModuleList(nn.Linear(m.hidden, vocab, bias=False) for _ in range(m.n_heads))
        m.own_lm_heads.load_state_dict(lm)
    return m


def _build_exit(config: dict, state: dict, target) -> nn.Module:
    m = ExitDraftLayers(target, config["exit_layer"], config.get("n_trained", 1))
    m.load_state_dict(state)
    return m


def _eagle_to_file(module: nn.Module, state: dict) -> dict:
    state = eagle_to_hub(state)
    if getattr(module, "draft_vocab", None) is not None:  # token ids: kept exact, not fp16
        state[DRAFT_VOCAB_KEY] = module.draft_vocab.detach().to(torch.int64).contiguous().cpu()
    return state


def _eagle_hub_config(cfg: dict, state: dict, target) -> dict:
    heads = cfg.get("num_attention_heads")
    return {"hidden": cfg["hidden_size"], "n_heads": heads, "n_kv_heads": cfg.get("num_key_value_heads") or heads,
            "intermediate": cfg["intermediate_size"], "rope_theta": cfg.get("rope_theta", 10000.0),
            "rms_eps": cfg.get("rms_norm_eps", 1e-6), "head_dim": cfg.get("head_dim"), "fc_bias": "fc.bias" in state}


def _medusa_hub_config(cfg: dict, state: dict, target) -> dict:
    n_heads = cfg.get("medusa_num_heads") or len({k.split(".")[0] for k in state})
    return {"hidden": cfg.get("hidden_size", target.config.hidden_size), "n_heads": int(n_heads),
            "n_blocks": int(cfg.get("medusa_num_layers", 1))}


@dataclass(frozen=True)
class TrainedKind:
    """One kind of trained drafter: how it is named, stored, rebuilt, started fresh and loaded from the Hub.

    `build(config, state, target)` makes the module from a manifest / Hub config and the state in its
    file layout (left on the CPU; `build()` below moves it); `fresh(target, exit_layer)` an untrained
    one; `to_file(module, fp16 state)` the state in its file layout. `hub_config(config.json, state,
    target)` reads a Hub head checkpoint's config, None when the kind has no Hub format (shipped only).
    `reads_hidden`: its config names the hidden size it was trained for, which must be the target's.
    `draft_model(target, module)`: the module as a stand-alone causal LM draft (the distilled exit),
    None when the drafter rides on the target's features."""

    name: str
    label: str
    file: str
    build: Callable[[dict, dict, nn.Module], nn.Module]
    fresh: Callable[[nn.Module, int], nn.Module]
    to_file: Callable[[nn.Module, dict], dict] = lambda module, state: state
    hub_config: Callable[[dict, dict, nn.Module], dict] | None = None
    reads_hidden: bool = True
    draft_model: Callable[[nn.Module, nn.Module], nn.Module] | None = None

    @property
    def hub_heads(self) -> bool:
        """Whether a Hub / local head checkpoint can stand in for the shipped weights."""
        return self.hub_config is not None

    def replay_model(self, target, module) -> nn.Module | None:
        """The drafting model the what-if replay should drive for this kind, or None (use another)."""
        return None if self.draft_model is None else self.draft_model(target, module)


TRAINED_KINDS: dict[str, TrainedKind] = {k.name: k for k in (
    TrainedKind("eagle", "EAGLE-style feature drafter", "eagle.safetensors", _build_eagle,
                lambda target, exit_layer: FeatureDrafter.for_target(target.config),
                to_file=_eagle_to_file, hub_config=_eagle_hub_config),
    TrainedKind("medusa", "Medusa heads", "medusa.safetensors", _build_medusa,
                lambda target, exit_layer: MedusaHeads(target.config.hidden_size, 4),
                to_file=lambda module, state: medusa_to_hub(state), hub_config=_medusa_hub_config),
    TrainedKind("exit", "distilled early exit", "exit.safetensors", _build_exit,
                lambda target, exit_layer: ExitDraftLayers(target, exit_layer),
                reads_hidden=False, draft_model=distilled_exit_model),
)}


def trained_kind(name: str) -> TrainedKind:
    try:
        return TRAINED_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown trained drafter kind {name!r}; the kinds are {', '.join(TRAINED_KINDS)}") from None


def hub_kinds() -> list:
    """The kinds a Hub / local head checkpoint can supply."""
    return [k.name for k in TRAINED_KINDS.values() if k.hub_heads]


def _hub_kind(kind: str) -> TrainedKind:
    spec = trained_kind(kind)
    if not spec.hub_heads:
        raise ModelLoadError(f"the {spec.label} is a shipped drafter only: head checkpoints are "
                             f"{' or '.join(trained_kind(k).label for k in hub_kinds())}")
    return spec


# ------------------------------------------------------------------ building modules from saved state
def build(kind: str, config: dict, state: dict, target) -> nn.Module:
    spec = trained_kind(kind)
    hidden = target.config.hidden_size
    if spec.reads_hidden and config["hidden"] != hidden:
        raise ModelLoadError(f"the {spec.label} were trained for hidden size {config['hidden']}, "
                             f"but the target's is {hidden}: they belong to another model")
    m = spec.build(config, state, target)
    return m.to(device=_device(target), dtype=target.dtype).eval().requires_grad_(False)


def save_drafter(directory: Path, kind: str, module: nn.Module) -> dict:
    """Write one drafter as fp16 safetensors in its Hub layout; returns its manifest entry."""
    from safetensors.torch import save_file

    spec = trained_kind(kind)
    state = spec.to_file(module, {k: v.detach().to(torch.float16).contiguous().cpu()
                                  for k, v in module.state_dict().items()})
    path = Path(directory) / spec.file
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return {"file": spec.file, "bytes": path.stat().st_size, "sha256": sha256(path), "dtype": "float16",
            "config": module.config(), "parameters": sum(v.numel() for v in state.values() if v.is_floating_point())}


def check_manifest(directory: Path) -> list:
    """Problems with a drafter directory: files missing, or sizes / hashes that differ from the manifest."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        return [f"{path} is missing"]
    manifest = json.loads(path.read_text())
    problems = []
    for kind, entry in manifest.get("drafters", {}).items():
        f = directory / entry["file"]
        if not f.exists():
            problems.append(f"{kind}: {f} is missing")
        elif f.stat().st_size != entry["bytes"] or sha256(f) != entry["sha256"]:
            problems.append(f"{kind}: {f} does not match the manifest (size or SHA-256)")
    listed = {e["file"] for e in manifest.get("drafters", {}).values()}
    for f in directory.glob("*.safetensors"):
        if f.name not in listed:
            problems.append(f"{f} is not in the manifest")
    return problems


def load_directory(directory: Path, target, target_id: str) -> TrainedDrafters:
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    out = TrainedDrafters(target_id, manifest=manifest, source=str(directory))
    for kind, entry in manifest.get("drafters", {}).items():
        f = directory / entry["file"]
        if f.exists():
            out.modules[kind] = build(kind, entry["config"], load_file(str(f)), target)
    return out


def shipped_drafters(target_id: str, target) -> TrainedDrafters:
    """The shipped drafters for this target (empty when none are shipped), loaded from their directory.
    Callers that run often cache them in the model store (`ModelStore.cached("trained", ...)`)."""
    key = EMBEDDED_MODEL_ID if is_embedded(target_id) else target_id
    directory = SHIPPED.get(key)
    if directory is None or not (directory / MANIFEST).exists():
        return TrainedDrafters(key)
    return load_directory(directory, target, key)


def available_kinds(target_id: str | None = None) -> set:
    """Which drafter kinds are shipped for a target (by manifest, without loading weights)."""
    directory = SHIPPED.get(EMBEDDED_MODEL_ID if is_embedded(target_id) else target_id)
    if directory is None or not (directory / MANIFEST).exists():
        return set()
    manifest = json.loads((directory / MANIFEST).read_text())
    return {k for k, e in manifest.get("drafters", {}).items() if (directory / e["file"]).exists()}


# ------------------------------------------------------------------ Hub heads
def load_hub_head(head_id: str, kind: str, target) -> nn.Module:
    """An EAGLE-1/2 or Medusa head checkpoint by Hub id or local directory."""
    _hub_kind(kind)
    head_id = head_id.strip()
    local = Path(head_id).expanduser()
    if path_exists(local) and local.is_dir():
        directory = local
    else:
        if not hub_reachable():
            raise ModelLoadError(f"cannot fetch the head checkpoint {head_id!r}: the Hugging Face Hub is unreachable "
                                 f"(offline). Give a local directory holding its config.json and weights instead.")
        from huggingface_hub import snapshot_download

        try:
            directory = Path(snapshot_download(head_id, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.pt"]))
        except Exception as err:  # noqa: BLE001 - any Hub failure is the user's to fix
            raise ModelLoadError(f"cannot fetch the head checkpoint {head_id!r}: {str(err).splitlines()[0]}") from None
    try:
        return load_head_directory(directory, kind, target)
    except ModelLoadError as err:
        # named as the request spelled it: not '~' made absolute, nor the Hub cache's folder on the server
        raise ModelLoadError(str(err).replace(str(directory), head_id)) from None


def _read_state(directory: Path) -> dict:
    from safetensors.torch import load_file

    for name in ("model.safetensors", "medusa_lm_head.safetensors", "pytorch_model.bin", "medusa_lm_head.pt"):
        f = directory / name
        if f.exists():
            if f.suffix == ".safetensors":
                return load_file(str(f))
            return torch.load(str(f), map_location="cpu", weights_only=True)
    raise ModelLoadError(f"{directory} holds no head weights (model.safetensors, pytorch_model.bin or medusa_lm_head.*)")


def load_head_directory(directory: Path, kind: str, target) -> nn.Module:
    spec = _hub_kind(kind)
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise ModelLoadError(f"{directory} has no config.json; it is not a head checkpoint ({spec.label})")
    state = _read_state(directory)
    try:
        return build(kind, spec.hub_config(json.loads(cfg_path.read_text()), state, target), state, target)
    except ModelLoadError:
        raise
    except (RuntimeError, KeyError, ValueError) as err:
        raise ModelLoadError(f"{directory} does not fit this target as {spec.label}: {str(err).splitlines()[0]}") from None


def fresh_drafter(kind: str, target, seed: int = 0, jitter: float = 0.0, exit_layer: int = 1) -> nn.Module:
    """An untrained drafter of this kind for a target (tests, and the starting point of training).

    `jitter` adds seeded noise to every weight so that even a fresh Medusa head (whose residual
    starts at zero) drafts something other than the target's own next token."""
    spec = trained_kind(kind)
    torch.manual_seed(seed)
    m = spec.fresh(target, exit_layer)
    if jitter:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * jitter)
    return m.to(device=_device(target), dtype=target.dtype).eval().requires_grad_(False)
