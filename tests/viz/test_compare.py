"""The Compare tab's views from plain series: the race charts, the AR check, the table's speedups."""
import pytest

from specviz.viz.compare import (DIFFUSION_DIFFERS, ar_diff_html, equals_reference, first_divergence, lane_result,
                                 lanes_html, race_figure, table_html)


def _lane(label, tokens, forwards, wall, at=-1, kind="speculative"):
    return {"label": label, "kind": kind, "tokens": tokens, "forwards": forwards, "wall_s": wall, "at": at}


def test_first_divergence_and_equality():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 4], [1, 2, 3]) == 2
    assert first_divergence([1, 2], [1, 2, 3]) is None  # a prefix does not diverge
    assert equals_reference([1, 2, 3], [1, 2, 3], False)
    assert not equals_reference([1, 2], [1, 2, 3], False)  # stopped early without reaching its limit
    assert equals_reference([1, 2], [1, 2, 3], True)  # its own token limit: AR's prefix
    assert not equals_reference([1, 5, 3], [1, 2, 3], True)


def test_speedup_is_throughput_over_ar_timed_in_the_same_run():
    ar = {"tokens": 10, "wall_s": 2.0}
    row = lane_result("2 · auto", 10, 4, 0.5, ar, True)
    assert row["speedup_vs_ar"] == pytest.approx(4.0)  # same length: AR's time over the lane's
    assert row["tokens_per_forward"] == pytest.approx(2.5) and row["tok_s"] == pytest.approx(20.0)
    shorter = lane_result("3 · diffusion", 5, 5, 0.5, ar, False)
    assert shorter["speedup_vs_ar"] == pytest.approx((5 / 0.5) / (10 / 2.0))
    assert lane_result("x", 3, 3, 1.0, None, None)["speedup_vs_ar"] is None


def test_race_figures_draw_every_lane_and_mark_the_step_on_show():
    lanes = [_lane("1 · AR", [1, 2, 3], [1, 2, 3], [0.1, 0.2, 0.3], at=1),
             _lane("2 · auto", [3, 6], [1, 2], [0.2, 0.4], at=1)]
    fig = race_figure(lanes, "forwards")
    names = [t.name for t in fig.data]
    assert "1 · AR" in names and "2 · auto" in names and "1 token per forward (AR)" in names
    line = next(t for t in fig.data if t.name == "2 · auto")
    assert list(line.x) == [0, 1, 2] and list(line.y) == [0, 3, 6]
    marks = [t for t in fig.data if t.showlegend is False]
    assert len(marks) == 2 and list(marks[1].y) == [6]
    timed = race_figure(lanes, "wall_s")
    assert list(next(t for t in timed.data if t.name == "1 · AR").x) == [0, 0.1, 0.2, 0.3]
    assert "wall-clock" in timed.layout.title.text
    assert race_figure([_lane("a", [], [], [])], "forwards").layout.annotations  # the empty message


def test_table_and_diff_views():
    ar = {"tokens": 4, "wall_s": 1.0}
    rows = [{**lane_result("1 · AR", 4, 4, 1.0, ar, True), "kind": "speculative", "steps": 4},
            {**lane_result("2 · <b>x</b>", 4, 2, 0.5, ar, None), "kind": "lattice", "steps": 2, "greedy": False}]
    html = table_html(rows, "AR timed here")
    assert "1.00×" in html and "2.00×" in html and "— (sampled)" in html and "&lt;b&gt;" in html
    diff = ar_diff_html([
        {"label": "2 · auto", "kind": "speculative", "method": "auto", "pieces": ["a", "b"], "diverge_at": None,
         "equals_ar": True, "ar_pieces": ["a", "b"], "finished": True},
        {"label": "3 · diffusion", "kind": "lattice", "method": "diffusion", "pieces": ["a", "<z>"],
         "diverge_at": 1, "equals_ar": False, "ar_pieces": ["a", "b"], "finished": True}], "the AR lane")
    assert "equals AR (all 2 tokens)" in diff and "differs from AR at position 1" in diff
    assert 'class="sv-diverge"' in diff and "&lt;z&gt;" in diff and DIFFUSION_DIFFERS in diff
    running = ar_diff_html([{"label": "2 · auto", "kind": "speculative", "pieces": ["a"], "diverge_at": None,
                             "equals_ar": None, "sampled": False, "ar_pieces": ["a"], "finished": False}], "AR")
    assert "equals AR so far (1 tokens)" in running and "sampled" not in running
    assert "sampled run" in ar_diff_html([{"label": "x", "kind": "speculative", "pieces": ["a"], "diverge_at": None,
                                           "equals_ar": None, "sampled": True, "ar_pieces": ["b"]}], "AR")
    assert "not known yet" in ar_diff_html([{"label": "x"}], None)
    cards = lanes_html([{"label": "1 · AR", "summary": "step 0", "view": "<svg></svg>", "text": "<hi>"}])
    assert 'data-lane="0"' in cards and "&lt;hi&gt;" in cards and "<svg></svg>" in cards
