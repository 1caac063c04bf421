"""Diffusion decoding: schedule invariants on hand-made views, end-to-end runs on tiny random models of each
backbone, the block cache against full recomputation, adaptive blocks, early commit, and the loaders."""
import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from specviz.config import ConfigError
from specviz.decoding.diffusion import DiffusionConfig, DiffusionDecoder, diffuse
from specviz.decoding.schedules import (SCHEDULE_HELP, SCHEDULES, CellView, Schedule, ScheduleParams, logit_gap,
                                        per_step_count, prophet_threshold, register_schedule, select)
from specviz.models.diffusion import BLOCK_CAUSAL, DIFFUSION_FAMILIES, HF, SIGMA, family_for, load_diffusion_model, \
    tiny_family_model
from specviz.models.loading import ModelLoadError
from specviz.trace import (KEPT, MASKED, PINNED_BY_USER, REMASKED, REVEALED, SENT_BACK_BY_USER, Trace, TraceError,
                           check_invariants, user_actions)

PROMPT = np.array([1, 5, 7, 9, 3, 11])
NATIVE = [n for n, f in DIFFUSION_FAMILIES.items() if f.backbone is not None]


def view(conf, masked=None, block=None, gap=None, ent=None, own=None, steps_left=4, progress=0.0, revisable=None):
    conf = np.asarray(conf, dtype=np.float32)
    n = conf.shape[0]
    masked = np.ones(n, bool) if masked is None else np.asarray(masked, bool)
    in_block = np.ones(n, bool) if block is None else np.asarray(block, bool)
    return CellView(
        masked=masked, eligible=masked & in_block, proposal=np.arange(n, dtype=np.int64), confidence=conf,
        top2_gap=np.asarray(gap if gap is not None else conf / 2, np.float32),
        entropy=np.asarray(ent if ent is not None else 1 - conf, np.float32),
        commit_conf=np.asarray(own if own is not None else np.full(n, np.nan), np.float32),
        revisable=np.asarray(revisable if revisable is not None else ~masked & in_block, bool),
        steps_left=steps_left, progress=progress)


RNG = np.random.default_rng(0)


# schedules on hand-made views ------------------------------------------------------------
@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_reveals_at_least_one_eligible_cell(name):
    v = view([0.1, 0.2, 0.3, 0.05, 0.15, 0.4], masked=[1, 1, 1, 0, 1, 1], block=[1, 1, 1, 1, 0, 0], steps_left=9)
    sel = select(name, v, ScheduleParams(threshold=0.99, prophet_gap=100.0), RNG)
    assert sel.reveal.size >= 1
    assert set(sel.reveal) <= {0, 1, 2}  # masked and inside the block
    assert sel.remask.size < sel.reveal.size


def test_count_spreads_the_block_over_its_steps():
    assert [per_step_count(n, s) for n, s in [(8, 8), (8, 4), (8, 3), (1, 5), (0, 1), (7, 1)]] == [1, 2, 3, 1, 1, 7]
    sel = select("low_confidence", view([0.1, 0.9, 0.5, 0.8, 0.2, 0.3], steps_left=3), ScheduleParams(), RNG)
    assert sel.reveal.tolist() == [1, 3]  # the two most confident of six cells with 3 steps left


def test_margin_and_entropy_order_by_their_own_signal():
    conf = [0.5, 0.5, 0.5, 0.5]
    gap = [0.1, 0.4, 0.3, 0.0]
    ent = [2.0, 1.5, 0.1, 3.0]
    assert select("margin", view(conf, gap=gap, steps_left=4), ScheduleParams(), RNG).reveal.tolist() == [1]
    assert select("entropy", view(conf, ent=ent, steps_left=4), ScheduleParams(), RNG).reveal.tolist() == [2]


def test_random_is_seeded():
    v = view(np.linspace(0.1, 0.9, 20), steps_left=4)
    a = select("random", v, ScheduleParams(), np.random.default_rng(3)).reveal
    b = select("random", v, ScheduleParams(), np.random.default_rng(3)).reveal
    assert a.tolist() == b.tolist() and a.size == 5


