"""The diffusion lattice views, on hand-built traces (no model, no torch)."""
import math

import numpy as np
import pytest

from specviz.trace import (
    KEPT, MASKED, REMASKED, REVEALED, DiffusionStep, check_diffusion_invariants, summarize_diffusion,
)
from specviz.viz import lattice
from specviz.viz.palette import LATTICE_STATE_COLORS

NAN = float("nan")


def make_step(k, prev, final, reveal, remask=(), block=(0, 8), conf=None, rule="", threshold=NAN, signal=NAN,
              forwards=1, topk=None, all_in=False):
    """One step on top of canvas `prev`: `reveal` takes the cells' `final` tokens, `remask` clears cells.
    Every masked (or remasked) cell inside the block is scored with its final token as the proposal."""
    n = prev.shape[0]
    reveal, remask = list(reveal), list(remask)
    canvas = prev.copy()
    canvas[reveal] = final[reveal]
    canvas[remask] = -1
    state = np.full(n, MASKED, dtype=np.int8)
    state[(prev >= 0)] = KEPT
    state[reveal] = REVEALED
    state[remask] = REMASKED
    proposal = np.full(n, -1, dtype=np.int64)
    lo, hi = block
    scored = [j for j in range(lo, hi) if prev[j] < 0 or j in remask]
    proposal[scored] = final[scored]
    confidence = np.full(n, NAN, dtype=np.float32)
    for j, c in (conf or {}).items():
        confidence[j] = c
    for j in scored:
        if not np.isfinite(confidence[j]):
            confidence[j] = 0.5
    gap = np.where(np.isfinite(confidence), confidence / 2, NAN).astype(np.float32)
    entropy = np.where(np.isfinite(confidence), -np.log(np.maximum(confidence, 1e-6)), NAN).astype(np.float32)
    if topk is None:
        ids, probs = np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    else:
        ids, probs = topk
    return DiffusionStep(
        step=k, block=0 if lo == 0 else 1, block_start=lo, block_end=hi, canvas=canvas, cell_state=state,
        proposal=proposal, confidence=confidence, top2_gap=gap, entropy=entropy, topk_ids=ids, topk_probs=probs,
        rule=rule, threshold=threshold, signal=signal, forwards=forwards, cached=0, eos_at=-1,
        forward_ms=10.0, select_ms=1.0, all_in=all_in,
    )


def small_trace(with_topk=True):
    """L = 8, two blocks of 4, 4 steps: step 1 remasks cell 2, step 2 goes all-in, step 3 costs 2 forwards."""
    final = np.arange(10, 18, dtype=np.int64)
    topk = None
    if with_topk:
        ids = np.full((8, 3), -1, dtype=np.int64)
        probs = np.zeros((8, 3), dtype=np.float32)
        ids[0] = [10, 99, 98]
        probs[0] = [0.7, 0.2, 0.05]
        topk = (ids, probs)
    prev = np.full(8, -1, dtype=np.int64)
    steps = []
    spec = [
        dict(reveal=[0, 2], block=(0, 4), conf={0: 0.9, 1: 0.5, 2: 0.8, 3: 0.4}, rule="threshold 0.70: 2 cells",
             threshold=0.7, signal=0.9, topk=topk),
        dict(reveal=[1, 3], remask=[2], block=(0, 4), conf={1: 0.75, 2: 0.3, 3: 0.72}, rule="threshold 0.70: 2 cells",
             threshold=0.7, signal=0.75),
        dict(reveal=[2], block=(0, 4), conf={2: 0.6}, rule="prophet all-in (gap 0.41)", all_in=True),
        dict(reveal=[4, 5, 6, 7], block=(4, 8), conf={4: 0.95, 5: 0.9, 6: 0.85, 7: 0.8}, rule="threshold 0.70: 4 cells",
             threshold=0.7, signal=0.95, forwards=2),
    ]
    for k, kw in enumerate(spec):
        s = make_step(k, prev, final, **kw)
        steps.append(s)
        prev = s.canvas
    return steps


def labels_for(steps):
    canvas = [[f"t{int(t)}" if t >= 0 else "" for t in s.canvas] for s in steps]
    proposal = [[f"p{int(t)}" if t >= 0 else "" for t in s.proposal] for s in steps]
    return canvas, proposal


