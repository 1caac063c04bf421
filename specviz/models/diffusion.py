"""Masked-diffusion language models behind one call.

Each family of diffusion LM differs in a few facts that decoding must respect:
which token is the mask, whether attention is fully bidirectional or
block-causal, its natural block size, and whether its logits are *shifted*
(models adapted from an AR checkpoint keep predicting the next position, so
the distribution for cell j is read at position j - 1). `DIFFUSION_FAMILIES`
records those facts; `DiffusionLM` hides them behind `forward()`. How a family's model is
called (which arguments it takes, whether it accepts our mask and KV cache) is a `ForwardStyle`
object the family holds: `HF`, `PLAIN`, `SIGMA` or `SDAR`.

Attention is expressed as a boolean "allowed" matrix [S, K] (query rows, key
columns over cache + new tokens), which native transformers backbones receive
as a 4D additive mask. Block-causal models can therefore keep finished blocks'
KV in a cache exactly: nothing in a finished block ever attends to later cells.

No Hub is reachable when testing, so every family whose backbone is a native
transformers architecture is exercised on a tiny random config of that
architecture (`tiny_family_model`). Families that ship their own modelling code
load only with `trust_remote_code=True`, which the server operator must opt into (never a request).
"""
from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from .loading import ModelLoadError, default_device, default_dtype, hub_reachable, load_error, path_exists

FULL, BLOCK_CAUSAL = "full", "block-causal"


