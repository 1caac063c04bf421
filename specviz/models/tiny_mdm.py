"""The shipped tiny masked-diffusion LM: a real (trained) model for the Diffusion tab offline.

`assets/models/tiny-mdm/` holds a 4-layer Llama trained for a few minutes on one CPU thread
with the LLaDA/MDLM objective (scripts/train_tiny_mdm.py rebuilds it). It reads the embedded
model's tokenizer (SmolLM2) but works in its own *local* ids over the sub-vocabulary seen in
training: local j < n_known is tokenizer id token_map[j], local n_known stands for any other
tokenizer id (unknown) and the last local id is the mask. `DiffusionLM` translates, so callers
see tokenizer ids, and the mask is the pseudo-id len(tokenizer) (one past the vocabulary).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from .diffusion import DIFFUSION_FAMILIES, FULL, HF, DiffusionLM
from .loading import ModelLoadError

TINY_MDM_ID = "tiny-mdm"
TINY_MDM_DIR = Path(__file__).resolve().parents[2] / "assets" / "models" / "tiny-mdm"

TINY_MDM_FAMILY = replace(
    DIFFUSION_FAMILIES["tiny"],
    name="tiny-mdm",
    label="tiny MDM trained for specviz (4-layer Llama, minutes on one CPU thread, SmolLM2 sub-vocabulary)",
    hub_ids=(TINY_MDM_ID,),
    forward_style=HF,
    attention=FULL,
    shift=False,
    block_size=8,
    notes="bidirectional masked diffusion (LLaDA objective) on the embedded model's own answers; a toy",
)


def read_token_map(path: Path = TINY_MDM_DIR) -> dict:
    with open(Path(path) / "token_map.json", encoding="utf-8") as f:
        return json.load(f)


def load_tiny_mdm(tokenizer, device: torch.device | None = None, path: Path | str | None = None) -> DiffusionLM:
    """The shipped tiny MDM around `tokenizer` (the embedded SmolLM2 tokenizer), in fp32."""
    import transformers

    path = Path(path) if path is not None else TINY_MDM_DIR
    if not (path / "model.safetensors").exists():
        raise ModelLoadError(f"the tiny MDM is missing from {path}; rebuild it with scripts/train_tiny_mdm.py")
    t0 = time.perf_counter()
    meta = read_token_map(path)
    known = [int(i) for i in meta["token_map"]]
    full_vocab = len(tokenizer)
    if known and max(known) >= full_vocab:
        raise ModelLoadError(f"the tiny MDM's token map does not fit this tokenizer ({full_vocab} ids)")
    n_known = len(known)
    if meta["unk_local"] != n_known or meta["mask_local"] != n_known + 1:
        raise ModelLoadError("the tiny MDM's token_map.json is inconsistent (unk/mask local ids)")
    model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    if model.get_output_embeddings().weight.shape[0] != n_known + 2:
        raise ModelLoadError("the tiny MDM's vocabulary does not match its token map")
    model.config._attn_implementation = "sdpa"
    model = model.to(device or torch.device("cpu")).eval()
    token_map = torch.tensor(known + [-1, -1], dtype=torch.long)
    eos = {i for i in (getattr(tokenizer, "eos_token_id", None), tokenizer.convert_tokens_to_ids("<|im_end|>"))
           if isinstance(i, int) and i != getattr(tokenizer, "unk_token_id", None)}
    return DiffusionLM(
        TINY_MDM_ID, model, TINY_MDM_FAMILY, full_vocab, tokenizer, TINY_MDM_FAMILY.block_size,
        tuple(sorted(eos)), time.perf_counter() - t0, False,
        token_map=token_map, unk_local=n_known, full_vocab=full_vocab,
    )
