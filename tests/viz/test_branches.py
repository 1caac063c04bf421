"""The marks of a user's edit: the tree's note and dashed node, the node card's line, the text's underline, and
the branches table side by side. Token text is data: escaped everywhere."""
import html
from dataclasses import replace

import numpy as np

from specviz.trace import CUT, REPLACE, USER_SOURCE, DraftTree, Intervention
from specviz.viz.branches import branches_html
from specviz.viz.live import SpecLiveView
from specviz.viz.node_card import card_token_ids, node_card_html
from specviz.viz.palette import EDIT_DASH
from specviz.viz.tree import tree_html

from .test_node_card import LABELS, TOKEN_LABELS, sampled_step


def _replaced(step, node=2, was=99):
    """`step` as a fork records it after a user put node `node`'s token in place of `was`."""
    t = step.tree
    source = tuple(USER_SOURCE if i == node else s for i, s in enumerate(t.source))
    tree = DraftTree(t.token_ids, t.parent, t.draft_probs, source)
    return replace(step, tree=tree, intervention=Intervention(REPLACE, node, int(t.token_ids[node]), was, 0, 3))


def test_a_replaced_node_is_marked_in_the_tree_the_card_and_the_text():
    step = _replaced(sampled_step(greedy=True))
    names = {**TOKEN_LABELS, 99: "<b>was</b>"}
    assert 99 in card_token_ids(step)  # the replaced token's text is looked up with the cards'
    svg = tree_html(step, LABELS, "seventy-seven", token_labels=names)
    assert "You replaced the draft" in svg and "&lt;b&gt;was&lt;/b&gt;" in svg and "<b>was</b>" not in svg
    assert "accepted 3 here; this branch accepted 1" in svg
    assert svg.count(f'stroke-dasharray="{EDIT_DASH}"') == 1 and svg.count("sv-edited") == 1
    assert "dashed ring: your edit" in svg
    card = node_card_html(step, 2, LABELS, "seventy-seven", names)
    assert "your edit" in card and "&lt;b&gt;was&lt;/b&gt;" in card
    assert "your edit" not in node_card_html(step, 1, LABELS, "seventy-seven", names)
    view = SpecLiveView()
    plain = sampled_step(greedy=True)
    view.add(replace(plain, step=0), LABELS, "seventy-seven", ["a", "b"])
    view.add(replace(step, step=1), LABELS, "seventy-seven", ["c", "d"])
    text = view.text_html(0)
    assert text.count('class="sv-tok sv-') == 4 and text.count("sv-edited") == 2  # the edited step's two tokens
    assert "committed at the step you edited" in text


def test_a_cut_is_named_with_what_went_and_where_it_hung():
    step = replace(sampled_step(greedy=True), intervention=Intervention(CUT, 2, 99, -1, 3, 2))
    svg = tree_html(step, LABELS, "seventy-seven", token_labels={99: "gone"})
    assert "You cut the draft 'gone' and the 2 drafted below it from under '<script>'" in html.unescape(svg)
    assert "<script>" not in svg
    assert "sv-edited" not in svg  # nothing in the tree is the user's token


def test_the_branches_table_puts_the_branches_side_by_side():
    rows = [
        {"name": "original", "edit": "", "accepted": "—", "steps": 19, "tokens": 48, "finished": True, "same": None},
        {"name": "branch 1: replace at step 18", "edit": "',' → '<i>' at node 1", "accepted": "2 → 0", "steps": 20,
         "tokens": 48, "finished": True, "same": True},
        {"name": "branch 2: cut at step 3", "edit": "cut 'x'", "accepted": "1 → 0", "steps": 4, "tokens": 9,
         "finished": False, "same": False},
    ]
    out = branches_html(rows, 1, greedy=True)
    assert out.count("<tr") == 4 and "◂ on show" in out and "&lt;i&gt;" in out and "<i>" not in out
    assert f"{48 / 19:.2f}" in out and f"{48 / 20:.2f}" in out  # τ of each branch
    assert "same as the original" in out and "differs from the original" in out and "(running)" in out
    assert "every branch must give the original's text" in out
    assert "fresh draw" in branches_html(rows, 0, greedy=False)
    assert branches_html(rows[:1], 0, greedy=True) == ""  # one run, no branches: nothing to show
