"""The clickable tree, the node card and the rejection-sampling panel, from hand-built steps (no model)."""
import html
import re
from types import SimpleNamespace

import numpy as np

from specviz.trace import ACCEPTED, CORRECTION, REJECTED, ROOT, UNREACHED, DraftTree, SpecStep
from specviz.viz.live import SpecLiveView
from specviz.viz.node_card import (card_token_ids, node_card_html, rejection_html, verification_order,
                                   verification_kind)
from specviz.viz.tree import tree_html

from .test_figures import big_tree_step

NAN = np.nan


def sampled_step(greedy=False):
    """root -> a (rejected, u .7 >= .4), <script> (accepted, u .1 < .8), z (after the accepted sibling: untested);
    a -> d (never reached); <script> -> c (rejected, u .9 >= .2), whose residual the correction 77 came from."""
    tokens = [10, 11, 12, 13, 14, 15]
    parent = [-1, 0, 0, 2, 1, 0]
    status = [ROOT, REJECTED, ACCEPTED, REJECTED, UNREACHED, REJECTED]
    if greedy:
        accept = [1, 0, 1, 0, 0, 0]
        uniforms = np.zeros(0, np.float32)
    else:
        accept = [1, 0.4, 0.8, 0.2, NAN, NAN]
        uniforms = np.array([NAN, 0.7, 0.1, 0.9, NAN, NAN], np.float32)
    k = 0 if greedy else 3
    residual_ids = np.zeros((6, k), np.int64)
    residual_probs = np.zeros((6, k), np.float32)
    draft_ids = np.zeros((6, 0 if greedy else 2), np.int64)
    draft_probs = np.zeros((6, 0 if greedy else 2), np.float32)
    if not greedy:
        residual_ids[1], residual_probs[1] = [12, 30, 31], [0.6, 0.2, 0.1]
        residual_ids[3], residual_probs[3] = [77, 40, 41], [0.55, 0.25, 0.1]
        draft_ids[1:4] = [[11, 12], [12, 11], [13, 40]]
        draft_probs[1:4] = [[0.5, 0.3], [0.5, 0.3], [0.6, 0.2]]
    return SpecStep(
        step=3, root_pos=9,
        tree=DraftTree(np.array(tokens), np.array(parent), np.array([1, 0.5, 0.3, 0.6, 0.2, 0.1], np.float32),
                       ("root", "eagle", "eagle", "eagle", "eagle", "eagle")),
        target_probs=np.array([1, 0.2, 0.4, 0.12, 0.3, 0.05], np.float32),
        accept_probs=np.array(accept, np.float32), status=np.array(status, np.int8),
        accepted_path=np.array([2]), bonus_token=77, bonus_prob=0.5, bonus_kind=CORRECTION,
        committed_ids=np.array([12, 77]),
        target_topk_ids=np.array([[12, 11, 30]] * 6), target_topk_probs=np.array([[0.4, 0.2, 0.1]] * 6, np.float32),
        draft_ms=1.0, verify_ms=2.0, target_forwards=1, draft_forwards=1,
        uniforms=uniforms, draft_topk_ids=draft_ids, draft_topk_probs=draft_probs,
        residual_topk_ids=residual_ids, residual_topk_probs=residual_probs,
    )