def big_trace():
    """L = 200 over 150 steps: two cells a step for 50 steps, then one; blocks of 40."""
    n = 200
    final = np.arange(1000, 1000 + n, dtype=np.int64)
    prev = np.full(n, -1, dtype=np.int64)
    steps, nxt = [], 0
    for k in range(150):
        width = 2 if k < 50 else 1
        cells = list(range(nxt, nxt + width))
        nxt += width
        lo = (cells[0] // 40) * 40
        s = make_step(k, prev, final, cells, block=(lo, lo + 40), conf={c: 0.9 for c in cells})
        steps.append(s)
        prev = s.canvas
    return steps


@pytest.fixture(scope="module")
def small():
    steps = small_trace()
    check_diffusion_invariants(steps)
    return steps


def test_synthetic_traces_are_valid():
    check_diffusion_invariants(small_trace())
    check_diffusion_invariants(small_trace(with_topk=False))
    steps = big_trace()
    check_diffusion_invariants(steps)
    assert steps[-1].n_masked == 0


def test_lattice_cells_states_shades_and_hover(small):
    canvas, proposal = labels_for(small)
    fig = lattice.lattice_figure(small, canvas, proposal)
    heat = fig.data[0]
    assert heat.type == "heatmap"
    z = np.asarray(heat.z)
    assert z.shape == (4, 8)
    assert list(heat.x) == list(range(8)) and list(heat.y) == list(range(4))
    # the band (integer part) is the state
    assert int(z[0, 0]) == REVEALED and int(z[0, 5]) == MASKED
    assert int(z[1, 0]) == KEPT and int(z[1, 2]) == REMASKED and int(z[2, 2]) == REVEALED
    # kept cell 0 at step 3 keeps the confidence it was committed with (0.9), not anything later
    assert z[3, 0] - KEPT == pytest.approx(0.02 + 0.96 * 0.9, abs=1e-6)
    # a masked, scored cell shows its proposal's confidence (cell 3 at step 0: 0.4); unscored is lightest
    assert z[0, 3] - MASKED == pytest.approx(0.02 + 0.96 * 0.4, abs=1e-6)
    assert z[0, 5] == pytest.approx(0.02)
    # hover data of revealed cell 2 at step 0
    cd = heat.customdata
    assert list(cd[0][2][:2]) == [0, 2]
    assert cd[0][2][2] == "revealed-now" and cd[0][2][3] == "t12" and cd[0][2][4] == "p12"
    assert cd[0][2][5] == "0.800"
    assert "commit #2" in cd[0][2][8] and "threshold 0.70" in cd[0][2][8]
    assert cd[1][2][2] == "remasked" and cd[1][2][3] == "[mask]" and "step 0" in cd[1][2][8]
    assert cd[0][6][4] == "–" and cd[0][6][5] == "–"  # unscored
    assert cd[2][0][2] == "kept" and "committed at step 0" in cd[2][0][8]
    for key in ("customdata[2]", "customdata[3]", "customdata[5]", "customdata[6]", "customdata[7]"):
        assert key in heat.hovertemplate
    # the y axis runs downward from step 0
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]


def test_lattice_labels_are_escaped(small):
    canvas, proposal = labels_for(small)
    canvas[0][0] = "<b>"
    fig = lattice.lattice_figure(small, canvas, proposal)
    assert fig.data[0].customdata[0][0][3] == "&lt;b&gt;"


def test_lattice_signal_choice(small):
    canvas, proposal = labels_for(small)
    ent = np.asarray(lattice.lattice_figure(small, canvas, proposal, signal="entropy").data[0].z)
    # entropy = -log(0.4) so exp(-entropy) = 0.4 again
    assert ent[0, 3] - MASKED == pytest.approx(0.02 + 0.96 * 0.4, abs=1e-5)
    gap = np.asarray(lattice.lattice_figure(small, canvas, proposal, signal="top2_gap").data[0].z)
    assert gap[0, 3] - MASKED == pytest.approx(0.02 + 0.96 * 0.2, abs=1e-5)
    with pytest.raises(ValueError):
        lattice.lattice_figure(small, canvas, proposal, signal="nope")
    with pytest.raises(ValueError):
        lattice.lattice_figure(small, canvas[:2], proposal)


