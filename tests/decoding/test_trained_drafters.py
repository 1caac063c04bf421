"""Trained drafters: shapes, lossless decoding, the feature drafter's cache, training, the shipped
manifest, and Hub head formats."""
import json

import numpy as np
import pytest
import torch

from specviz.settings import RunSettings
from specviz.decoding.engine import decode
from specviz.decoding.registry import get_method
from specviz.decoding.trained_drafters import FeatureDraftKV
from specviz.models import ModelLoadError
from specviz.models.trained import (SHIPPED, available_kinds, check_manifest, fresh_drafter, load_head_directory,
                                    load_hub_head, save_drafter)
from specviz.models.trained_heads import MedusaHeads, distilled_exit_model
from specviz.trace import check_invariants

from ..conftest import PROMPTS, greedy_reference

TRAINED = {"medusa": "medusa", "eagle": "eagle", "exit_distilled": "exit"}
KNOBS = {"medusa": {"preset": "medusa-like-26"}, "eagle": {"depth": 4, "top_k": 3, "budget": 12},
         "exit_distilled": {"depth": 3, "top_k": 2, "budget": 6}}


def _fresh(name, model, seed=1):
    return fresh_drafter(TRAINED[name], model, seed=seed, jitter=0.05, exit_layer=2)


@pytest.mark.parametrize("name", list(TRAINED))
@pytest.mark.parametrize("prompt", range(len(PROMPTS)))
def test_fresh_trained_drafters_match_greedy_on_tiny_model(tiny, name, prompt):
    m = get_method(name)
    knobs = m.check_knobs(KNOBS[name])
    drafter = m.drafter(tiny, knobs, trained=_fresh(name, tiny))
    tr = decode(tiny, drafter, PROMPTS[prompt], RunSettings(name, knobs, 40))
    check_invariants(tr, max_new_tokens=40)
    assert tr.output_ids.tolist() == greedy_reference(tiny, PROMPTS[prompt], 40).tolist()
    assert sum(s.n_drafted for s in tr.steps) > 0
    assert {src for s in tr.steps for src in s.tree.source[1:]} <= {"medusa", "eagle", "distilled-exit-L2"}


def test_shapes(tiny):
    h, v = tiny.config.hidden_size, tiny.config.vocab_size
    heads = fresh_drafter("medusa", tiny)
    assert heads(torch.zeros(3, h), tiny.lm_head).shape == (4, 3, v)
    eagle = fresh_drafter("eagle", tiny)
    out = eagle(torch.zeros(2, 5, h), torch.zeros(2, 5, h), torch.arange(5).expand(2, 5))
    assert out.shape == (2, 5, h)
    draft = distilled_exit_model(tiny, fresh_drafter("exit", tiny, exit_layer=2))
    assert len(draft.model.layers) == 2 and draft.model.layers[0] is tiny.model.layers[0]
    assert draft.model.layers[1] is not tiny.model.layers[1]  # the trained copy
    assert draft(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, v)


@pytest.mark.parametrize("draft_vocab", [0, 40])
def test_eagle_drafts_only_from_its_ranked_vocabulary(tiny, draft_vocab, tmp_path):
    """FR-Spec-style reduced draft vocabulary: every drafted token is among the first N ranked
    ids, the draft probabilities sum to one over them, and the output is still plain greedy."""
    from safetensors.torch import load_file

    from specviz.models.trained import build

    m = get_method("eagle")
    knobs = m.check_knobs({"depth": 4, "top_k": 3, "budget": 12, "draft_vocab": draft_vocab})
    trained = _fresh("eagle", tiny)
    ranked = torch.randperm(tiny.config.vocab_size, generator=torch.Generator().manual_seed(5))
    trained.draft_vocab = ranked
    entry = save_drafter(tmp_path, "eagle", trained)
    assert entry["config"]["draft_vocab"] == tiny.config.vocab_size
    assert entry["parameters"] == sum(p.numel() for p in trained.parameters())
    again = build("eagle", entry["config"], load_file(str(tmp_path / entry["file"])), tiny)
    assert torch.equal(again.draft_vocab.cpu(), ranked)  # ids survive exactly (not through fp16)
    drafter = m.drafter(tiny, knobs, trained=again)
    tr = decode(tiny, drafter, PROMPTS[0], RunSettings("eagle", knobs, 40))
    assert tr.output_ids.tolist() == greedy_reference(tiny, PROMPTS[0], 40).tolist()
    drafted = {int(t) for s in tr.steps for t in s.tree.token_ids[1:]}
    assert drafted
    if draft_vocab:
        assert drafted <= set(ranked[:draft_vocab].tolist())
    else:
        assert len(drafted - set(ranked[:40].tolist())) > 0  # the whole vocabulary is in play
    # a knob change mid-run (next step) switches the LM-head rows
    drafter.set_shape({"draft_vocab": 10})
    assert drafter.kv.vocab_ids.tolist() == ranked[:10].tolist()


