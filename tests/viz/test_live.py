"""The live views: running summaries equal the trace's, and a streamed render equals the full render of the
same step; every figure builds from synthetic traces, without a model."""
import importlib.util
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from specviz.trace import (BONUS, REVEALED, check_diffusion_invariants, check_invariants, commit_steps,
                           committed_tokens, summarize, summarize_diffusion)
from specviz.viz.confidence import running_strip_figure
from specviz.viz.lattice import canvas_text_html, lattice_svg
from specviz.viz.live import LatticeLiveView, SpecLiveView
from specviz.viz.panels import generated_text_html

from .test_lattice import SVG, cells_of, labels_for, small_trace, svg_of, touched_trace
from ..test_trace import synthetic_trace


def _bench():
    path = Path(__file__).resolve().parents[2] / "scripts" / "bench_render.py"
    spec = importlib.util.spec_from_file_location("bench_render", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


@pytest.fixture(scope="module")
def spec_run():
    trace = bench.synthetic_spec_run(n_tokens=150, n_steps=100, seed=3)
    check_invariants(trace)
    return trace.steps, bench.spec_labels(trace.steps)


@pytest.fixture(scope="module")
def lattice_run():
    steps = bench.synthetic_lattice_run(length=96, block=32, seed=5)
    check_diffusion_invariants(steps)
    return steps, bench.lattice_labels(steps)


def feed_spec(steps, labels, upto=None):
    nodes, bonus, pieces = labels
    view = SpecLiveView(backend="reference (cpu)")
    for i, s in enumerate(steps[: upto]):
        view.add(s, nodes[i], bonus[i], pieces[i])
    return view


def same_figure(a: go.Figure, b: go.Figure) -> bool:
    return a.to_json() == b.to_json()


# --- speculative -----------------------------------------------------------------------------------
def test_running_summary_equals_summarize(spec_run):
    steps, (nodes, bonus, pieces) = spec_run
    view = SpecLiveView()
    for i, s in enumerate(steps):
        view.add(s, nodes[i], bonus[i], pieces[i])
        if i % 7 == 0 or i == len(steps) - 1:
            assert view.summary() == summarize(steps[: i + 1])
    assert view.summary(wall_s=2.5) == summarize(steps, 2.5)
    # the hand-built trace: a chain, a branching tree and a step with nothing drafted
    small = synthetic_trace().steps
    view = SpecLiveView()
    for s in small:
        view.add(s, [str(t) for t in s.tree.token_ids], "b", [f"w{int(t)}" for t in s.committed_ids])
    assert view.summary(1.0) == summarize(small, 1.0)


def test_live_equals_full_for_the_latest_step(spec_run):
    steps, labels = spec_run
    nodes, bonus, pieces = labels
    view = SpecLiveView(backend="reference (cpu)")
    for i, s in enumerate(steps):
        view.add(s, nodes[i], bonus[i], pieces[i])
        if i not in (0, 5, len(steps) - 1):
            continue
        live, full = view.live(tree_depth=4), view.full(i, tree_depth=4)
        assert live["k"] == full["k"] == i and live["n_steps"] == full["n_steps"] == i + 1
        for key in ("text", "metrics", "tree", "rejection"):
            assert live[key] == full[key], key
        for key in ("confidence", "depth"):
            assert same_figure(live[key], full[key]), key


def test_full_matches_the_whole_run_renderers_for_any_step(spec_run):
    steps, labels = spec_run
    view = feed_spec(steps, labels)
    tokens = committed_tokens(steps)
    flat = [p for ps in labels[2] for p in ps]
    for k in (0, 17, len(steps) - 1):
        full = view.full(k)
        assert full["text"] == generated_text_html(flat, tokens, current_step=k)
        assert same_figure(full["strip"], running_strip_figure(tokens, flat, current_step=k))
        assert full["text"].count("outline:") == int(steps[k].committed_ids.shape[0])


def test_streamed_strip_is_a_trailing_window(spec_run):
    steps, labels = spec_run
    view = feed_spec(steps, labels)
    strip = view.live()["strip"]
    xs = sorted(x for t in strip.data for x in t.x)
    n = len(view.tokens)
    assert xs == list(range(n - 64, n)) and "Last 64" in strip.layout.title.text
    few = feed_spec(steps, labels, upto=3).live()["strip"]
    assert sorted(x for t in few.data for x in t.x) == list(range(len(committed_tokens(steps[:3]))))


def test_a_step_ending_at_eos_has_no_bonus(spec_run):
    rng = np.random.default_rng(0)
    end = bench.spec_step(rng, 0, 4, 12, 3, bonus_kind="none")
    assert end.bonus_token == -1 and end.committed_ids.shape[0] == 3
    view = SpecLiveView()
    view.add(end, [f"n{i}" for i in range(end.tree.size)], "", ["a", "b", "c"])
    out = view.live()
    assert 'data-node="bonus"' not in out["tree"] and 'data-node="0"' in out["tree"]
    assert out["text"].count('class="sv-tok sv-accepted') == 3 and "sv-none" not in out["text"]
    assert view.summary() == summarize([end])
    # a run whose last step ends at EOS: the full view too
    steps, labels = spec_run
    nodes, bonus, pieces = labels
    view = feed_spec(steps[:5], labels)
    last = bench.spec_step(rng, 5, 0, 20, 2, bonus_kind="none")
    view.add(last, [f"n{i}" for i in range(last.tree.size)], "", ["x", "y"])
    assert view.full()["text"].count("outline:") == 2


def test_spec_figures_build_without_a_model(spec_run):
    steps, labels = spec_run
    empty = SpecLiveView()
    assert empty.live()["n_steps"] == 0 and "Press Run" in empty.full()["tree"]
    out = feed_spec(steps, labels).full(3)
    for key in ("confidence", "strip", "depth"):
        assert isinstance(out[key], go.Figure) and out[key].data
    assert 'data-step="3"' in out["tree"] and "Step 3" in out["rejection"]
    assert "τ" in out["metrics"]
    with pytest.raises(ValueError):
        SpecLiveView().add(steps[0], labels[0][0], labels[1][0], labels[2][0] + ["extra"])
    assert steps[0].bonus_kind in (BONUS, "correction")


# --- diffusion / Jacobi -------------------------------------------------------------------------------
def feed_lattice(steps, labels, upto=None, window=24):
    canvas, proposal = labels
    view = LatticeLiveView(label="test", window=window)
    for i, s in enumerate(steps[:upto]):
        view.add(s, canvas[i], proposal[i])
    return view


def test_running_diffusion_summary_equals_summarize(lattice_run):
    steps, (canvas, proposal) = lattice_run
    view = LatticeLiveView()
    for i, s in enumerate(steps):
        view.add(s, canvas[i], proposal[i])
        if i % 9 == 0:
            assert view.summary() == summarize_diffusion(steps[: i + 1])
    assert view.summary(3.0) == summarize_diffusion(steps, 3.0)
    small = small_trace()
    c, p = labels_for(small)
    assert feed_lattice(small, (c, p)).summary() == summarize_diffusion(small)


def test_streamed_text_follows_every_step(lattice_run):
    steps, labels = lattice_run
    canvas, proposal = labels
    view = LatticeLiveView()
    for i, s in enumerate(steps):
        view.add(s, canvas[i], proposal[i])
        text = view.live()["text"]
        assert text == canvas_text_html(s, commit_steps(steps, i), canvas[i]), f"step {i}"
    assert view.full(10)["text"] == canvas_text_html(steps[10], commit_steps(steps, 10), canvas[10])
    small = small_trace()  # with a remask
    c, p = labels_for(small)
    v = LatticeLiveView()
    for i, s in enumerate(small):
        v.add(s, c[i], p[i])
        assert v.live()["text"] == v.full(i)["text"] == canvas_text_html(s, commit_steps(small, i), c[i])


def test_streamed_text_and_summary_follow_the_users_pins_and_send_backs():
    steps = touched_trace()
    canvas, proposal = labels_for(steps)
    view = LatticeLiveView()
    for i, s in enumerate(steps):
        view.add(s, canvas[i], proposal[i])
        assert view.live()["text"] == view.full(i)["text"] == canvas_text_html(s, commit_steps(steps, i), canvas[i])
        assert view.summary() == summarize_diffusion(steps[: i + 1])
    # step 1: cell 0 was sent back (masked), cell 5 still pinned
    after_send_back = view.full(1)["text"]
    assert after_send_back.split('class="sv-tok"')[1].count("masked") == 1 and "pinned by you" in after_send_back
    assert "sv-pinned" in view.live()["lattice"] and "sv-user-sent-back" in view.full()["lattice"]


def _rows(markup: str, lo: int = 0) -> dict:
    """step -> the fills and hover texts of its cells, for the rows from step `lo` on."""
    out = {}
    for (k, j), rect in sorted(cells_of(svg_of(markup)).items()):
        if k >= lo:
            tip = rect.find(f"{SVG}title")
            out.setdefault(k, []).append((rect.get("fill"), tip.text if tip is not None else None))
    return out


def _marks(markup: str) -> tuple:
    """The commit numbers drawn and the steps marked all-in."""
    svg = svg_of(markup)
    numbers = sorted(int(t.text) for t in svg.iter(f"{SVG}text") if t.get("fill") == "white")
    all_in = sorted(int(ln.get("data-step")) for ln in svg.iter(f"{SVG}line") if ln.get("class") == "sv-all-in")
    return numbers, all_in


@pytest.mark.parametrize("signal", ["confidence", "entropy"])
def test_streamed_lattice_is_the_last_rows_of_the_whole_one(lattice_run, signal):
    steps, labels = lattice_run
    canvas, proposal = labels
    view = LatticeLiveView(label="test", window=24)
    for i, s in enumerate(steps):
        view.add(s, canvas[i], proposal[i])
        if i < 30:
            view.live()  # rows are built as they stream (and switching the colour signal rebuilds the window)
    n = len(steps)
    live, full = view.live(signal=signal), view.full(signal=signal)
    assert live["text"] == full["text"] and live["metrics"] == full["metrics"] and live["k"] == full["k"] == n - 1
    streamed, whole = _rows(live["lattice"]), _rows(full["lattice"], n - 24)
    assert sorted(streamed) == list(range(n - 24, n))
    assert [[c[0] for c in streamed[k]] for k in streamed] == [[c[0] for c in whole[k]] for k in whole]
    assert "the last 24 steps" in live["lattice"]
    # overlays keep the run's numbering: commit numbers and all-in rows as in the whole lattice
    live_numbers, live_all_in = _marks(live["lattice"])
    full_numbers, full_all_in = _marks(full["lattice"])
    assert live_numbers == [x for x in full_numbers if x > full_numbers[-1] - len(live_numbers)]
    assert live_all_in == [k for k in full_all_in if k >= n - 24]
    cur = [r for r in svg_of(live["lattice"]).iter(f"{SVG}rect") if r.get("class") == "sv-current"]
    assert len(cur) == 1 and cur[0].get("data-step") == str(n - 1)
    # a short run shows every row, with the same cells as the whole lattice
    short = feed_lattice(steps, labels, upto=5)
    assert _rows(short.live(signal=signal)["lattice"]) == _rows(short.full(signal=signal)["lattice"])


def test_window_rows_are_built_once(lattice_run, monkeypatch):
    steps, labels = lattice_run
    view = feed_lattice(steps, labels, upto=40)
    view.live()
    import specviz.viz.live as live_mod
    calls = []
    real = live_mod.lattice_row
    monkeypatch.setattr(live_mod, "lattice_row", lambda *a, **k: calls.append(1) or real(*a, **k))
    view.add(steps[40], labels[0][40], labels[1][40])
    view.live()
    assert len(calls) == 1  # only the new row
    assert len(view._rows) == view.window


def test_lattice_figures_build_without_a_model(lattice_run):
    steps, labels = lattice_run
    empty = LatticeLiveView()
    assert empty.live()["n_steps"] == 0 and "appears here" in empty.full()["text"]
    out = feed_lattice(steps, labels).full(12)
    for key in ("schedule", "tpf", "progress"):
        assert isinstance(out[key], go.Figure) and out[key].data
    assert out["k"] == 12 and "tokens per forward" in out["metrics"]
    # the full lattice equals the plain lattice of the run
    plain = lattice_svg(steps, labels[0], labels[1], current_step=12, title="test · step 12 of %d" % (len(steps) - 1))
    assert out["lattice"] == plain
    assert int(np.sum(steps[0].cell_state == REVEALED)) >= 1