def test_colorscale_bands_follow_states():
    scale = lattice.lattice_colorscale()
    assert scale[0] == [0.0, LATTICE_STATE_COLORS["masked"][0]]
    assert scale[-1] == [1.0, LATTICE_STATE_COLORS["remasked"][1]]
    pos = [p for p, _ in scale]
    assert pos == sorted(pos) and len(set(pos)) == len(pos)
    # band of state b starts at b / 4 with its light colour
    assert scale[2 * REVEALED] == [REVEALED / 4, LATTICE_STATE_COLORS["revealed-now"][0]]


def test_lattice_overlays(small):
    canvas, proposal = labels_for(small)
    fig = lattice.lattice_figure(small, canvas, proposal, current_step=2)
    by_name = {t.name: t for t in fig.data}
    # commit order: text on a small grid, running numbers in step order then left to right
    order = next(t for t in fig.data if t.name and t.name.startswith("commit order"))
    assert order.mode == "text" and order.hoverinfo == "skip"
    got = {(int(x), int(y)): int(t) for x, y, t in zip(order.x, order.y, order.text)}
    assert got == {(0, 0): 1, (2, 0): 2, (1, 1): 3, (3, 1): 4, (2, 2): 5, (4, 3): 6, (5, 3): 7, (6, 3): 8, (7, 3): 9}
    # block boundary at 4 (x = 3.5): rows 0-2 for block [0, 4), row 3 for [4, 8); canvas edges not drawn
    blocks = by_name["block boundary"]
    segs = []
    xs, ys = list(blocks.x), list(blocks.y)
    for i in range(0, len(xs), 3):
        segs.append((xs[i], ys[i], ys[i + 1]))
    assert segs == [(3.5, -0.5, 2.5), (3.5, 2.5, 3.5)]
    # the scrubber's row and the all-in row
    cur = [s for s in fig.layout.shapes if s.name == "current-step"]
    assert len(cur) == 1 and (cur[0].y0, cur[0].y1) == (1.5, 2.5) and (cur[0].x0, cur[0].x1) == (-0.5, 7.5)
    allin = [s for s in fig.layout.shapes if s.name == "all-in"]
    assert len(allin) == 1 and allin[0].y0 == 2.5
    assert [a.y for a in fig.layout.annotations if a.text == "all-in"] == [2]
    # legend explains each state present
    legend = [t.name for t in fig.data[1:] if t.marker.symbol == "square"]
    assert len(legend) == 4 and any("remasked" in n for n in legend)
    assert fig.layout.height == lattice.MIN_HEIGHT
    assert fig.layout.plot_bgcolor == "white"
    # overlays can be switched off; no current step, no highlight
    bare = lattice.lattice_figure(small, canvas, proposal, overlays=())
    assert "block boundary" not in {t.name for t in bare.data}
    assert not [s for s in bare.layout.shapes if s.name in ("current-step", "all-in")]


def test_big_lattice_switches_to_markers_and_clamps_height():
    steps = big_trace()
    canvas, proposal = labels_for(steps)
    fig = lattice.lattice_figure(steps, canvas, proposal, current_step=149)
    assert np.asarray(fig.data[0].z).shape == (150, 200)
    order = next(t for t in fig.data if t.name and t.name.startswith("commit order"))
    assert order.mode == "markers" and len(order.x) == 200
    assert fig.layout.height == lattice.MAX_HEIGHT
    blocks = next(t for t in fig.data if t.name == "block boundary")
    assert {x for x in blocks.x if x is not None} == {39.5, 79.5, 119.5, 159.5}


def test_empty_steps_give_a_message():
    fig = lattice.lattice_figure([], [], [])
    assert "No denoising steps" in fig.layout.annotations[0].text
    for f in (lattice.tokens_per_forward_figure, lattice.schedule_figure):
        assert len(f([]).layout.annotations) == 1
    assert lattice.progress_figure({"a": []}).layout.annotations