def test_ranked_vocabulary_puts_frequent_tokens_first(tiny):
    from specviz.train.train import ranked_vocabulary

    feats = _tiny_features(tiny)
    ranked = ranked_vocabulary(feats, 5)
    body = torch.cat([feats.tokens[int(a) + 8 : int(b)] for a, b in zip(feats.offsets[:-1], feats.offsets[1:])])
    counts = torch.bincount(body, minlength=tiny.config.vocab_size)
    assert len(ranked) == 5 and counts[ranked[0]] == counts.max()
    assert all(counts[ranked[i]] >= counts[ranked[i + 1]] for i in range(4))


def test_fresh_medusa_head_guesses_the_targets_own_next_token(tiny):
    """Zero-initialised residual: an untrained head is the target's LM head on the same feature."""
    heads = MedusaHeads(tiny.config.hidden_size, 2)
    f = torch.randn(4, tiny.config.hidden_size)
    assert torch.allclose(heads(f, tiny.lm_head)[1], tiny.lm_head(f))


def test_feature_drafter_cache_equals_full_recompute(tiny):
    """Entering (token, feature) pairs in pieces through the cache gives the causal full-sequence result."""
    eagle = fresh_drafter("eagle", tiny, jitter=0.05)
    embed, h = tiny.model.embed_tokens, tiny.config.hidden_size
    ids = torch.tensor([5, 9, 14, 3, 77, 41, 8])
    feats = torch.randn(len(ids) - 1, h)
    full = eagle(embed(ids[1:])[None], feats[None], torch.arange(len(ids) - 1)[None])[0]
    kv = FeatureDraftKV(eagle, embed, tiny.lm_head)
    kv.add_features(feats[:3])
    kv.catch_up(ids[:4])
    assert torch.allclose(kv.root_feature, full[2], atol=1e-5)
    # a tree step in between must not leak into the committed entries
    kv.forward(torch.tensor([11, 12]), [-1, -1])
    kv.keep([0])
    kv.add_features(feats[3:])
    kv.catch_up(ids)
    assert torch.allclose(kv.root_feature, full[-1], atol=1e-5)
    assert len(kv.cache) == len(ids) - 1


def test_feature_drafter_tree_node_sees_only_its_ancestors(tiny):
    eagle = fresh_drafter("eagle", tiny, jitter=0.05)
    kv = FeatureDraftKV(eagle, tiny.model.embed_tokens, tiny.lm_head)
    kv.add_features(torch.randn(4, tiny.config.hidden_size))
    kv.catch_up(torch.tensor([1, 2, 3, 4, 5]))
    a = kv.forward(torch.tensor([20, 21]), [-1, -1])  # two siblings
    b = kv.forward(torch.tensor([30]), [0])  # child of the first
    kv2 = FeatureDraftKV(eagle, tiny.model.embed_tokens, tiny.lm_head)
    kv2.add_features(kv.features.clone())
    kv2.catch_up(torch.tensor([1, 2, 3, 4, 5]))
    a2 = kv2.forward(torch.tensor([20]), [-1])
    b2 = kv2.forward(torch.tensor([30]), [0])
    assert torch.allclose(a[0], a2[0], atol=1e-5) and torch.allclose(b, b2, atol=1e-5)