def test_threshold_reveals_exactly_the_cells_above_it_or_the_best_one():
    v = view([0.95, 0.2, 0.91, 0.89, 0.99], steps_left=1)
    sel = select("threshold", v, ScheduleParams(threshold=0.9), RNG)
    assert sel.reveal.tolist() == [0, 2, 4] and sel.threshold == 0.9 and sel.signal == pytest.approx(0.99)
    sel = select("threshold", view([0.3, 0.6, 0.5]), ScheduleParams(threshold=0.9), RNG)
    assert sel.reveal.tolist() == [1] and "none above" in sel.rule


def test_prophet_goes_all_in_only_when_the_gap_passes_its_staged_threshold():
    assert [prophet_threshold(5.0, p) for p in (0.0, 0.5, 0.9)] == [7.5, 5.0, 2.5]
    # p1 = 0.9, p2 = 0.009: a logit gap of log(100) = 4.6
    conf, gap = [0.9] * 6, [0.891] * 6
    assert logit_gap(np.array([0.9]), np.array([0.891]))[0] == pytest.approx(np.log(100), rel=1e-4)
    block = [1, 1, 0, 0, 0, 0]
    early = select("prophet", view(conf, gap=gap, block=block, progress=0.1), ScheduleParams(prophet_gap=5.0), RNG)
    assert "all-in" not in early.rule and not early.all_in and set(early.reveal) <= {0, 1}
    late = select("prophet", view(conf, gap=gap, block=block, progress=0.8), ScheduleParams(prophet_gap=5.0), RNG)
    # all-in reveals every scored masked cell, beyond the block too
    assert late.all_in and late.rule.startswith("prophet all-in") and late.reveal.tolist() == list(range(6))
    assert late.signal == pytest.approx(np.log(100), rel=1e-4) and late.threshold == 2.5


def test_remask_returns_cells_committed_weakly_but_fewer_than_it_reveals():
    masked = [1, 1, 1, 1, 0, 0, 0]
    own = [np.nan] * 4 + [0.05, 0.5, 0.01]
    v = view([0.9, 0.8, 0.7, 0.1, 0, 0, 0], masked=masked, own=own, steps_left=2)
    sel = select("remask", v, ScheduleParams(remask_below=0.2), RNG)
    assert sel.reveal.tolist() == [0, 1] and sel.remask.tolist() == [6]  # the weakest, one fewer than revealed
    last = select("remask", view([0.9, 0.8, 0.7, 0.1, 0, 0, 0], masked=masked, own=own, steps_left=1),
                  ScheduleParams(remask_below=0.2), RNG)
    assert last.remask.size == 0  # never on a block's last budgeted step


def test_the_registry_describes_every_schedule_and_refuses_unknown_names():
    assert list(SCHEDULES) == ["low_confidence", "random", "margin", "entropy", "threshold", "prophet", "remask"]
    assert dict(SCHEDULE_HELP) == {n: s.help for n, s in SCHEDULES.items()}
    assert SCHEDULES["threshold"].params == ("threshold",) and SCHEDULES["threshold"].source == "Fast-dLLM"
    assert SCHEDULES["prophet"].params == ("prophet_gap",) and SCHEDULES["low_confidence"].params == ()
    with pytest.raises(ValueError, match="unknown schedule 'nope': use one of low_confidence, random"):
        select("nope", view([0.5]), ScheduleParams(), RNG)
    with pytest.raises(ValueError, match="already registered"):
        register_schedule(SCHEDULES["random"])
    with pytest.raises(ValueError, match="unknown knobs"):
        register_schedule(Schedule("x", SCHEDULES["random"].select, "", params=("temperature",)))
    assert "x" not in SCHEDULES