def _all_allowed(ids: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """The attention rule as an [S, K] boolean on `ids`' device; None: every token sees every token."""
    if allowed is None:
        return torch.ones(ids.shape[0], ids.shape[0], dtype=torch.bool, device=ids.device)
    return allowed.to(ids.device)


@dataclass(frozen=True)
class ForwardStyle:
    """How a family's model is called: `forward(lm, ids, positions, allowed, cache)` → logits [S, V].

    `can_cache`: the call takes our attention rule and a KV cache, so block-causal models can keep finished
    blocks' KV (see `DiffusionLM.can_cache`)."""

    name: str
    can_cache: ClassVar[bool] = False

    def forward(self, lm: "DiffusionLM", ids, positions, allowed, cache) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class HFForward(ForwardStyle):
    """A native transformers model: input_ids, position_ids, a 4D additive mask and a DynamicCache."""

    can_cache: ClassVar[bool] = True

    def forward(self, lm, ids, positions, allowed, cache):
        allowed, dtype = _all_allowed(ids, allowed), lm.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=ids.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        kwargs = {"input_ids": ids.unsqueeze(0), "position_ids": positions.unsqueeze(0),
                  "attention_mask": mask[None, None]}
        if cache is not None:
            kwargs.update(past_key_values=cache, use_cache=True)
        return lm.model(**kwargs).logits[0]


@dataclass(frozen=True)
class PlainForward(ForwardStyle):
    """Remote code with its own fixed (bidirectional) attention: input_ids only, no mask, no cache."""

    def forward(self, lm, ids, positions, allowed, cache):
        if cache is not None or allowed is not None and not bool(allowed.all()):
            raise ModelLoadError(f"{lm.family.label} only runs full bidirectional attention without a cache")
        return lm.model(ids.unsqueeze(0)).logits[0]


@dataclass(frozen=True)
class SigmaForward(ForwardStyle):
    """DiT backbones (MDLM, BD3-LM) conditioned on the noise level, which these checkpoints zero anyway;
    BD3-LM builds its own block-causal mask in sample mode."""

    def forward(self, lm, ids, positions, allowed, cache):
        if cache is not None:
            raise ModelLoadError(f"{lm.family.label} runs without a KV cache in specviz")
        kwargs = {"timesteps": torch.zeros(1, device=ids.device)}
        if lm.attention == BLOCK_CAUSAL:
            kwargs["sample_mode"] = True
        out = lm.model(ids.unsqueeze(0), **kwargs)
        return (out if isinstance(out, torch.Tensor) else out.logits)[0]


@dataclass(frozen=True)
class SDARForward(ForwardStyle):
    """SDAR's code reads a 0/1 mask [1, q, kv] and appends to the cache only with store_kv."""

    can_cache: ClassVar[bool] = True

    def forward(self, lm, ids, positions, allowed, cache):
        kw = {"attention_mask": _all_allowed(ids, allowed).float()[None], "position_ids": positions.unsqueeze(0)}
        if cache is not None:
            kw.update(past_key_values=cache, use_cache=True, store_kv=True)
        return lm.model(ids.unsqueeze(0), **kw).logits[0]


HF, PLAIN, SIGMA, SDAR = HFForward("hf"), PlainForward("plain"), SigmaForward("sigma"), SDARForward("sdar")
FORWARD_STYLES = {f.name: f for f in (HF, PLAIN, SIGMA, SDAR)}


@dataclass(frozen=True)
class DiffusionFamily:
    name: str
    label: str
    hub_ids: tuple  # checkpoints known to belong to this family
    mask_token: str | None  # looked up in the tokenizer when mask_id is unknown
    mask_id: int | None
    attention: str  # FULL or BLOCK_CAUSAL
    block_size: int  # the family's natural block (semi-autoregressive) size
    shift: bool  # logits at position i score the token at i + 1 (AR-adapted models)
    remote_code: bool  # loading needs trust_remote_code=True
    auto_class: str  # transformers Auto class used to load it
    backbone: str | None  # native transformers class with the same layout (tiny offline tests), if any
    forward_style: ForwardStyle = HF  # how the model is called (HF, PLAIN, SIGMA, SDAR)
    stop_tokens: tuple = ()  # extra end-of-turn tokens, besides the tokenizer's EOS
    tried_on_real_weights: bool = False
    notes: str = ""

    def __post_init__(self):
        if isinstance(self.forward_style, str):  # a style named by its key (older callers)
            if self.forward_style not in FORWARD_STYLES:
                raise ValueError(f"unknown forward style {self.forward_style!r}: use one of {', '.join(FORWARD_STYLES)}")
            object.__setattr__(self, "forward_style", FORWARD_STYLES[self.forward_style])


DIFFUSION_FAMILIES = {
    f.name: f
    for f in (
        DiffusionFamily(
            "llada", "LLaDA (8B, Llama-like, bidirectional)", ("GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-8B-Base"),
            "<|mdm_mask|>", 126336, FULL, 32, shift=False, remote_code=True, auto_class="AutoModel",
            backbone="LlamaForCausalLM", forward_style=PLAIN, stop_tokens=("<|eot_id|>", "<|endoftext|>"),
            notes="remasking over the whole canvas; semi-autoregressive blocks of 32 in the reference sampler",
        ),
        DiffusionFamily(
            "dream", "Dream (7B, Qwen2-based, bidirectional, shifted)", ("Dream-org/Dream-v0-Instruct-7B",
                                                                         "Dream-org/Dream-v0-Base-7B"),
            "<|mask|>", 151666, FULL, 32, shift=True, remote_code=True, auto_class="AutoModel",
            backbone="Qwen2ForCausalLM", forward_style=PLAIN, stop_tokens=("<|im_end|>", "<|endoftext|>"),
            notes="initialised from Qwen2.5-7B, so cell j is scored at position j - 1; no mask = full attention",
        ),
        DiffusionFamily(
            "fast_dllm_v2", "Fast-dLLM v2 (1.5B, Qwen2.5 block diffusion, shifted)",
            ("Efficient-Large-Model/Fast_dLLM_v2_1.5B", "Efficient-Large-Model/Fast_dLLM_v2_7B"),
            "|<MASK>|", 151665, BLOCK_CAUSAL, 32, shift=True, remote_code=True, auto_class="AutoModelForCausalLM",
            backbone="Qwen2ForCausalLM", stop_tokens=("<|im_end|>", "<|endoftext|>"),
            notes="block-level KV cache of finished blocks; sub-blocks of 8 inside a block of 32",
        ),
        DiffusionFamily(
            "sdar", "SDAR (1.7B, Qwen3 block diffusion)", ("JetLM/SDAR-1.7B-Chat", "JetLM/SDAR-4B-Chat"),
            "<|MASK|>", 151669, BLOCK_CAUSAL, 4, shift=False, remote_code=True, auto_class="AutoModelForCausalLM",
            backbone="Qwen3ForCausalLM", forward_style=SDAR, stop_tokens=("<|im_end|>", "<|endoftext|>"),
            notes="autoregressive across blocks, diffusion within a block of 4; its code imports flash-attn (GPU); "
                  "it takes a 0/1 mask [1, q, kv] and store_kv",
        ),
        DiffusionFamily(
            "mdlm", "MDLM (OpenWebText, DiT backbone)", ("kuleshov-group/mdlm-owt",),
            None, 50257, FULL, 1024, shift=False, remote_code=True, auto_class="AutoModelForMaskedLM",
            backbone=None, forward_style=SIGMA,
            notes="GPT-2 tokenizer plus a mask token at 50257; a base model: prompts are continuations",
        ),
        DiffusionFamily(
            "bd3lm", "BD3-LM (OpenWebText, block diffusion, DiT backbone)",
            ("kuleshov-group/bd3lm-owt-block_size4", "kuleshov-group/bd3lm-owt-block_size8",
             "kuleshov-group/bd3lm-owt-block_size16"),
            None, 50257, BLOCK_CAUSAL, 4, shift=False, remote_code=True, auto_class="AutoModelForMaskedLM",
            backbone=None, forward_style=SIGMA,
            notes="block size is in the checkpoint name; GPT-2 tokenizer plus a mask token at 50257; "
                  "sample_mode=True makes its own block-causal mask",
        ),
        DiffusionFamily(
            "diffugpt", "DiffuGPT (GPT-2 adapted to diffusion, shifted)",
            ("diffusionfamily/diffugpt-s", "diffusionfamily/diffugpt-m"),
            "[¨M¨]", None, FULL, 1024, shift=True, remote_code=False, auto_class="diffugpt",
            backbone="GPT2LMHeadModel",
            notes="GPT-2 weights saved as embed_tokens + denoise_model.*; specviz renames them into GPT2LMHeadModel "
                  "and runs it bidirectionally; the mask is the tokenizer's mask token (10541 in -s, 50257 in -m)",
        ),
        DiffusionFamily(
            "tiny", "tiny random masked diffusion (tests and offline demo)", ("tiny-random-mdm",),
            None, None, FULL, 8, shift=False, remote_code=False, auto_class="", backbone="LlamaForCausalLM",
            notes="a 2-layer random Llama run with bidirectional attention; the last vocabulary id is the mask",
        ),
    )
}
TINY_ID = "tiny-random-mdm"


def family_for(model_id: str, family: str | None = None) -> DiffusionFamily:
    """The family of a checkpoint: named explicitly, or recognised from its id."""
    if family:
        if family not in DIFFUSION_FAMILIES:
            raise ModelLoadError(f"unknown diffusion family {family!r}: use one of {', '.join(DIFFUSION_FAMILIES)}")
        return DIFFUSION_FAMILIES[family]
    key = model_id.strip().lower()
    for fam in DIFFUSION_FAMILIES.values():
        if any(key == h.lower() for h in fam.hub_ids):
            return fam
    hints = {"llada": "llada", "dream": "dream", "fast_dllm": "fast_dllm_v2", "sdar": "sdar", "bd3lm": "bd3lm",
             "mdlm": "mdlm", "diffugpt": "diffugpt"}
    for hint, name in hints.items():
        if hint in key.replace("-", "_"):
            return DIFFUSION_FAMILIES[name]
    raise ModelLoadError(
        f"{model_id!r} is not a diffusion LM specviz knows; pick a family explicitly "
        f"({', '.join(n for n in DIFFUSION_FAMILIES if n != 'tiny')}) or use an AR model with Jacobi decoding"
    )


@dataclass
class DiffusionLM:
    """A loaded diffusion LM: `forward(ids, positions, allowed, cache)` → raw logits [S, V]."""

    model_id: str
    model: torch.nn.Module
    family: DiffusionFamily
    mask_id: int
    tokenizer: object = None
    block_size: int = 0
    eos_ids: tuple = ()
    load_s: float = 0.0
    trusted_remote_code: bool = False
    warnings: list = field(default_factory=list)
    # A model trained on a sub-vocabulary (the shipped tiny MDM) works in its own local ids:
    # `token_map[j]` is the tokenizer id of local id j (-1: a local-only id such as unknown or mask).
    # Callers always see tokenizer ids; `full_vocab` is then the size of the logits they get.
    token_map: torch.Tensor | None = None
    unk_local: int = -1
    full_vocab: int = 0

    def __post_init__(self):
        self.block_size = self.block_size or self.family.block_size
        if self.token_map is not None:
            full = self.full_vocab
            to_local = torch.full((full + 1,), self.unk_local, dtype=torch.long)
            known = self.token_map >= 0
            to_local[self.token_map[known]] = torch.nonzero(known)[:, 0]
            to_local[self.mask_id] = self.local_mask
            self._to_local = to_local.to(self.device)
            self._known_local = torch.nonzero(known)[:, 0].to(self.device)
            self._known_full = self.token_map[known].to(self.device)

    @property
    def local_mask(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0]) - 1

    # the family's conventions, read through the model
    attention = property(lambda self: self.family.attention, doc="FULL or BLOCK_CAUSAL")
    shift = property(lambda self: self.family.shift, doc="logits of cell i sit at position i - 1")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        if self.token_map is not None:
            return self.full_vocab + 1
        return int(self.model.get_output_embeddings().weight.shape[0])

    def knows(self, token_id: int) -> bool:
        """Whether the model has its own embedding for a tokenizer id (a sub-vocabulary model reads the others as
        unknown)."""
        if self.token_map is None:
            return 0 <= token_id < self.vocab_size
        return 0 <= token_id < self.vocab_size and int(self._to_local[token_id]) != self.unk_local

    @property
    def max_positions(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", 0) or getattr(cfg, "n_positions", 0) or 1 << 30)

    @property
    def can_cache(self) -> bool:
        """Finished blocks' KV can be reused exactly only when nothing attends forward (block-causal),
        and only through a call that takes our mask and cache."""
        return self.attention == BLOCK_CAUSAL and self.family.forward_style.can_cache

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache()

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor | None, cache=None):
        """Logits [S, V] for `ids` [S] at `positions` [S].

        `allowed` [S, K] says which keys (the cache's entries, then the S new tokens) each new
        token may attend to; None means every token sees every token (bidirectional, no cache)."""
        if self.token_map is None:
            return self._forward(ids, positions, allowed, cache)
        local = self._forward(self._to_local[ids.clamp(0, self.full_vocab)], positions, allowed, cache)
        out = torch.full((ids.shape[0], self.full_vocab + 1), float("-inf"), dtype=local.dtype, device=local.device)
        out[:, self._known_full] = local[:, self._known_local]
        return out

    def _forward(self, ids, positions, allowed, cache):
        return self.family.forward_style.forward(self, ids, positions, allowed, cache)


