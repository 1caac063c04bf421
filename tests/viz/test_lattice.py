"""The diffusion lattice views, on hand-built traces (no model, no torch)."""
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np
import pytest

from specviz.trace import (
    KEPT, MASKED, PINNED_BY_USER, REMASKED, REVEALED, SENT_BACK_BY_USER, DiffusionStep, check_diffusion_invariants,
    commit_steps, summarize_diffusion,
)
from specviz.viz import lattice
from specviz.viz.palette import LATTICE_STATE_COLORS, LATTICE_USER_COLOR

NAN = float("nan")
SVG = "{http://www.w3.org/2000/svg}"


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


def svg_of(markup: str) -> ET.Element:
    """The lattice's <svg>, parsed: the markup must be well-formed (labels escaped)."""
    root = ET.fromstring(markup)
    return root.find(f"{SVG}svg")


def cells_of(svg: ET.Element) -> dict:
    """(step, position) -> the cell's <rect>."""
    out = {}
    for row in svg.iter(f"{SVG}g"):
        if "data-step" in row.attrib:
            for rect in row.findall(f"{SVG}rect"):
                out[int(row.get("data-step")), int(rect.get("data-pos"))] = rect
    return out


def test_lattice_cells_states_shades_and_hover(small):
    canvas, proposal = labels_for(small)
    z, data = lattice.lattice_cells(small, canvas, proposal)
    assert z.shape == (4, 8)
    # the band (integer part) is the state
    assert int(z[0, 0]) == REVEALED and int(z[0, 5]) == MASKED
    assert int(z[1, 0]) == KEPT and int(z[1, 2]) == REMASKED and int(z[2, 2]) == REVEALED
    # kept cell 0 at step 3 keeps the confidence it was committed with (0.9), not anything later
    assert z[3, 0] - KEPT == pytest.approx(0.02 + 0.96 * 0.9, abs=1e-6)
    # a masked, scored cell shows its proposal's confidence (cell 3 at step 0: 0.4); unscored is lightest
    assert z[0, 3] - MASKED == pytest.approx(0.02 + 0.96 * 0.4, abs=1e-6)
    assert z[0, 5] == pytest.approx(0.02)
    # hover data of revealed cell 2 at step 0
    assert list(data[0][2][:2]) == [0, 2]
    assert data[0][2][2] == "revealed-now" and data[0][2][3] == "t12" and data[0][2][4] == "p12"
    assert data[0][2][5] == "0.800"
    assert "commit #2" in data[0][2][8] and "threshold 0.70" in data[0][2][8]
    assert data[1][2][2] == "remasked" and data[1][2][3] == "[mask]" and "step 0" in data[1][2][8]
    assert data[0][6][4] == "–" and data[0][6][5] == "–"  # unscored
    assert data[2][0][2] == "kept" and "committed at step 0" in data[2][0][8]
    # drawn: one clickable rect per cell, inside its row, coloured by its band, with its hover text
    svg = svg_of(lattice.lattice_svg(small, canvas, proposal))
    cells = cells_of(svg)
    assert set(cells) == {(k, j) for k in range(4) for j in range(8)}
    fills = lattice.cell_fills(z)
    assert all(cells[k, j].get("fill") == fills[k, j] for k, j in cells)
    assert cells[0, 0].get("fill") not in (cells[0, 3].get("fill"), cells[1, 0].get("fill"))  # three states, three bands
    assert cells[0, 5].get("fill") == LATTICE_STATE_COLORS["masked"][0]  # not scored: the lightest
    tip = cells[0, 2].find(f"{SVG}title").text
    assert "step 0 · position 2 · revealed-now" in tip and "canvas: t12" in tip and "commit #2" in tip
    # rows run downward from step 0
    ys = [float(g.get("transform").split()[1].rstrip(")")) for g in svg.iter(f"{SVG}g") if "data-step" in g.attrib]
    assert ys == sorted(ys)