# ---------------------------------------------------------------- training
def _tiny_features(tiny, n_seq=24, length=40, seed=0):
    from specviz.train.data import Sequence, record_features

    g = torch.Generator().manual_seed(seed)
    seqs = []
    for i in range(n_seq):
        # a repetitive language the heads can learn: a random 4-token motif repeated
        motif = torch.randint(3, tiny.config.vocab_size, (4,), generator=g).tolist()
        ids = (motif * (length // 4 + 1))[:length]
        seqs.append(Sequence(f"s{i}", "test", ids[:8], ids[8:]))
    return record_features(tiny, seqs, exit_layer=2, log=lambda *_: None)


@pytest.mark.parametrize("kind", ["medusa", "medusa_on_prompt", "eagle", "eagle_unrolled", "exit"])
def test_a_few_training_steps_lower_the_loss(tiny, kind):
    from specviz.train.train import train_eagle, train_exit, train_medusa

    feats = _tiny_features(tiny)
    feats.final, feats.exit_input = feats.final.float(), feats.exit_input.float()
    quiet = lambda *_: None  # noqa: E731
    if kind.startswith("medusa"):
        module, stats = train_medusa(tiny, feats, n_heads=3, epochs=8, lr=1e-2, batch=128,
                                     on_prompt=kind.endswith("prompt"), log=quiet)
    elif kind == "eagle":
        module, stats = train_eagle(tiny, feats, epochs=5, lr=3e-3, per_batch=4, log=quiet)
    elif kind == "eagle_unrolled":
        module, stats = train_eagle(tiny, feats, epochs=5, lr=3e-3, per_batch=4, unroll=2, cls_weight=0.5,
                                    cls_on_prompt=True, log=quiet)
    else:
        module, stats = train_exit(tiny, feats, exit_layer=2, epochs=3, lr=3e-3, per_batch=4, log=quiet)
    first = np.mean([l for _, l in stats.losses[:2]])
    assert stats.steps >= 10
    assert stats.last_loss < 0.8 * first, stats.losses
    assert not any(p.requires_grad for p in module.parameters()) or module.training is False


def test_unrolled_training_step_sees_what_a_depth_two_tree_node_sees():
    """The second unrolled step (training-time test) must compute, for every position at once,
    exactly what inference computes for a depth-2 node: the committed entries up to j, then the
    node fed the drafter's own predicted feature."""
    from specviz.models.trained_heads import DraftKVCache, FeatureDrafter
    from specviz.train.train import _second_step_mask

    torch.manual_seed(0)
    drafter = FeatureDrafter(32, 4, 2, 64).eval()
    n = 9
    emb, fin, nxt = torch.randn(1, n, 32), torch.randn(1, n, 32), torch.randn(1, n, 32)
    pos = torch.arange(n)[None]
    with torch.no_grad():
        cache = DraftKVCache()
        first = drafter(emb, fin, pos, cache=cache)
        second = drafter(nxt[:, :-1], first[:, :-1], pos[:, 1:], _second_step_mask(n - 1), cache=cache)
        for j in range(n - 1):
            step = DraftKVCache()
            drafter(emb[:, : j + 1], fin[:, : j + 1], pos[:, : j + 1], cache=step)
            node = drafter(nxt[:, j : j + 1], first[:, j : j + 1], pos[:, j + 1 : j + 2], cache=step)
            torch.testing.assert_close(second[0, j], node[0, 0], atol=1e-5, rtol=1e-5)


def test_trained_medusa_heads_ship_a_calibrated_tree(tiny, tmp_path):
    from specviz.decoding.shapes import normalise, parse_shape
    from specviz.models.trained import build, save_drafter
    from specviz.train.train import train_medusa

    feats = _tiny_features(tiny)
    feats.final = feats.final.float()
    heads, _ = train_medusa(tiny, feats, n_heads=3, epochs=2, lr=1e-2, batch=64, tree_nodes=20, log=lambda *_: None)
    assert len(heads.tree) == 20 and max(len(p) for p in heads.tree) <= 3
    assert len(heads.rank_accuracy) == 3 and all(0 <= a <= 1 for row in heads.rank_accuracy for a in row)
    entry = save_drafter(tmp_path, "medusa", heads)
    from safetensors.torch import load_file

    again = build("medusa", entry["config"], load_file(str(tmp_path / entry["file"])), tiny)
    assert parse_shape("calibrated", again) == normalise(heads.tree)
    # heads without a tree (e.g. from the Hub) fall back to the hand-made Medusa-like tree
    again.tree = None
    assert parse_shape("calibrated", again) == parse_shape("medusa-like-26")
    # other static-tree methods have no calibrated tree
    with pytest.raises(ValueError, match="comes with trained Medusa heads"):
        parse_shape("calibrated")


def test_header_length_is_the_shared_chat_header(tiny):
    from specviz.train.data import Features
    from specviz.train.train import header_length

    seqs = [[1, 2, 3, 9, 9], [1, 2, 3, 4], [1, 2, 3, 7, 7, 7]]
    offsets = np.cumsum([0] + [len(s) for s in seqs])
    feats = Features(torch.tensor(sum(seqs, [])), torch.zeros(offsets[-1], 4), None, offsets, np.array([3, 3, 3]))
    assert header_length(feats) == 3


def test_prompt_set_covers_long_inputs_and_holds_no_spec_bench_text():
    import json
    from pathlib import Path

    from specviz.train.prompts import build_prompt_set

    rows = build_prompt_set(seed=0)
    assert len({r["id"] for r in rows}) == len(rows)
    cats = {r["category"] for r in rows}
    assert {"long_summarisation", "passages_qa", "short_qa", "translation", "code", "math"} <= cats
    long = [r for r in rows if r["category"] in ("long_summarisation", "passages_qa")]
    assert len(long) >= 150 and min(len(r["prompt"]) for r in long) > 1000
    bench = Path(__file__).resolve().parents[3] / "shared" / "data" / "spec_bench" / "question_dev.jsonl"
    if bench.exists():
        turns = [json.loads(l)["turns"][0] for l in bench.read_text().splitlines() if l.strip()]
        snippets = {t[:60] for t in turns if len(t) >= 60}
        text = "\n".join(r["prompt"] for r in rows)
        assert not [s for s in snippets if s in text]


def test_self_written_queries_are_seeded_and_keep_their_opener(embedded):
    from specviz.train.queries import OPENERS, generate_queries, query_prefix

    model, tok = embedded.model, embedded.tokenizer
    assert query_prefix(tok).endswith("<|im_start|>user\n")
    runs = [generate_queries(model, tok, 6, seed=3, batch_size=4, max_query_tokens=40, log=lambda *a: None)
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]  # seeded: the same queries twice
    other = generate_queries(model, tok, 6, seed=4, batch_size=4, max_query_tokens=40, log=lambda *a: None)
    assert other != runs[0]
    rows = runs[0]
    assert len({r["id"] for r in rows}) == len(rows) == len({r["prompt"].lower() for r in rows})
    for r in rows:
        assert r["opener"] in OPENERS and r["prompt"].startswith(r["opener"]) and "<|" not in r["prompt"]


def test_shipped_self_written_queries_join_the_prompt_set():
    from specviz.train.prompts import build_prompt_set
    from specviz.train.queries import SELF_QUERIES, load_queries

    head = json.loads(SELF_QUERIES.read_text().splitlines()[0])["provenance"]
    assert head["command"].startswith("python -m specviz train --write-queries") and "Spec-Bench" in head["what"]
    queries = load_queries()
    assert len(queries) == head["n"] >= 1000
    rows = build_prompt_set(seed=0)
    assert [r["prompt"] for r in rows[-len(queries):]] == [q["prompt"] for q in queries]  # appended last


def test_grown_prompt_set_reuses_the_older_features(tiny, tmp_path, monkeypatch):
    from specviz.train.data import Sequence, record_features
    from specviz.train.pipeline import cached_features

    monkeypatch.setenv("SPECVIZ_CACHE", str(tmp_path))
    (tmp_path / "train").mkdir()
    seqs = [Sequence(f"s{i}", "x", [1, 2, 3 + i], [5 + i, 6, 7][: 1 + i]) for i in range(4)]
    quiet = lambda *a: None  # noqa: E731
    cached_features(tiny, seqs[:2], 2, "n2-t8-s0")
    calls = []
    monkeypatch.setattr("specviz.train.pipeline.record_features",
                        lambda model, ss, exit_layer: calls.append(len(ss)) or record_features(model, ss, exit_layer, log=quiet))
    grown = cached_features(tiny, seqs, 2, "n4-t8-s0")
    assert calls == [2]  # only the two new sequences were forwarded
    full = record_features(tiny, seqs, 2, log=quiet)
    assert torch.equal(grown.tokens, full.tokens) and np.array_equal(grown.offsets, full.offsets)
    assert np.array_equal(grown.answer_start, full.answer_start)
    assert torch.equal(grown.final, full.final) and torch.equal(grown.exit_input, full.exit_input)
    # a different older set (other tokens) is not reused
    calls.clear()
    cached_features(tiny, [Sequence("z", "x", [9, 9], [9])] + seqs[1:], 2, "n4-t9-s0")
    cached_features(tiny, [Sequence("z", "x", [9, 9], [8])] + seqs[1:], 2, "n5-t9-s0")
    assert calls == [4, 4]
    # a run without the early exit reuses features recorded with one
    calls.clear()
    no_exit = cached_features(tiny, seqs + [Sequence("y", "x", [4], [4])], None, "n5-t8-s0")
    assert calls == [1] and no_exit.exit_input is None and torch.equal(no_exit.final[: full.final.shape[0]], full.final)


# ---------------------------------------------------------------- shipped assets
def test_shipped_manifest_matches_the_files():
    from specviz.config import EMBEDDED_MODEL_ID

    directory = SHIPPED[EMBEDDED_MODEL_ID]
    assert check_manifest(directory) == []
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["drafters"]) == {"medusa", "eagle", "exit"}
    assert manifest["total_bytes"] == sum(f.stat().st_size for f in directory.glob("*.safetensors"))
    assert manifest["total_bytes"] <= 25 * 10**6
    for key in ("data", "seed", "hardware", "command", "total_seconds"):
        assert key in manifest
    assert manifest["command"].startswith("python -m specviz train")
    assert "Spec-Bench" in manifest["data"]["prompts"]  # says it is not Spec-Bench
    for entry in manifest["drafters"].values():
        assert entry["dtype"] == "float16" and entry["training"]["seconds"] > 0 and entry["recipe"]
    assert available_kinds(None) == {"medusa", "eagle", "exit"}


def test_save_and_check_manifest_round_trip(tiny, tmp_path):
    entry = save_drafter(tmp_path, "eagle", fresh_drafter("eagle", tiny, jitter=0.05))
    (tmp_path / "manifest.json").write_text(json.dumps({"drafters": {"eagle": entry}}))
    assert check_manifest(tmp_path) == []
    (tmp_path / "eagle.safetensors").write_bytes(b"x" + (tmp_path / "eagle.safetensors").read_bytes()[1:])
    assert "does not match" in check_manifest(tmp_path)[0]
    (tmp_path / "stray.safetensors").write_bytes(b"")
    assert any("not in the manifest" in p for p in check_manifest(tmp_path))


# ---------------------------------------------------------------- Hub head formats
def _hub_eagle_dir(tiny, path):
    from safetensors.torch import save_file

    from specviz.models.trained import eagle_to_hub

    eagle = fresh_drafter("eagle", tiny, jitter=0.05)
    c = tiny.config
    path.mkdir()
    state = eagle_to_hub({k: v.contiguous() for k, v in eagle.state_dict().items()})
    state["embed_tokens.weight"] = tiny.model.embed_tokens.weight.detach().clone()  # EAGLE-1 files carry a copy
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({
        "hidden_size": c.hidden_size, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "intermediate_size": c.intermediate_size,
        "rope_theta": eagle.rope_theta, "rms_norm_eps": c.rms_norm_eps}))
    return eagle