def _tiny_config(backbone: str, vocab_size: int, hidden: int, n_layers: int, max_positions: int):
    import transformers

    common = dict(vocab_size=vocab_size, num_hidden_layers=n_layers, max_position_embeddings=max_positions,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    if backbone == "GPT2LMHeadModel":
        return transformers.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=n_layers, n_head=4,
                                       n_positions=max_positions, bos_token_id=None, eos_token_id=None)
    cls = {"LlamaForCausalLM": "LlamaConfig", "Qwen2ForCausalLM": "Qwen2Config", "Qwen3ForCausalLM": "Qwen3Config"}
    config = getattr(transformers, cls[backbone])(hidden_size=hidden, intermediate_size=hidden * 2,
                                                  num_attention_heads=4, num_key_value_heads=2, **common)
    if backbone == "Qwen3ForCausalLM":
        config.head_dim = hidden // 4
    return config


def tiny_family_model(family: str = "tiny", vocab_size: int = 96, hidden: int = 32, n_layers: int = 2, seed: int = 0,
                      max_positions: int = 512, block_size: int | None = None, eos_ids=()) -> DiffusionLM:
    """A small random model with the family's backbone and conventions, in fp32 (no download, no tokenizer).

    The last vocabulary id is the mask token. Families without a native backbone raise ModelLoadError."""
    import transformers

    fam = DIFFUSION_FAMILIES[family]
    # the native backbone is causal when called plainly, so the tiny stand-in always takes our explicit mask
    fam = replace(fam, forward_style=HF)
    if fam.backbone is None:
        raise ModelLoadError(f"{fam.label} has no native transformers backbone to build offline")
    config = _tiny_config(fam.backbone, vocab_size, hidden, n_layers, max_positions)
    torch.manual_seed(seed)
    model = getattr(transformers, fam.backbone)(config)
    with torch.no_grad():
        # sharpen the random init so confidences spread out, as in tiny_random_llama
        model.get_output_embeddings().weight.mul_(8.0)
    model.config._attn_implementation = "sdpa"
    return DiffusionLM(f"tiny-random-{family}", model.eval(), fam, vocab_size - 1, None, block_size or fam.block_size,
                       tuple(eos_ids))