# end to end on tiny random models -----------------------------------------------------------
@pytest.mark.parametrize("family", NATIVE)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_runs_end_to_end_on_every_native_backbone(family, schedule):
    lm = tiny_family_model(family, eos_ids=(7,))
    cfg = DiffusionConfig(schedule=schedule, gen_length=20, block_size=8, steps=10,
                          params=ScheduleParams(threshold=0.05, prophet_gap=0.5, remask_below=0.3))
    tr = diffuse(lm, PROMPT, cfg)
    check_invariants(tr, eos_ids=(7,), max_new_tokens=20)
    assert tr.finish_reason in ("eos", "length")
    assert Trace.from_json(tr.to_json()).to_json() == tr.to_json()
    s = tr.summary()
    assert s["forwards"] == s["steps"] and s["tokens_per_forward"] > 0
    for st in tr.steps:
        assert st.topk_ids.shape == (20, 5) and np.all(st.topk_probs[st.proposal >= 0].sum(1) <= 1 + 1e-5)
        # the proposals of revealed cells are their recorded top-1 under greedy decoding
        rev = st.cell_state == REVEALED
        assert np.array_equal(st.proposal[rev], st.topk_ids[rev, 0])


def test_the_decoder_builds_its_own_trace():
    lm = tiny_family_model("tiny")
    cfg = DiffusionConfig("prophet", 16, 8, 8, ScheduleParams(prophet_gap=0.5))
    dec = DiffusionDecoder(lm, PROMPT, cfg, settings={"method": "diffusion", "max_new_tokens": 16})
    assert dec.trace().steps == [] and dec.trace().output_ids.size == 0
    first = dec.step()
    assert dec.records == [first] and dec.trace().steps == [first] and dec.wall_s > 0
    rest = list(dec.steps())
    tr = dec.trace()
    assert tr.steps == [first, *rest] == dec.records and dec.step() is None and len(dec.records) == len(tr.steps)
    assert tr.method == "diffusion:prophet" and tr.target_id == lm.model_id and not tr.lossless
    assert tr.settings == {"method": "diffusion", "max_new_tokens": 16, "mode": "recompute", "family": "tiny",
                           "mask_id": lm.mask_id}
    assert tr.wall_s == dec.wall_s and tr.finish_reason == dec.finish_reason and tr.prefill_ms == dec.prefill_ms
    assert tr.output_ids.tolist() == dec.output_ids.tolist()
    check_invariants(tr)
    # without settings the trace records the config; diffuse agrees with the step-by-step decoder
    plain = diffuse(lm, PROMPT, cfg)
    assert plain.settings == {**cfg.to_dict(), "mode": "recompute", "family": "tiny", "mask_id": lm.mask_id}
    assert [x.canvas.tolist() for x in plain.steps] == [x.canvas.tolist() for x in tr.steps] and plain.wall_s > 0


def test_forward_styles_are_behaviour():
    fam = DIFFUSION_FAMILIES["sdar"]
    assert fam.forward_style.can_cache and not SIGMA.can_cache and HF.can_cache
    assert tiny_family_model("sdar").family.forward_style is HF  # the offline stand-in takes our mask
    assert replace(fam, forward_style="hf").forward_style is HF  # a style may still be named by its key
    with pytest.raises(ValueError, match="unknown forward style"):
        replace(fam, forward_style="nope")