LABELS = ["root", "a", "<script>", "c", "d", "z"]
TOKEN_LABELS = {30: "x30", 31: "x31", 40: "x40", 41: "x41", 77: "seventy-seven"}


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment (tags dropped), for asserting on what a reader sees."""
    spaced = re.sub(r"<[^>]+>", " ", fragment)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"\s+([,.)])", r"\1", spaced))).strip()


def test_the_svg_has_every_node_clickable_and_escaped():
    step = sampled_step()
    out = tree_html(step, LABELS, "seventy-seven")
    for i in range(step.tree.size):
        assert f'data-node="{i}"' in out
    assert 'data-node="bonus"' in out and out.count('data-step="3"') == step.tree.size + 1
    assert "<script>" not in out and "&lt;script&gt;" in out
    big = big_tree_step(n=64)
    labels = [f"tok{i}" for i in range(64)]
    svg = tree_html(big, labels, "b")
    # every one of the 64 nodes keeps its label (no wall of bare circles), and the box scrolls instead of shrinking
    assert all(f">tok{i}</text>" in svg for i in range(64)) and "max-height:" in svg


def test_colours_in_the_svg_keep_rings_and_statuses_apart():
    from specviz.viz.palette import STATUS_PALETTE, source_color

    out = tree_html(sampled_step(), LABELS, "b")
    rings = set(re.findall(r'<rect [^>]*stroke="([^"]+)"', out))
    assert source_color("eagle") in rings
    assert not (rings - {source_color("root"), STATUS_PALETTE["correction"]}) & set(STATUS_PALETTE.values())


def test_untested_nodes_say_not_tested_never_a_number():
    step = sampled_step()
    assert [int(i) for i in verification_order(step)] == [1, 2, 3]
    for node in (4, 5):  # never reached; after an accepted sibling
        card = text_of(node_card_html(step, node, LABELS, "b", TOKEN_LABELS))
        assert "acceptance probability not tested" in card
    assert "an earlier sibling was accepted first" in text_of(node_card_html(step, 5, LABELS, "b"))
    assert "its parent was not accepted" in text_of(node_card_html(step, 4, LABELS, "b"))
    # greedy writes 0/1 for every node; a never-reached one still shows no number
    greedy = sampled_step(greedy=True)
    assert "acceptance probability not tested" in text_of(node_card_html(greedy, 4, LABELS, "b"))
    assert "acceptance = not tested" in tree_html(greedy, LABELS, "b")


def test_card_of_a_rejected_sampled_node():
    step = sampled_step()
    card = text_of(node_card_html(step, 3, LABELS, "seventy-seven", TOKEN_LABELS))
    assert "drafted by eagle" in card and "draft probability q 0.600" in card and "target probability p 0.120" in card
    assert "acceptance probability 0.200" in card and "u = 0.900 ≥ 0.200 → rejected" in card
    assert "the target's top 5 after this node" in card.lower()
    # the residual left by this rejection, and what was drawn from it
    assert "After this rejection" in card and "the correction seventy-seven was sampled from it" in card
    assert "seventy-seven" in card and "x40" in card
    # the first child's rejection: the next sibling was tested against its residual
    first = text_of(node_card_html(step, 1, LABELS, "b", TOKEN_LABELS))
    assert "u = 0.700 ≥ 0.400 → rejected" in first and "the next sibling, <script>, was tested against it" in first
    accepted = text_of(node_card_html(step, 2, LABELS, "b", TOKEN_LABELS))
    assert "u = 0.100 < 0.800 → accepted" in accepted and "p′ in the residual it was tested against 0.600" in accepted
    bonus = text_of(node_card_html(step, "bonus", LABELS, "seventy-seven", TOKEN_LABELS))
    assert "correction" in bonus and "The residual it was sampled from" in bonus


def test_rejection_panel_under_sampling_follows_the_test_order():
    step = sampled_step()
    assert verification_kind(step) == "sampled"
    panel = rejection_html(step, LABELS, "seventy-seven", TOKEN_LABELS)
    rows = re.findall(r"<tr><td>(\d+)</td><td>\d+</td><td>(.*?)</td>", panel)
    assert [text_of(t) for _, t in rows] == ["a", "<script>", "c"]  # depth, then sibling order; z untested
    text = text_of(panel)
    for u in ("0.700", "0.100", "0.900"):
        assert u in text
    assert "residual after a" in text and "min(1, p′/q)" in text
    assert "the correction seventy-seven was sampled from the residual" in text and "x40" in text
    assert "<script>" not in panel


def test_rejection_panel_under_greedy_is_an_argmax_match():
    step = sampled_step(greedy=True)
    assert verification_kind(step) == "greedy"
    text = text_of(rejection_html(step, LABELS, "b"))
    assert "exact match with the target's argmax" in text and "no uniform is drawn" in text
    assert "u =" not in text and "correction" in text


def test_cards_name_the_top_k_tokens_the_ui_labels():
    step = sampled_step()
    assert {30, 31, 40, 41, 77} <= set(card_token_ids(step))
    # without labels a token shows as its id, never as nothing
    assert "#41" in node_card_html(step, 3, LABELS, "b", {})


def test_live_view_cards_survive_anything_a_client_sends():
    view = SpecLiveView()
    step = sampled_step()
    view.add(step, LABELS, "seventy-seven", ["<script>", "seventy-seven"], TOKEN_LABELS)
    assert "u = 0.900" in view.node_card(0, "3")
    assert "seventy-seven" in view.node_card(0, "bonus")
    for k, node in ((5, 1), (0, 99), (0, -1), ("x", 1), (None, None), (0, "1e400"), (0, [1])):
        assert "sv-card-empty" in view.node_card(k, node)
    out = view.full(0)
    assert 'data-node="3"' in out["tree"] and "how verification decided" in out["rejection"]


def test_the_click_handler_opens_the_card_of_the_clicked_node():
    from specviz.ui.intervene import open_node_card

    view = SpecLiveView()
    view.add(sampled_step(), LABELS, "seventy-seven", ["<script>", "seventy-seven"], TOKEN_LABELS)
    session = SimpleNamespace(n_steps=1, view=view)
    card = open_node_card(session, SimpleNamespace(_data={"node": "3", "step": 0}))
    assert "u = 0.900 ≥ 0.200 → rejected" in text_of(card)
    assert "sv-card-empty" in open_node_card(None, SimpleNamespace(_data={"node": "1", "step": 0}))
    assert "sv-card-empty" in open_node_card(session, SimpleNamespace(_data="junk"))