def load_diffusion_model(model_id: str, family: str | None = None, trust_remote_code: bool = False,
                         device: torch.device | None = None, dtype: torch.dtype | None = None,
                         revision: str | None = None) -> DiffusionLM:
    """Load a diffusion LM from the Hub or a local path. Remote code needs an explicit opt-in; `revision`
    pins the repository's commit (a public server pins every model allowed to run its own code)."""
    if model_id.strip() in ("tiny", TINY_ID):
        return tiny_family_model("tiny")
    fam = family_for(model_id, family)
    if fam.remote_code and not trust_remote_code:
        raise ModelLoadError(
            f"{model_id!r} ({fam.label}) runs modelling code downloaded from its Hub repository. "
            f"This server does not run such code; whoever starts it can allow it with SPECVIZ_TRUST_REMOTE_CODE=1 "
            f"(CLI: --trust-remote-code), only for repositories they trust."
        )
    import transformers

    device = device or default_device()
    online = path_exists(model_id) or hub_reachable()
    t0 = time.perf_counter()
    pinned = {"revision": revision} if revision else {}
    auto = _DiffuGPTLoader if fam.auto_class == "diffugpt" else getattr(transformers, fam.auto_class)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            "gpt2" if fam.name in ("mdlm", "bd3lm") else model_id, local_files_only=not online,
            trust_remote_code=trust_remote_code, **({} if fam.name in ("mdlm", "bd3lm") else pinned))
        model = auto.from_pretrained(model_id, dtype=dtype or default_dtype(device), local_files_only=not online,
                                     trust_remote_code=trust_remote_code, **pinned)
        model = model.to(device).eval()
    except (torch.cuda.OutOfMemoryError, OSError, ValueError, KeyError, ImportError, AttributeError) as err:
        raise load_error(model_id, err, online, f"a {fam.label}",
                         "The embedded model runs offline through Jacobi decoding.") from None
    mask_id = fam.mask_id
    if fam.name == "diffugpt" and getattr(tokenizer, "mask_token_id", None) is not None:
        mask_id = tokenizer.mask_token_id
    elif fam.mask_token is not None:
        found = tokenizer.convert_tokens_to_ids(fam.mask_token)
        if isinstance(found, int) and found != getattr(tokenizer, "unk_token_id", None):
            mask_id = found
    if mask_id is None:
        raise ModelLoadError(f"{model_id!r}: the tokenizer has no mask token {fam.mask_token!r}")
    eos = {i for i in (getattr(tokenizer, "eos_token_id", None),) if i is not None}
    for tok in fam.stop_tokens:
        i = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(i, int) and i != getattr(tokenizer, "unk_token_id", None):
            eos.add(i)
    lm = DiffusionLM(model_id, model, fam, int(mask_id), tokenizer, fam.block_size, tuple(sorted(eos)),
                     time.perf_counter() - t0, trust_remote_code)
    if trust_remote_code:
        lm.warnings.append(f"{model_id!r} ran modelling code from its repository (trust_remote_code=True).")
    return lm