def test_fixed_count_schedules_take_exactly_the_step_budget():
    lm = tiny_family_model("tiny")
    for steps in (4, 8, 16):
        tr = diffuse(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=16, block_size=8, steps=steps))
        assert len(tr.steps) == steps and tr.summary()["cells_per_forward"] == pytest.approx(16 / steps)
        assert [s.block for s in tr.steps] == [0] * (steps // 2) + [1] * (steps // 2)


def test_threshold_zero_fills_a_block_per_forward_and_one_fills_a_cell():
    lm = tiny_family_model("tiny")
    fast = diffuse(lm, PROMPT, DiffusionConfig("threshold", 24, 8, 24, ScheduleParams(threshold=0.0)))
    assert len(fast.steps) == 3 and all(s.n_revealed == 8 for s in fast.steps)
    slow = diffuse(lm, PROMPT, DiffusionConfig("threshold", 24, 8, 24, ScheduleParams(threshold=1.0)))
    assert len(slow.steps) == 24 and all(s.n_revealed == 1 for s in slow.steps)


def test_prophet_early_commit_finishes_the_canvas_in_one_step():
    lm = tiny_family_model("tiny")
    tr = diffuse(lm, PROMPT, DiffusionConfig("prophet", 24, 8, 24, ScheduleParams(prophet_gap=0.0)))
    assert len(tr.steps) == 1 and tr.steps[0].all_in and tr.steps[0].rule.startswith("prophet all-in")
    assert tr.steps[0].n_revealed == 24  # recompute mode scores the whole canvas, so all of it commits


def test_remasking_run_shrinks_masks_every_step():
    lm = tiny_family_model("tiny")
    tr = diffuse(lm, PROMPT, DiffusionConfig("remask", 24, 8, 12, ScheduleParams(remask_below=0.5)))
    check_invariants(tr)
    assert tr.summary()["remasked"] > 0  # a random model is unsure enough to remask
    assert any(np.any(s.cell_state == REMASKED) for s in tr.steps)


@pytest.mark.parametrize("family", ["sdar", "fast_dllm_v2"])
@pytest.mark.parametrize("schedule", ["low_confidence", "threshold"])
def test_block_cache_gives_the_same_steps_as_recomputing_the_canvas(family, schedule):
    """Block-causal attention: finished blocks never see later cells, so their cached KV is exact.
    (fast_dllm_v2 also checks the shifted read-out across block boundaries.)"""
    lm = tiny_family_model(family, seed=2)
    assert lm.attention == BLOCK_CAUSAL and lm.can_cache
    base = dict(schedule=schedule, gen_length=20, block_size=6, steps=10, params=ScheduleParams(threshold=0.05))
    cached = DiffusionDecoder(lm, PROMPT, DiffusionConfig(**base, use_cache=True))
    full = DiffusionDecoder(lm, PROMPT, DiffusionConfig(**base, use_cache=False))
    assert cached.mode == "block cache" and full.mode == "recompute"
    a, b = list(cached.steps()), list(full.steps())
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x.canvas, y.canvas)
        blk = slice(x.block_start, x.block_end)
        np.testing.assert_allclose(x.confidence[blk], y.confidence[blk], atol=1e-5)
    assert any(s.cached > 0 for s in a) and all(s.cached == 0 for s in b)


def test_adaptive_blocks_end_after_the_most_confident_delimiter():
    lm = tiny_family_model("tiny")
    delimiters = tuple(range(95))  # every token counts: the block ends after the most confident cell
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", 32, 4, 32, adaptive_block=True,
                                                       delimiter_threshold=0.0), delimiters)
    first = dec.step()
    window = slice(0, 8)  # a quarter of the canvas, at least one block
    assert first.block_end == int(np.nanargmax(first.confidence[window])) + 1
    assert first.rule.startswith(f"block size {first.block_end}")
    steps = [first, *dec.steps()]
    check_invariants(Trace("d", {}, "t", None, PROMPT, steps, finish_reason=dec.finish_reason))
    sizes = {s.block_end - s.block_start for s in steps}
    assert len(sizes) > 1  # blocks really adapt
    # a threshold nothing passes keeps the default block size
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", 32, 4, 32, adaptive_block=True,
                                                       delimiter_threshold=1.0), delimiters)
    assert dec.step().block_end == 4


def test_sampled_diffusion_is_seeded_and_valid():
    lm = tiny_family_model("tiny")
    cfg = DiffusionConfig("low_confidence", 16, 8, 8, temperature=1.0, seed=4)
    a, b = diffuse(lm, PROMPT, cfg), diffuse(lm, PROMPT, cfg)
    check_invariants(a)
    assert a.output_ids.tolist() == b.output_ids.tolist()
    c = diffuse(lm, PROMPT, DiffusionConfig("low_confidence", 16, 8, 8, temperature=1.0, seed=5))
    assert c.output_ids.tolist() != a.output_ids.tolist()


def test_bad_input_is_refused_clearly():
    lm = tiny_family_model("tiny")
    with pytest.raises(ValueError, match="empty"):
        DiffusionDecoder(lm, [], DiffusionConfig())
    with pytest.raises(ValueError, match="mask token"):
        DiffusionDecoder(lm, [1, lm.mask_id], DiffusionConfig())
    with pytest.raises(ValueError, match="context"):
        DiffusionDecoder(lm, PROMPT, DiffusionConfig(gen_length=600))
    with pytest.raises(ValueError, match="unknown schedule"):
        DiffusionConfig(schedule="nope")