def test_cell_fills_stay_in_their_state_band():
    z = np.array([[MASKED + 0.02, MASKED + 0.98, KEPT + 0.02, KEPT + 0.98, REMASKED + 0.5]])
    fills = lattice.cell_fills(z)[0]
    assert fills[0] == LATTICE_STATE_COLORS["masked"][0] and fills[1] == LATTICE_STATE_COLORS["masked"][1]
    assert fills[2] == LATTICE_STATE_COLORS["kept"][0] and fills[3] == LATTICE_STATE_COLORS["kept"][1]
    assert fills[4] not in LATTICE_STATE_COLORS["remasked"]


def test_lattice_labels_are_escaped(small):
    canvas, proposal = labels_for(small)
    canvas[0][0] = "<b>"
    markup = lattice.lattice_svg(small, canvas, proposal, title="<i>title</i>")
    assert "<b>" not in markup and "<i>" not in markup
    tip = cells_of(svg_of(markup))[0, 0].find(f"{SVG}title").text
    assert "canvas: <b> ·" in tip  # escaped once in the markup, so a reader sees it as typed


def test_lattice_signal_choice(small):
    canvas, proposal = labels_for(small)
    ent, _ = lattice.lattice_cells(small, canvas, proposal, signal="entropy")
    # entropy = -log(0.4) so exp(-entropy) = 0.4 again
    assert ent[0, 3] - MASKED == pytest.approx(0.02 + 0.96 * 0.4, abs=1e-5)
    gap, _ = lattice.lattice_cells(small, canvas, proposal, signal="top2_gap")
    assert gap[0, 3] - MASKED == pytest.approx(0.02 + 0.96 * 0.2, abs=1e-5)
    assert "top-2 gap" in lattice.lattice_svg(small, canvas, proposal, signal="top2_gap")
    with pytest.raises(ValueError):
        lattice.lattice_svg(small, canvas, proposal, signal="nope")
    with pytest.raises(ValueError):
        lattice.lattice_svg(small, canvas[:2], proposal)


def _edges(svg) -> list:
    return [p.get("d") for p in svg.iter(f"{SVG}path") if p.get("class") == "sv-block-edge"]


def test_lattice_overlays(small):
    canvas, proposal = labels_for(small)
    markup = lattice.lattice_svg(small, canvas, proposal, current_step=2)
    svg = svg_of(markup)
    marks = [t for t in svg.iter(f"{SVG}text") if t.get("fill") == "white"]
    # commit order: text on a small grid, running numbers in step order then left to right
    cell, row = lattice._grid_geometry(4, 8)
    got = {(round((float(t.get("x")) - lattice.LEFT_PX) / cell - 0.5), round((float(t.get("y")) - lattice.TOP_PX) / row - 0.5)): int(t.text)
           for t in marks}
    assert got == {(0, 0): 1, (2, 0): 2, (1, 1): 3, (3, 1): 4, (2, 2): 5, (4, 3): 6, (5, 3): 7, (6, 3): 8, (7, 3): 9}
    # the block edges: [0, 4) for rows 0-2, then [4, 8): the right edge runs down x = 4 and stops at the canvas
    # border; the left edge starts at x = 4 on row 3. One line per edge, never one tick per row.
    x4 = f"{lattice.LEFT_PX + 4 * cell:.1f}"
    assert _edges(svg) == [f"M{x4} {lattice.TOP_PX + 3 * row:.1f}V{lattice.TOP_PX + 4 * row:.1f}",
                           f"M{x4} {lattice.TOP_PX:.1f}V{lattice.TOP_PX + row:.1f}V{lattice.TOP_PX + 2 * row:.1f}"
                           f"V{lattice.TOP_PX + 3 * row:.1f}"]
    # the scrubber's row and the all-in row
    cur = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "sv-current"]
    assert len(cur) == 1 and cur[0].get("data-step") == "2"
    allin = [ln for ln in svg.iter(f"{SVG}line") if ln.get("class") == "sv-all-in"]
    assert [ln.get("data-step") for ln in allin] == ["2"]
    assert [t.text for t in svg.iter(f"{SVG}text") if t.text == "all-in"] == ["all-in"]
    # the legend explains each state present and the marks
    assert all(w in markup for w in ("masked (shade", "revealed this step", "kept (shade", "remasked (taken back)",
                                      "the active block", "all-in: the schedule"))
    # overlays can be switched off; no current step, no outline
    bare = svg_of(lattice.lattice_svg(small, canvas, proposal, overlays=()))
    assert not _edges(bare) and not [t for t in bare.iter(f"{SVG}text") if t.get("fill") == "white"]
    assert not [r for r in bare.iter(f"{SVG}rect") if r.get("class") == "sv-current"]
    assert not list(bare.iter(f"{SVG}line"))


