"""The shipped tiny masked-diffusion LM: its assets, its sub-vocabulary forward, and a real decode."""
import numpy as np
import pytest
import torch

from specviz.decoding.diffusion import DiffusionConfig, diffuse
from specviz.models.tiny_mdm import TINY_MDM_DIR, load_tiny_mdm, read_token_map
from specviz.trace import REVEALED, check_invariants


@pytest.fixture(scope="module")
def tokenizer(embedded):
    return embedded.tokenizer


@pytest.fixture(scope="module")
def lm(tokenizer):
    return load_tiny_mdm(tokenizer)


def chat(tokenizer, text):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def test_assets_describe_the_sub_vocabulary(tokenizer, lm):
    meta = read_token_map()
    known = meta["token_map"]
    v_local = lm.model.config.vocab_size
    assert len(known) == v_local - 2
    assert meta["unk_local"] == len(known) and meta["mask_local"] == len(known) + 1 == v_local - 1
    assert known == sorted(set(known)) and 0 <= known[0] and known[-1] < len(tokenizer)
    for tok in ("<|im_start|>", "<|im_end|>"):
        assert tokenizer.convert_tokens_to_ids(tok) in known
    assert {"steps", "minutes", "final_loss", "seed", "data"} <= set(meta["train"])
    assert (TINY_MDM_DIR / "README.md").exists()
    size = sum(p.stat().st_size for p in TINY_MDM_DIR.iterdir())
    assert size < 8 * 2**20
    # the wrapper speaks tokenizer ids: the mask is one past the vocabulary
    assert lm.full_vocab == len(tokenizer) and lm.mask_id == len(tokenizer) and lm.local_mask == v_local - 1
    assert lm.vocab_size == len(tokenizer) + 1
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in lm.eos_ids
    assert not lm.shift and lm.attention == "full"


def test_forward_scores_only_the_sub_vocabulary(tokenizer, lm):
    known = torch.tensor(read_token_map()["token_map"])
    outside = sorted(set(range(len(tokenizer))) - set(known.tolist()))
    prompt = chat(tokenizer, "Tell me something nice.")
    # an unseen tokenizer id in the input goes through the unknown id; masked cells are the pseudo-id
    ids = torch.tensor(list(prompt) + [outside[len(outside) // 2]] + [lm.mask_id] * 4)
    logits = lm.forward(ids, torch.arange(ids.shape[0]), None)
    assert logits.shape == (ids.shape[0], len(tokenizer) + 1)
    assert torch.isfinite(logits[:, known]).all()
    assert torch.isneginf(logits[:, torch.tensor(outside)]).all()
    assert torch.isneginf(logits[:, lm.mask_id]).all()


def _reveal_confidence(tr):
    return np.concatenate([s.confidence[s.cell_state == REVEALED] for s in tr.steps])


# a prompt from the training set (assets/prompts, chat-001): the toy model is surest there
TRAINED_PROMPT = "I keep forgetting to drink water during the day. Can you give me a few simple tricks to remember?"


def test_diffusion_decodes_with_real_confidence(tokenizer, lm):
    prompt = chat(tokenizer, TRAINED_PROMPT)
    tr = diffuse(lm, prompt, DiffusionConfig(schedule="low_confidence", gen_length=32, block_size=8, steps=32))
    check_invariants(tr, lm.eos_ids, max_new_tokens=32)
    assert tr.output_ids.shape[0] > 0
    text = tokenizer.decode(tr.output_ids)
    assert isinstance(text, str) and text.strip()
    assert np.all(np.isin(tr.output_ids, read_token_map()["token_map"]))
    conf = _reveal_confidence(tr)
    assert conf.max() > 0.5 and np.mean(conf > 0.5) > 0.25  # a trained model is sure of many cells

    fast = diffuse(lm, prompt, DiffusionConfig(schedule="threshold", gen_length=32, block_size=8, steps=32))
    check_invariants(fast, lm.eos_ids, max_new_tokens=32)
    assert fast.summary()["tokens_per_forward"] >= 1.0


def test_the_confidence_check_fails_for_random_weights(tokenizer, lm):
    """The same architecture, untrained, is nowhere near confident: the check above means something."""
    import transformers
    from dataclasses import replace

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(lm.model.config).eval()
    model.config._attn_implementation = "sdpa"
    rand = replace(lm, model=model)
    prompt = chat(tokenizer, TRAINED_PROMPT)
    tr = diffuse(rand, prompt, DiffusionConfig(schedule="low_confidence", gen_length=16, block_size=8, steps=16))
    assert _reveal_confidence(tr).max() < 0.5
