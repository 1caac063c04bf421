"""Figures build from synthetic traces, without a model; the tree layout stays legible at 60+ nodes."""
import re

import numpy as np

from specviz.trace import ACCEPTED, CORRECTION, REJECTED, ROOT, UNREACHED, committed_tokens, summarize
from specviz.viz.confidence import running_strip_figure, step_confidence_figure
from specviz.viz.panels import depth_chart, generated_text_html, metrics_html
from specviz.viz.tree import _graph, tidy_layout, tree_html, visible_nodes
from specviz.viz.whatif import whatif_figure, whatif_table_html

from ..test_trace import make_step, synthetic_trace


def big_tree_step(n=64, seed=0):
    rng = np.random.default_rng(seed)
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    # accept the chain 0 -> first child -> its first child ...
    path, node = [], 0
    while True:
        kids = [i for i in range(1, n) if parent[i] == node]
        if not kids or len(path) == 3:
            break
        node = kids[0]
        path.append(node)
    status = [ROOT] + [UNREACHED] * (n - 1)
    for i in range(1, n):
        if parent[i] in [0, *path]:
            status[i] = REJECTED
    for i in path:
        status[i] = ACCEPTED
    return make_step(0, 10, list(range(100, 100 + n)), parent, status, path, 7, CORRECTION)


def test_tree_layout_gives_every_node_its_own_place_at_64_nodes():
    step = big_tree_step()
    g = _graph(step, list(range(step.tree.size)))
    pos = tidy_layout(g)
    assert len(pos) == 65  # 64 nodes + the bonus
    assert len(set(pos.values())) == len(pos), "two nodes share a position"
    depth = step.tree.depth
    for i in range(1, step.tree.size):
        assert pos[i][0] == depth[i]
    labels = [f"tok{i}" for i in range(step.tree.size)]
    out = tree_html(step, labels, "bonus!")
    assert out.count('class="sv-node') == 65 and out.count("<title>") == 65
    n_rows = 1 + max(r for _, r in pos.values())
    svg_height = int(re.search(r'<svg [^>]*height="(\d+)"', out).group(1))
    assert svg_height >= 30 * n_rows  # a fixed row per leaf: the SVG grows and its box scrolls


def test_step_views_build_from_a_synthetic_trace():
    tr = synthetic_trace()
    tokens = committed_tokens(tr.steps)
    pieces = [f"t{i} " for i in range(len(tokens))]
    for s in tr.steps:
        labels = [str(t) for t in s.tree.token_ids]
        assert 'data-node="0"' in tree_html(s, labels, "b")
        fig = step_confidence_figure(s, labels)
        if s.n_drafted:
            assert fig.layout.title.text.startswith(f"Step {s.step}")
        else:
            assert "nothing drafted" in fig.layout.annotations[0].text
    assert len(running_strip_figure(tokens, pieces).data) == 3  # accepted, bonus, correction
    html = generated_text_html(pieces, tokens, current_step=1)
    assert html.count('class="sv-tok') == len(tokens) and 'data-step="2"' in html
    summary = summarize(tr.steps, 1.0)
    assert "2.33" in metrics_html(summary, None, "torch-reference", True, "length")
    assert len(depth_chart(summary).data[0].x) == 3


def test_128_node_tree_collapses_by_depth_and_keeps_the_accepted_path():
    step = big_tree_step(n=128, seed=1)
    labels = [f"tok{i}" for i in range(step.tree.size)]
    depth = step.tree.depth
    shown, hidden = visible_nodes(step, 2)
    assert set(map(int, step.accepted_path)) <= set(shown)
    assert all(depth[i] <= 2 or i in step.accepted_path for i in shown)
    assert int(hidden.sum()) == step.tree.size - len(shown) > 0
    out = tree_html(step, labels, "b", max_depth=2)
    markers = re.findall(r'class="sv-more"[^>]*>\+(\d+)<', out)
    assert markers and sum(map(int, markers)) == int(hidden.sum())
    assert out.count('class="sv-node') == len(shown) + 1
    assert "collapsed below depth 2" in out
    # the full 128-node view: every node placed and labelled, in a box of bounded height that scrolls
    full = tree_html(step, labels, "b")
    assert all(f">tok{i}</text>" in full for i in range(step.tree.size))
    assert "max-height:560px" in full