def jacobi_like_trace():
    """L = 10, a window of 4 sliding on as guesses converge: each step is its own block [c0, c0 + 4)."""
    final = np.arange(50, 60, dtype=np.int64)
    prev = np.full(10, -1, dtype=np.int64)
    steps = []
    for k, (c0, n) in enumerate([(0, 1), (1, 2), (3, 1), (4, 3), (7, 3)]):
        s = make_step(k, prev, final, range(c0, c0 + n), block=(c0, min(c0 + 4, 10)))
        steps.append(replace(s, block=k))
        prev = s.canvas
    return steps


def test_jacobi_window_edges_are_two_lines_not_a_tick_per_window():
    steps = jacobi_like_trace()
    canvas, proposal = labels_for(steps)
    markup = lattice.lattice_svg(steps, canvas, proposal)
    edges = _edges(svg_of(markup))
    assert len(edges) == 2  # the left and right edge of the window, each one connected line
    for d in edges:
        assert d.count("M") == 1
    assert "guessed window" in markup


def test_big_lattice_switches_to_dots_and_thinner_rows():
    steps = big_trace()
    canvas, proposal = labels_for(steps)
    markup = lattice.lattice_svg(steps, canvas, proposal, current_step=149)
    svg = svg_of(markup)
    assert len(cells_of(svg)) == 150 * 200
    assert len(list(svg.iter(f"{SVG}circle"))) == 200  # one dot per commit, no numbers
    cell, row = lattice._grid_geometry(150, 200)
    assert row * 150 <= lattice.GRID_HEIGHT and cell * 200 <= lattice.GRID_WIDTH + 1e-9
    assert "<title>" not in markup  # hover texts would weigh megabytes: the click card has it all
    edges = _edges(svg)
    xs = {round((float(v) - lattice.LEFT_PX) / cell) for d in edges for v in re.findall(r"[MH]([\d.]+)", d)}
    assert xs == {40, 80, 120, 160}


def test_lattice_cells_carry_what_a_click_handler_needs(small):
    """The tab's click handler reads data-pos from the cell and data-step from its row: every cell has both, and
    the overlays drawn over the cells let the pointer through."""
    canvas, proposal = labels_for(small)
    svg = svg_of(lattice.lattice_svg(small, canvas, proposal, current_step=1))
    for (k, j), rect in cells_of(svg).items():
        assert rect.get("data-pos") == str(j)
    overlay = [g for g in svg.iter(f"{SVG}g") if g.get("pointer-events") == "none"]
    assert len(overlay) == 1 and overlay[0].find(f"{SVG}rect[@class='sv-current']") is not None


def test_empty_steps_give_a_message():
    assert "No denoising steps" in lattice.lattice_svg([], [], [])
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
    # straight segments: a run at one token per step lies on the diagonal (a staircase dipped below it, into the
    # region the subtitle calls faster than autoregressive)
    assert a.line.shape in (None, "linear") and "below the dashed diagonal" in fig.layout.title.text
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


