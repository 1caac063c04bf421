"""Figures build from synthetic traces, without a model; the tree layout stays legible at 60+ nodes."""
import numpy as np

from specviz.trace import ACCEPTED, CORRECTION, REJECTED, ROOT, UNREACHED, committed_tokens, summarize
from specviz.viz.confidence import running_strip_figure, step_confidence_figure
from specviz.viz.panels import depth_chart, generated_text_html, metrics_html
from specviz.viz.tree import _graph, tidy_layout, tree_figure

from .test_trace import make_step, synthetic_trace


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
    g = _graph(step)
    pos = tidy_layout(g)
    assert len(pos) == 65  # 64 nodes + the bonus
    assert len(set(pos.values())) == len(pos), "two nodes share a position"
    depth = step.tree.depth
    for i in range(1, step.tree.size):
        assert pos[i][0] == depth[i]
    labels = [f"tok{i}" for i in range(step.tree.size)]
    fig = tree_figure(step, labels, "bonus!")
    shown = sum(len(t.x) for t in fig.data if t.mode == "markers+text")
    assert shown == 65
    assert fig.layout.height >= 46 * 20  # grows with the number of leaves


def test_step_views_build_from_a_synthetic_trace():
    tr = synthetic_trace()
    tokens = committed_tokens(tr.steps)
    pieces = [f"t{i} " for i in range(len(tokens))]
    for s in tr.steps:
        labels = [str(t) for t in s.tree.token_ids]
        assert tree_figure(s, labels, "b").data
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