def test_hub_eagle_checkpoint_loads_and_drafts_identically(tiny, tmp_path):
    eagle = _hub_eagle_dir(tiny, tmp_path / "eagle")
    loaded = load_hub_head(str(tmp_path / "eagle"), "eagle", tiny)
    x = torch.randn(1, 4, tiny.config.hidden_size)
    pos = torch.arange(4)[None]
    assert torch.allclose(loaded(x, x, pos), eagle(x, x, pos), atol=1e-6)


def test_hub_medusa_checkpoint_with_its_own_lm_heads(tiny, tmp_path):
    from safetensors.torch import save_file

    h, v = tiny.config.hidden_size, tiny.config.vocab_size
    g = torch.Generator().manual_seed(0)
    state = {}
    for i in range(3):
        state[f"{i}.0.linear.weight"] = torch.randn(h, h, generator=g) * 0.1
        state[f"{i}.0.linear.bias"] = torch.zeros(h)
        state[f"{i}.1.weight"] = torch.randn(v, h, generator=g)
    (tmp_path / "m").mkdir()
    save_file(state, str(tmp_path / "m" / "medusa_lm_head.safetensors"))
    (tmp_path / "m" / "config.json").write_text(json.dumps({"medusa_num_heads": 3, "medusa_num_layers": 1,
                                                            "hidden_size": h}))
    heads = load_head_directory(tmp_path / "m", "medusa", tiny)
    f = torch.randn(h)
    x = f + torch.nn.functional.silu(state["1.0.linear.weight"] @ f)
    assert torch.allclose(heads(f, tiny.lm_head)[1], state["1.1.weight"] @ x, atol=1e-4)
    # and they decode losslessly through the method
    m = get_method("medusa")
    knobs = m.check_knobs({"preset": "binary-14"})
    tr = decode(tiny, m.drafter(tiny, knobs, trained=heads), PROMPTS[0],
                RunSettings("medusa", knobs, 30))
    assert tr.output_ids.tolist() == greedy_reference(tiny, PROMPTS[0], 30).tolist()