# loaders ----------------------------------------------------------------------------------
def test_families_are_recognised_and_remote_code_needs_an_opt_in():
    assert family_for("GSAI-ML/LLaDA-8B-Instruct").name == "llada"
    assert family_for("Dream-org/Dream-v0-Instruct-7B").shift
    assert family_for("Efficient-Large-Model/Fast_dLLM_v2_1.5B").attention == BLOCK_CAUSAL
    assert family_for("JetLM/SDAR-1.7B-Chat").mask_id == 151669
    assert family_for("kuleshov-group/bd3lm-owt-block_size4").forward_style is SIGMA
    assert family_for("diffusionfamily/diffugpt-s").name == "diffugpt"
    with pytest.raises(ModelLoadError, match="not a diffusion LM"):
        family_for("gpt2")
    for model_id in ("GSAI-ML/LLaDA-8B-Instruct", "JetLM/SDAR-1.7B-Chat", "kuleshov-group/mdlm-owt"):
        with pytest.raises(ModelLoadError, match="SPECVIZ_TRUST_REMOTE_CODE=1"):
            load_diffusion_model(model_id)


def test_offline_hub_id_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="unreachable"):
        load_diffusion_model("diffusionfamily/diffugpt-s")


def test_diffugpt_checkpoint_layout_loads_into_gpt2(tmp_path, embedded):
    """DiffuGPT stores GPT-2 weights as embed_tokens + denoise_model.*; a tiny one saved that way loads
    through the real loader (from a local path) and scores like the bidirectional GPT-2 it came from."""
    import safetensors.torch

    src = tiny_family_model("diffugpt", vocab_size=embedded.tokenizer.vocab_size + 8, hidden=32)
    gpt = src.model
    state = {"embed_tokens.weight": gpt.transformer.wte.weight}
    state.update({f"denoise_model.{k[len('transformer.'):]}": v for k, v in gpt.state_dict().items()
                  if k.startswith("transformer.") and not k.startswith("transformer.wte")})
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    gpt.config.save_pretrained(tmp_path)
    tok = embedded.tokenizer
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    t2 = AutoTokenizer.from_pretrained(tmp_path)
    t2.add_special_tokens({"mask_token": "[¨M¨]"})
    t2.save_pretrained(tmp_path)
    lm = load_diffusion_model(str(tmp_path), family="diffugpt", device=torch.device("cpu"), dtype=torch.float32)
    assert lm.family.name == "diffugpt" and lm.mask_id == t2.mask_token_id and lm.shift
    ids = torch.tensor([3, 9, 27, lm.mask_id, lm.mask_id, 5])
    pos = torch.arange(6)
    np.testing.assert_allclose(lm.forward(ids, pos, None).numpy(), src.forward(ids, pos, None).numpy(), atol=1e-5)
    tr = diffuse(lm, [3, 9, 27], DiffusionConfig("low_confidence", 8, 4, 4))
    check_invariants(tr)


def test_invariants_catch_a_broken_canvas():
    lm = tiny_family_model("tiny")
    tr = diffuse(lm, PROMPT, DiffusionConfig("low_confidence", 8, 8, 4))
    check_invariants(tr)
    s1 = tr.steps[1]
    changed = s1.canvas.copy()
    kept = np.flatnonzero(s1.cell_state == KEPT)[0]
    changed[kept] = (changed[kept] + 1) % 90
    broken = [tr.steps[0], replace(s1, canvas=changed), *tr.steps[2:]]
    with pytest.raises(AssertionError, match="kept cell changed"):
        check_invariants(Trace("d", {}, "t", None, PROMPT, broken, finish_reason="length"))
    nothing = replace(s1, cell_state=np.where(s1.cell_state == REVEALED, KEPT, s1.cell_state).astype(np.int8))
    with pytest.raises(AssertionError):
        check_invariants(Trace("d", {}, "t", None, PROMPT, [tr.steps[0], nothing, *tr.steps[2:]]))


# interventions: pins and send-backs ---------------------------------------------------------
def _run(dec, upto=None):
    """Step `dec` to the end (or `upto` records in all); its records so far."""
    while not dec.done and (upto is None or len(dec.records) < upto):
        dec.step()
    return dec.records