def test_tokens_per_forward(small):
    fig = lattice.tokens_per_forward_figure(small)
    bars = fig.data[0]
    assert list(bars.y) == [2.0, 2.0, 1.0, 2.0]  # step 3 revealed 4 cells in 2 forwards
    remask = next(t for t in fig.data if t.name.startswith("remasked"))
    assert list(remask.y) == [0.0, -1.0, 0.0, 0.0]
    line = next(t for t in fig.data if t.type == "scatter")
    # committed 2, 3, 4, 8 cells after 1, 2, 3, 5 forwards
    assert list(line.y) == pytest.approx([2.0, 1.5, 4 / 3, 8 / 5])
    ar = [s for s in fig.layout.shapes if s.y0 == 1.0 and s.y1 == 1.0]
    assert len(ar) == 1
    assert any(a.text == "autoregressive" for a in fig.layout.annotations)


def test_progress_curve_overlays_runs(small):
    big = big_trace()
    fig = lattice.progress_figure({"small": small, "big": big})
    a, b, ar = fig.data
    assert a.name == "small" and list(a.x) == [0, 2, 3, 4, 8] and list(a.y) == [0, 1, 2, 3, 4]
    assert b.x[-1] == 200 and b.y[-1] == 150
    assert list(ar.x) == [0, 200] and list(ar.y) == [0, 200] and ar.line.dash == "dash"
    assert list(a.customdata) == [0, 1, 2, 3, 5]  # forwards so far


def test_schedule_figure(small):
    fig = lattice.schedule_figure(small)
    assert "what the schedule compared" in fig.layout.title.text.lower()
    sig, thr, mean = fig.data
    assert sig.y[2] is None and thr.y[2] is None  # the all-in step had no threshold: a gap, not zero
    assert sig.y[0] == pytest.approx(0.9) and thr.y[3] == pytest.approx(0.7)
    assert mean.y[0] == pytest.approx(0.85) and mean.y[3] == pytest.approx(0.875)
    assert [s.x0 for s in fig.layout.shapes if s.name == "all-in"] == [2]
    # no schedule values at all: the revealed cells' mean and minimum confidence only
    plain = [make_step(0, np.full(4, -1, np.int64), np.arange(4), [0, 1], block=(0, 4), conf={0: 0.9, 1: 0.6})]
    fig = lattice.schedule_figure(plain)
    assert [t.name for t in fig.data] == ["mean confidence of revealed cells", "lowest confidence revealed"]
    assert fig.data[0].y[0] == pytest.approx(0.75) and fig.data[1].y[0] == pytest.approx(0.6)


def test_cell_topk_html(small):
    out = lattice.cell_topk_html(small[0], 0, ["<b>", "x&y", "z"])
    assert "&lt;b&gt;" in out and "x&amp;y" in out
    assert 'monospace">&lt;b&gt;</td>' in out and 'monospace"><b></td>' not in out
    assert "0.700" in out and "0.200" in out and "0.050" in out
    assert "step 0 · position 0" in out and "revealed-now" in out and "confidence 0.900" in out
    assert "width:70.0%" in out
    assert "proposal" in out
    # no candidates recorded
    no_k = small_trace(with_topk=False)
    out = lattice.cell_topk_html(no_k[0], 0, [])
    assert "not recorded" in out and "confidence 0.900" in out
    # a cell the model did not score this step
    out = lattice.cell_topk_html(small[0], 6, [], state_name="masked")
    assert "not scored" in out
    assert "off the canvas" in lattice.cell_topk_html(small[0], 99, [])


def test_diffusion_metrics_html(small):
    summary = summarize_diffusion(small)
    assert summary["tokens_per_forward"] == pytest.approx(8 / 5)
    out = lattice.diffusion_metrics_html(summary, "length", "reference (cpu)")
    assert "tokens per forward" in out and "<b>1.60</b>" in out
    assert "<b>5</b>" in out  # forwards
    assert "generated tokens to the first EOS" in out and "reference (cpu)" in out and "stopped at length" in out
    assert math.isfinite(summary["cells_per_forward"]) and "<b>1.80</b>" in out  # 9 cells in 5 forwards