def test_hub_head_errors_are_clear(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="unreachable"):
        load_hub_head("yuhuili/EAGLE-LLaMA3-Instruct-8B", "eagle", tiny)
    (tmp_path / "e3").mkdir()
    from safetensors.torch import save_file

    save_file({"midlayer.self_attn.q_proj.weight": torch.zeros(2, 2), "d2t": torch.zeros(2)}, str(tmp_path / "e3" / "model.safetensors"))
    (tmp_path / "e3" / "config.json").write_text(json.dumps({"hidden_size": 32, "num_attention_heads": 4,
                                                             "intermediate_size": 64}))
    with pytest.raises(ModelLoadError, match="EAGLE-3"):
        load_hub_head(str(tmp_path / "e3"), "eagle", tiny)
    (tmp_path / "none").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_hub_head(str(tmp_path / "none"), "eagle", tiny)
    eagle_dir = tmp_path / "big"
    _hub_eagle_dir(tiny, eagle_dir)
    cfg = json.loads((eagle_dir / "config.json").read_text())
    (eagle_dir / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    with pytest.raises(ModelLoadError, match="does not fit|another model"):
        load_hub_head(str(eagle_dir), "eagle", tiny)


def test_missing_drafters_are_reported_clearly(tmp_path, monkeypatch, embedded):
    """Without shipped weights the method list says 'not installed' and a run says what to do."""
    from specviz.models import ModelStore
    from specviz.models import trained
    from specviz.runs import prepare_run
    from specviz.ui import speculative

    monkeypatch.setitem(trained.SHIPPED, embedded.model_id, tmp_path / "nothing-here")
    assert trained.available_kinds(None) == set()
    assert "not installed" in speculative._method_label(get_method("eagle"))
    assert "Not installed" in speculative._method_info("medusa")
    store = ModelStore(loader=lambda _id: embedded)
    with pytest.raises(ModelLoadError, match="has no shipped EAGLE-style feature drafter"):
        prepare_run(store, {"method": "eagle"})
    # the other methods are unaffected
    assert prepare_run(store, {"method": "sps"}).method.name == "sps"


@pytest.mark.parametrize("name", list(TRAINED))
def test_replayed_tau_equals_the_engines(tiny, name):
    """`bench tau` replays drafters against AR's output; its step count must match a real run."""
    from specviz.decoding.drafters import FeatureTap
    from specviz.decoding.whatif import replay_builder

    m = get_method(name)
    knobs = m.check_knobs(KNOBS[name])
    trained = _fresh(name, tiny)
    prompt = PROMPTS[1]
    tr = decode(tiny, m.drafter(tiny, knobs, trained=trained), prompt,
                RunSettings(name, knobs, 40))
    tap = FeatureTap(tiny)
    with tap, torch.no_grad():
        tiny(torch.tensor([list(prompt) + tr.output_ids.tolist()]))
    drafter = m.drafter(tiny, knobs, trained=trained)
    features = tap.take()[0] if drafter.reads_target_features else None
    accepted = []
    steps, _ = replay_builder(drafter, prompt, tr.output_ids, features, accepted)
    assert steps == len(tr.steps)
    assert accepted == [len(s.accepted_path) for s in tr.steps]