def _other_token(lm, *avoid):
    return next(t for t in range(lm.vocab_size) if t not in avoid and t != lm.mask_id)


@pytest.mark.parametrize("family", ["tiny", "sdar", "fast_dllm_v2"])  # recompute, block cache, shifted cache
def test_a_pin_set_before_the_run_holds_from_step_0_to_the_end(family):
    lm = tiny_family_model(family, seed=2)
    cfg = DiffusionConfig("low_confidence", gen_length=20, block_size=6, steps=10)
    free = diffuse(lm, PROMPT, cfg).steps[-1].canvas
    # tokens the model would not have put there: the pins really change the canvas
    near, far = _other_token(lm, free[3]), _other_token(lm, free[17])
    dec = DiffusionDecoder(lm, PROMPT, cfg)
    assert dec.mode == ("recompute" if family == "tiny" else "block cache")
    dec.pin(3, near)
    dec.pin(17, far)  # a block the run reaches later
    steps = _run(dec)
    check_invariants(dec.trace())
    assert dec.finish_reason and dec.output_ids[3] == near
    assert [s.canvas[3] for s in steps] == [near] * len(steps) and [s.canvas[17] for s in steps] == [far] * len(steps)
    assert all(s.pinned[[3, 17]].all() and s.pinned.sum() == 2 for s in steps)
    assert all((s.cell_state[[3, 17]] == KEPT).all() for s in steps)  # never revealed nor remasked by a schedule
    assert np.flatnonzero(steps[0].intervention).tolist() == [3, 17]
    assert steps[0].intervention[3] == PINNED_BY_USER and not any(s.intervention.any() for s in steps[1:])
    assert [a.position for a in user_actions(steps)] == [3, 17] and user_actions(steps)[0].token_id == near
    # the pinned cells count as committed: the model fills only the 18 others
    assert sum(s.n_revealed for s in steps) == 18 and dec.trace().summary()["pinned"] == 2


def test_a_cell_sent_back_goes_to_the_mask_and_the_schedule_fills_it_again():
    lm = tiny_family_model("tiny")
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=16, block_size=8, steps=16))
    first = _run(dec, 3)[-1]
    cell = int(np.flatnonzero((first.canvas >= 0) & (np.arange(16) < first.block_end))[0])
    dec.remask(cell)
    assert dec.canvas[cell] == -1
    nxt = dec.step()
    assert nxt.intervention[cell] == SENT_BACK_BY_USER and nxt.n_sent_back == 1
    assert nxt.cell_state[cell] in (MASKED, REVEALED)  # the canvas as the user left it: masked before the forward
    steps = _run(dec)
    check_invariants(dec.trace())
    assert steps[-1].canvas[cell] >= 0 and dec.trace().summary()["sent_back"] == 1
    refill = next(s for s in steps[3:] if s.cell_state[cell] == REVEALED)
    assert refill.canvas[cell] == refill.proposal[cell]
    # a pinned cell sent back loses its pin and is filled by the model again
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=16, block_size=8, steps=16))
    dec.pin(2, 40)
    _run(dec, 2)
    dec.remask(2)
    s = dec.step()
    assert not s.pinned[2] and s.intervention[2] == SENT_BACK_BY_USER
    _run(dec)
    check_invariants(dec.trace())
    assert not dec.records[-1].pinned.any() and dec.records[-1].canvas[2] >= 0


def test_a_pin_and_a_send_back_between_the_same_steps_leave_no_record():
    """Pinning a masked cell and sending it back before the next step changes nothing the records saw."""
    lm = tiny_family_model("tiny")
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=16, block_size=8, steps=16))
    _run(dec, 1)
    masked = int(np.flatnonzero(dec.canvas < 0)[0])
    dec.pin(masked, 40)
    dec.remask(masked)
    assert not dec.step().intervention.any()
    _run(dec)
    check_invariants(dec.trace())


