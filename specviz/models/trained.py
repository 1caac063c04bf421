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
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .loading import EMBEDDED_MODEL_ID, ModelLoadError, hub_reachable, is_embedded
from .trained_heads import ExitDraftLayers, FeatureDrafter, MedusaHeads

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "drafters"
SHIPPED = {EMBEDDED_MODEL_ID: ASSETS / "smollm2-135m-instruct"}
MANIFEST = "manifest.json"
FILES = {"medusa": "medusa.safetensors", "eagle": "eagle.safetensors", "exit": "exit.safetensors"}
KIND_LABELS = {"medusa": "Medusa heads", "eagle": "EAGLE-style feature drafter", "exit": "distilled early exit"}


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
        return (f"the embedded model has no shipped {KIND_LABELS[kind]} (looked in {SHIPPED[EMBEDDED_MODEL_ID]}); "
                f"rebuild them with `python -m specviz train`, or pick another method")
    return (f"{target_id!r} has no shipped {KIND_LABELS[kind]}: give a head checkpoint (Hub id or local directory) "
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


# ------------------------------------------------------------------ building modules from saved state
def build(kind: str, config: dict, state: dict, target) -> nn.Module:
    dtype = target.dtype
    ranked = None
    if kind == "eagle":
        m = FeatureDrafter(config["hidden"], config["n_heads"], config["n_kv_heads"], config["intermediate"],
                           config["rope_theta"], config["rms_eps"], config.get("head_dim"), config.get("fc_bias", True))
        state = dict(state)
        ranked = state.pop(DRAFT_VOCAB_KEY, None)
        m.load_state_dict(eagle_from_hub(state))
    elif kind == "medusa":
        m = MedusaHeads(config["hidden"], config["n_heads"], config.get("n_blocks", 1))
        m.tree, m.rank_accuracy = config.get("tree"), config.get("rank_accuracy")
        heads, lm = medusa_from_hub(state, m.n_blocks)
        m.load_state_dict(heads)
        if lm:
            vocab = next(iter(lm.values())).shape[0]
            m.own_lm_heads = nn.ModuleList(nn.Linear(m.hidden, vocab, bias=False) for _ in range(m.n_heads))
            m.own_lm_heads.load_state_dict(lm)
    elif kind == "exit":
        m = ExitDraftLayers(target, config["exit_layer"], config.get("n_trained", 1))
        m.load_state_dict(state)
    else:
        raise ValueError(f"unknown drafter kind {kind!r}")
    hidden = target.config.hidden_size
    if kind in ("eagle", "medusa") and config["hidden"] != hidden:
        raise ModelLoadError(f"the {KIND_LABELS[kind]} were trained for hidden size {config['hidden']}, "
                             f"but the target's is {hidden}: they belong to another model")
    device = next(target.parameters()).device
    if kind == "eagle" and ranked is not None:
        if int(ranked.max()) >= target.config.vocab_size:
            raise ModelLoadError("the EAGLE drafter's ranked vocabulary has ids beyond the target's vocabulary")
        m.draft_vocab = ranked.to(device=device, dtype=torch.long)
    return m.to(device=device, dtype=dtype).eval().requires_grad_(False)


def save_drafter(directory: Path, kind: str, module: nn.Module) -> dict:
    """Write one drafter as fp16 safetensors in its Hub layout; returns its manifest entry."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in module.state_dict().items()}
    if kind == "eagle":
        state = eagle_to_hub(state)
        if getattr(module, "draft_vocab", None) is not None:  # token ids: kept exact, not fp16
            state[DRAFT_VOCAB_KEY] = module.draft_vocab.detach().to(torch.int64).contiguous().cpu()
    elif kind == "medusa":
        state = medusa_to_hub(state)
    path = Path(directory) / FILES[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return {"file": FILES[kind], "bytes": path.stat().st_size, "sha256": sha256(path), "dtype": "float16",
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


_CACHE: dict = {}
_LOCK = threading.Lock()


def shipped_drafters(target_id: str, target) -> TrainedDrafters:
    """The shipped drafters for this target (empty when none are shipped), loaded once per target."""
    key = EMBEDDED_MODEL_ID if is_embedded(target_id) else target_id
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] is target:
            return hit[1]
        directory = SHIPPED.get(key)
        found = (load_directory(directory, target, key) if directory is not None and (directory / MANIFEST).exists()
                 else TrainedDrafters(key))
        _CACHE[key] = (target, found)
        return found


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
    head_id = head_id.strip()
    local = Path(head_id).expanduser()
    if local.is_dir():
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
    return load_head_directory(directory, kind, target)


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
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise ModelLoadError(f"{directory} has no config.json; it is not an EAGLE or Medusa head checkpoint")
    cfg = json.loads(cfg_path.read_text())
    state = _read_state(directory)
    if kind == "eagle":
        heads = cfg.get("num_attention_heads")
        config = {"hidden": cfg["hidden_size"], "n_heads": heads, "n_kv_heads": cfg.get("num_key_value_heads") or heads,
                  "intermediate": cfg["intermediate_size"], "rope_theta": cfg.get("rope_theta", 10000.0),
                  "rms_eps": cfg.get("rms_norm_eps", 1e-6), "head_dim": cfg.get("head_dim"),
                  "fc_bias": "fc.bias" in state}
    elif kind == "medusa":
        n_heads = cfg.get("medusa_num_heads") or len({k.split(".")[0] for k in state})
        config = {"hidden": cfg.get("hidden_size", target.config.hidden_size), "n_heads": int(n_heads),
                  "n_blocks": int(cfg.get("medusa_num_layers", 1))}
    else:
        raise ModelLoadError(f"Hub heads are EAGLE or Medusa checkpoints, not {kind!r}")
    try:
        return build(kind, config, state, target)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ModelLoadError(f"{directory} does not fit this target as {KIND_LABELS[kind]}: {str(err).splitlines()[0]}") from None


def fresh_drafter(kind: str, target, seed: int = 0, jitter: float = 0.0, exit_layer: int = 1) -> nn.Module:
    """An untrained drafter of this kind for a target (tests, and the starting point of training).

    `jitter` adds seeded noise to every weight so that even a fresh Medusa head (whose residual
    starts at zero) drafts something other than the target's own next token."""
    torch.manual_seed(seed)
    if kind == "medusa":
        m = MedusaHeads(target.config.hidden_size, 4)
    elif kind == "eagle":
        m = FeatureDrafter.for_target(target.config)
    elif kind == "exit":
        m = ExitDraftLayers(target, exit_layer)
    else:
        raise ValueError(f"unknown drafter kind {kind!r}")
    if jitter:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * jitter)
    return m.to(device=next(target.parameters()).device, dtype=target.dtype).eval().requires_grad_(False)
