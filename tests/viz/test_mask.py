"""The ancestor mask view: a node sees the prefix, itself and its ancestors, never another branch."""
import re

import numpy as np

from specviz.trace import DraftTree, SpecStep
from specviz.viz.mask import ancestor_mask_html


def _step(parent, path):
    n = len(parent)
    tree = DraftTree(np.arange(n) + 10, np.asarray(parent), np.ones(n, np.float32), ("root",) + ("x",) * (n - 1))
    return SpecStep(0, 5, tree, np.ones(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.int8),
                    np.asarray(path, dtype=np.int64), 3, 0.5, "bonus", np.asarray([10, 3]), np.zeros((n, 0), np.int64),
                    np.zeros((n, 0), np.float32), 0.0, 1.0, 1, 0)


def _allowed(html):
    return {(int(q), int(k)) for q, k in re.findall(r"data-query='(\d+)' data-key='(\d+)'", html)}


def test_a_tree_mask_cuts_the_other_branches():
    # root -> 1 -> 3, root -> 2
    html = ancestor_mask_html(_step([-1, 0, 0, 1], [1, 3]), ["r", "<a>", "b", "c"])
    assert _allowed(html) == {(0, 0), (1, 0), (1, 1), (2, 0), (2, 2), (3, 0), (3, 1), (3, 3)}
    assert "&lt;a&gt;" in html and "<a>" not in html.replace("<a ", "")
    assert "pairs are cut" in html


def test_a_chain_mask_is_the_causal_triangle():
    html = ancestor_mask_html(_step([-1, 0, 1, 2], [1]), None)
    assert _allowed(html) == {(q, k) for q in range(4) for k in range(q + 1)}
    assert "causal triangle" in html


def test_no_step_shows_a_hint():
    assert "Run or step" in ancestor_mask_html(None)