@pytest.mark.parametrize("family", ["sdar", "fast_dllm_v2"])
def test_interventions_in_finished_blocks_keep_the_block_cache_exact(family):
    """A pin or a send-back in a finished block reopens it and cuts the cache back to its start, so the cached run
    still takes the same steps as recomputing the whole canvas, also after the run had finished."""
    lm = tiny_family_model(family, seed=2)
    runs = {}
    for cache in (True, False):
        dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=20, block_size=6, steps=10,
                                                           use_cache=cache))
        dec.pin(4, 42)
        _run(dec, 7)
        assert dec.block == 2 and dec.spans == [(0, 6), (6, 12)] and not dec.block_started
        dec.remask(1)  # block 0 is finished: it reopens
        dec.pin(2, 40)  # a committed cell of the reopened block takes another token
        assert dec.block == 0 and (dec.start, dec.end) == (0, 6) and dec.upcoming == [(6, 12), (12, 18)]
        _run(dec, 8)
        _run(dec)
        dec.remask(10)  # after the end: the run carries on
        assert not dec.done
        _run(dec)
        runs[cache] = dec.records
        check_invariants(dec.trace())
        blocks = [s.block for s in dec.records]
        assert any(b < a for a, b in zip(blocks, blocks[1:]))  # the run went back to an earlier block
    a, b = runs[True], runs[False]
    assert len(a) == len(b) and any(s.cached > 0 for s in a)
    for x, y in zip(a, b):
        assert np.array_equal(x.canvas, y.canvas) and x.block == y.block
        blk = slice(x.block_start, x.block_end)
        np.testing.assert_allclose(x.confidence[blk], y.confidence[blk], atol=1e-5)
    assert a[-1].canvas[4] == 42 and a[-1].canvas[2] == 40 and a[-1].pinned[[2, 4]].all()


def test_a_reopened_block_is_followed_by_the_blocks_as_they_were():
    """Adaptive blocks: after a reopened block is full the run passes the later blocks with their own extents."""
    lm = tiny_family_model("tiny")
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", 32, 4, 16, adaptive_block=True,
                                                       delimiter_threshold=0.0), tuple(range(95)))
    _run(dec, 8)
    laid, active = list(dec.spans), (dec.start, dec.end)
    assert laid == [(0, 7), (7, 13)] and active == (13, 19) and not dec.block_started  # none of them 4 long
    dec.remask(0)
    reopened = dec.step()
    assert (reopened.block, reopened.block_start, reopened.block_end) == (0, 0, 7) and reopened.canvas[0] >= 0
    # its one masked cell filled, the run passed block 1 (full) and is back in block 2, all as they were laid
    assert dec.spans == laid and (dec.block, dec.start, dec.end) == (2, *active) and not dec.upcoming
    _run(dec)
    check_invariants(dec.trace())


def test_bad_interventions_are_refused_clearly():
    lm = tiny_family_model("tiny")
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=8, block_size=8, steps=8))
    for bad in (-1, 8, 10**12):
        with pytest.raises(ConfigError, match="off the canvas: its cells are 0 to 7"):
            dec.pin(bad, 3)
    for bad in (2.5, True, "3", None):
        with pytest.raises(ConfigError, match="position is a whole number"):
            dec.remask(bad)
    for bad in (-1, lm.vocab_size, 10**12):
        with pytest.raises(ConfigError, match="outside the model's vocabulary"):
            dec.pin(0, bad)
    with pytest.raises(ConfigError, match="token id is a whole number"):
        dec.pin(0, 3.0)
    with pytest.raises(ConfigError, match="mask token cannot be pinned"):
        dec.pin(0, lm.mask_id)
    with pytest.raises(ConfigError, match="cell 0 is masked already"):
        dec.remask(0)
    for j in range(7):
        dec.pin(j, 3)
    # the last masked cell: nothing would be left for the model, so no step would record the pin
    with pytest.raises(ConfigError, match="would leave the model nothing to fill"):
        dec.pin(7, 3)
    assert dec.canvas[7] == -1 and not dec.pinned[7] and not dec.done  # a refused pin changes nothing
    check_invariants(Trace("d", {}, "t", None, PROMPT, _run(dec), finish_reason=dec.finish_reason))
    # a finished run: a pin has nothing left to change; a send-back reopens it
    with pytest.raises(ConfigError, match="nothing to fill"):
        dec.pin(0, 4)
    # an end-of-sequence token pinned where the text before it is complete ends the run just the same
    eos = DiffusionDecoder(tiny_family_model("tiny", eos_ids=(7,)), PROMPT,
                           DiffusionConfig("low_confidence", gen_length=8, block_size=1, steps=8))
    with pytest.raises(ConfigError, match="nothing to fill"):
        eos.pin(0, 7)
    eos.pin(1, 7)  # cell 0 is still to fill, so the model has work
    assert [s.canvas[1] for s in _run(eos)] == [7] and eos.finish_reason == "eos"