class _DiffuGPTLoader:
    """DiffuGPT checkpoints hold GPT-2 weights under other names (embed_tokens, denoise_model.*) and are not
    loadable by an Auto class; rename them into a native GPT2LMHeadModel (tied LM head)."""

    @staticmethod
    def from_pretrained(model_id, dtype=None, local_files_only=False, trust_remote_code=False, revision=None):
        import safetensors.torch
        from transformers import AutoConfig, GPT2LMHeadModel

        path = Path(model_id).expanduser()
        if not path_exists(path):
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model_id, local_files_only=local_files_only, revision=revision,
                                          allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        state = {}
        for f in sorted(path.glob("*.safetensors")):
            state.update(safetensors.torch.load_file(str(f)))
        if not state:
            raise OSError(f"no safetensors weights in {path}")
        renamed = {}
        for k, v in state.items():
            if k == "embed_tokens.weight":
                renamed["transformer.wte.weight"] = v
            elif k.startswith("denoise_model."):
                renamed["transformer." + k[len("denoise_model."):]] = v
            elif not k.startswith("lm_head."):
                renamed[k] = v
        config.vocab_size = renamed["transformer.wte.weight"].shape[0]
        config.tie_word_embeddings = True
        model = GPT2LMHeadModel(config)
        missing, unexpected = model.load_state_dict(renamed, strict=False)
        missing = [m for m in missing if not m.startswith("lm_head.") and not m.endswith("attn.bias")]
        if missing or unexpected:
            raise KeyError(f"weights do not match GPT-2: missing {missing[:3]}, unexpected {unexpected[:3]}")
        model.tie_weights()
        model.config._attn_implementation = "sdpa"
        return model.to(dtype) if dtype is not None else model