def test_what_if_panel_builds_from_rows():
    rows = [dict(name="chain-4", family="model chain", nodes=4.0, steps=40, tokens=64, tau=1.6, detail="d"),
            dict(name="wide-40", family="model static tree", nodes=40.0, steps=30, tokens=64, tau=2.13, detail="d"),
            dict(name="retrieval", family="model-free", nodes=8.0, steps=50, tokens=64, tau=1.28, detail="d")]
    fig = whatif_figure(rows, 1.5, "this run")
    assert len(fig.data) == 3
    table = whatif_table_html(rows, 1.5, "this run")
    assert table.index("wide-40") < table.index("chain-4") < table.index("retrieval")  # best first
    assert "Best replayed: <b>wide-40</b>" in table


def test_a_step_that_ended_at_eos_draws_no_bonus():
    """bonus_token -1 / bonus_kind "none": the accepted path ended at end-of-sequence, nothing was added."""
    s = make_step(0, 4, [10, 11, 12, 13], [-1, 0, 1, 1], [ROOT, ACCEPTED, ACCEPTED, REJECTED], [1, 2], -1, "none",
                  committed=[11, 12])
    labels = ["r", "a", "b", "c"]
    assert 'data-node="bonus"' not in tree_html(s, labels, "")
    assert len(tidy_layout(_graph(s, [0, 1, 2, 3]))) == 4  # no bonus node
    tokens = committed_tokens([s])
    assert [t.kind for t in tokens] == ["accepted", "accepted"]
    html = generated_text_html(["x", "y"], tokens, current_step=0)
    assert html.count('class="sv-tok sv-accepted') == 2
    assert step_confidence_figure(s, labels).data


def test_the_tree_view_survives_any_depth_a_client_sends():
    """A NaN, infinite or junk 'show depth' must not loop in the layout: it shows the whole tree."""
    from specviz.viz.tree import view_depth

    step = synthetic_trace().steps[-1]
    labels = [f"t{i}" for i in range(step.tree.size)]
    for bad in (float("nan"), float("inf"), -float("inf"), "x", None, -3, 1e300):
        assert 'data-node="0"' in tree_html(step, labels, "b", max_depth=bad)
    assert view_depth(float("nan")) is None and view_depth(-3) == 1 and view_depth("4") == 4


def test_token_text_is_never_markup_in_the_views():
    step = max(synthetic_trace().steps, key=lambda s: s.tree.size)
    assert step.tree.size > 1
    labels = ["<b>x</b>" if i else "<img src=x onerror=alert(1)>" for i in range(step.tree.size)]
    tree = tree_html(step, labels, "<script>", max_depth=None)
    conf = step_confidence_figure(step, labels).to_json()
    for out in (tree, conf):
        assert "<img" not in out and "<script>" not in out and "<b>x" not in out and "&lt;b&gt;x" in out


def test_the_per_position_chart_shows_no_acceptance_for_untested_nodes():
    """A never-reached node's NaN is a gap, not a 0 (nan_to_num) nor a 1.0 (greedy's match written for every node)."""
    from .test_node_card import LABELS, sampled_step

    # nodes 1..5: a, <script>, c tested; d never reached; z after the accepted sibling (sampling tests it no
    # more; greedy's argmax match rules it out, a 0 it really had)
    for greedy, expected in ((False, [None, None]), (True, [None, 0.0])):
        step = sampled_step(greedy=greedy)
        fig = step_confidence_figure(step, LABELS)
        accept = next(t for t in fig.data if t.name.startswith("acceptance"))
        assert list(accept.y[3:]) == expected and all(v is not None for v in accept.y[:3])
        assert "not tested" in fig.data[0].customdata[3]


def test_the_per_position_chart_stays_readable_at_64_nodes():
    step = big_tree_step(n=64)
    fig = step_confidence_figure(step, [f"tok{i}" for i in range(64)])
    assert len(fig.data[0].x) == 63  # one bar per node (draft q is a tick on it, not a second bar)
    assert len(fig.layout.xaxis.tickvals) <= 32 and fig.layout.margin.t >= 60