def test_interventions_round_trip_through_the_trace_file_and_old_traces_still_load():
    from pathlib import Path

    lm = tiny_family_model("tiny")
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=16, block_size=8, steps=16))
    dec.pin(5, 40)
    _run(dec, 3)
    dec.remask(int(np.flatnonzero((dec.canvas >= 0) & ~dec.pinned)[0]))
    _run(dec)
    tr = dec.trace()
    text = tr.to_json()
    back = Trace.from_json(text)
    assert back.to_json() == text
    for x, y in zip(back.steps, tr.steps):
        assert np.array_equal(x.pinned, y.pinned) and np.array_equal(x.intervention, y.intervention)
        assert x.pinned.dtype == bool and x.intervention.dtype == np.int8
    doc = json.loads(text)
    # only steps with something to say carry the fields
    assert "pinned" in doc["steps"][0] and "intervention" in doc["steps"][0] and "intervention" not in doc["steps"][1]
    # a step from before interventions: no fields, nothing pinned
    untouched = json.loads(diffuse(lm, PROMPT, dec.config).to_json())["steps"]
    before = [{k: v for k, v in s.items() if k not in ("pinned", "intervention")} for s in untouched]
    old = Trace.from_json(json.dumps({**doc, "steps": before}))
    assert not any(s.pinned.any() or s.intervention.any() for s in old.steps)
    shipped = Path(__file__).resolve().parents[2] / "assets" / "traces"
    for path in shipped.glob("*.json"):
        if path.name != "index.json":
            loaded = Trace.from_json(path.read_text())
            assert loaded.kind != "diffusion" or not any(s.pinned.any() for s in loaded.steps)
    # malformed fields are refused with a message naming them
    for change, message in (([2] * 16, "pinned holds a value outside 0-1"), ([1] * 3, "pinned has 3 entries"),
                            ("yes", "pinned must be a list"), ([True] * 16, "pinned holds true/false")):
        bad = copy.deepcopy(doc)
        bad["steps"][1]["pinned"] = change
        with pytest.raises(TraceError, match=message):
            Trace.from_json(json.dumps(bad))
    bad = copy.deepcopy(doc)
    bad["steps"][1]["intervention"] = [7] * 16
    with pytest.raises(TraceError, match="intervention holds a value outside 0-2"):
        Trace.from_json(json.dumps(bad))
    # a pin let go without a send-back breaks the record contract
    bad = copy.deepcopy(doc)
    bad["steps"][2]["pinned"] = [0] * 16
    with pytest.raises(TraceError, match="a pin let go"):
        Trace.from_json(json.dumps(bad))


def test_invariants_catch_broken_pins():
    lm = tiny_family_model("tiny")
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig("low_confidence", gen_length=16, block_size=8, steps=16))
    dec.pin(5, 40)
    steps = _run(dec)
    check_invariants(dec.trace())

    def broken(k, **change):
        return Trace("d", {}, "t", None, PROMPT, [*steps[:k], replace(steps[k], **change), *steps[k + 1:]],
                     finish_reason="length")

    held = int(np.flatnonzero((steps[2].canvas >= 0) & ~steps[2].pinned)[0])  # committed, and nobody pinned it
    for k, name, cell, value, message in [
        (3, "canvas", 5, 41, "pinned cell changed its token"),
        (3, "pinned", 5, False, "a pin let go"),
        (3, "pinned", held, True, "nobody pinned it"),
        (0, "intervention", 9, SENT_BACK_BY_USER, "sent back a cell that was masked"),
    ]:
        changed = getattr(steps[k], name).copy()
        changed[cell] = value
        with pytest.raises(AssertionError, match=message):
            check_invariants(broken(k, **{name: changed}))