def touched_trace():
    """L = 8, one block: before step 0 the user pinned cell 5 (token 99); before step 1 sent cell 0 back to the mask,
    which step 1 leaves masked and step 2 fills again."""
    final = np.arange(10, 18, dtype=np.int64)
    final[5] = 99
    pinned = np.zeros(8, bool)
    pinned[5] = True

    def user(k, prev, reveal, acted, kind, **kw):
        s = make_step(k, prev, final, reveal, **kw)
        code = np.zeros(8, np.int8)
        code[acted] = kind
        return replace(s, pinned=pinned, intervention=code)

    start = np.full(8, -1, dtype=np.int64)
    start[5] = 99  # the canvas as the user left it before step 0
    s0 = user(0, start, [0, 2], [5], PINNED_BY_USER, conf={0: 0.9, 2: 0.8})
    after = s0.canvas.copy()
    after[0] = -1
    s1 = user(1, after, [1, 3], [0], SENT_BACK_BY_USER, conf={0: 0.3, 1: 0.8, 3: 0.7})
    s2 = user(2, s1.canvas, [0, 4, 6, 7], [], 0)
    return [s0, s1, s2]


def test_the_lattice_marks_what_the_user_did():
    steps = touched_trace()
    check_diffusion_invariants(steps)
    canvas, proposal = labels_for(steps)
    markup = lattice.lattice_svg(steps, canvas, proposal)
    svg = svg_of(markup)
    marks = {(m.get("class"), int(m.get("data-step")), int(m.get("data-pos"))) for m in svg.iter()
             if (m.get("class") or "").startswith(("sv-pinned", "sv-user"))}
    # a flag on every row the pin holds cell 5, an outline where the pin and the send-back took effect
    assert marks == {("sv-pinned", 0, 5), ("sv-pinned", 1, 5), ("sv-pinned", 2, 5), ("sv-user-pin", 0, 5),
                     ("sv-user-sent-back", 1, 0)}
    assert all(m.get("fill") == LATTICE_USER_COLOR or m.get("stroke") == LATTICE_USER_COLOR for m in svg.iter()
               if (m.get("class") or "").startswith(("sv-pinned", "sv-user")))
    assert "pinned by you" in markup and "sent back to the mask by you" in markup  # the legend
    # the pinned cell is kept, and no model's confidence shades it
    z, data = lattice.lattice_cells(steps, canvas, proposal)
    assert int(z[0, 5]) == KEPT and z[0, 5] == z[2, 5] == pytest.approx(KEPT + 0.02)
    assert "pinned by you (in place from step 0)" in data[0][5][8] and "pinned by you" in data[2][5][8]
    assert data[1][0][2] == "masked" and "sent back to the mask by you" in data[1][0][8]
    assert "sent back" not in data[2][0][8] and data[2][0][2] == "revealed-now"
    # a run nobody touched draws none of it
    plain = lattice.lattice_svg(small_trace(), *labels_for(small_trace()))
    assert "sv-pinned" not in plain and "sv-user" not in plain and "by you" not in plain


def test_the_cell_card_and_the_text_say_what_the_user_did():
    steps = touched_trace()
    assert lattice.user_note(steps, 2, 5) == "pinned by you: in place from step 0"
    assert lattice.user_note(steps, 1, 0) == "sent back to the mask by you at step 1 (before its forward)"
    assert lattice.user_note(steps, 2, 0).endswith("the model has filled it again since")
    assert lattice.user_note(steps, 0, 0) == lattice.user_note(steps, 2, 3) == ""
    card = lattice.cell_topk_html(steps[1], 0, [], note=lattice.user_note(steps, 1, 0))
    assert "sv-user-note" in card and "sent back to the mask by you at step 1" in card
    text = lattice.canvas_text_html(steps[2], commit_steps(steps, 2), labels_for(steps)[0][2])
    pinned_span = next(span for span in text.split("<span")[1:] if "position 5" in span)
    assert "pinned by you at step 0" in pinned_span and LATTICE_USER_COLOR in pinned_span
    assert commit_steps(steps, 1)[[0, 5]].tolist() == [-1, 0] and commit_steps(steps)[0] == 2
    summary = summarize_diffusion(steps)
    assert summary["pinned"] == 1 and summary["sent_back"] == 1 and summary["cells_revealed"] == 8
    metrics = lattice.diffusion_metrics_html(summary, "length", "reference (cpu)")
    assert "your pins" in metrics and "sent back by you" in metrics
    assert "your pins" not in lattice.diffusion_metrics_html(summarize_diffusion(small_trace()), "", "")
