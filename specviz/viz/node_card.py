"""What a learner sees on questioning one step: a tree node's card, and the rejection-sampling test of the step.

Both are derived from the `SpecStep` alone (a replayed trace shows them without the model). Token text comes
in from the UI: `labels[i]` for tree node i, `bonus_label` for the bonus token, and `token_labels`, a dict
id -> text for the other tokens the cards name (the top-k candidates; `card_token_ids` lists them). A token
missing from it shows as its id.
"""
from __future__ import annotations

import html

import numpy as np

from ..trace import ACCEPTED, CORRECTION, REJECTED, REPLACE, STATUS_NAMES, SpecStep
from .palette import DRAFT_COLOR, KIND_COLORS, STATUS_COLORS, TARGET_COLOR, status_text_color
from .tree import BONUS_NODE, accept_text, fmt_prob, has_bonus, tested

CARD_TOPK = 5  # candidates listed per distribution

LOSSLESS_RULE = (
    "Each tested draft token x was drawn by the drafter with probability q(x); the target gives it p(x). It is "
    "accepted with probability min(1, p(x)/q(x)): a uniform u is drawn and x is kept iff u &lt; that. On a "
    "rejection the target's distribution loses what the drafter over-proposed, norm(max(p − q, 0)) (the "
    "<i>residual</i>): the next sibling is tested against it, or, when none is left, the step's last token is "
    "sampled from it. Kept drafts plus that sample are distributed exactly as p, so the output has the target's "
    "distribution whatever the drafter proposed.")


def card_token_ids(step: SpecStep) -> list:
    """The token ids, beyond the tree's nodes and the bonus token, whose text the cards of this step show
    (and the tree's note on a user's edit: the token replaced or cut)."""
    ids = set()
    if step.intervention is not None:
        ids.update(t for t in (step.intervention.token, step.intervention.was) if t >= 0)
    for name in ("target_topk_ids", "draft_topk_ids", "residual_topk_ids"):
        table = getattr(step, name)
        if table.ndim == 2 and table.shape[1]:
            ids.update(int(t) for t in np.unique(table[:, :CARD_TOPK]) if t >= 0)
    return sorted(ids)


def verification_kind(step: SpecStep) -> str:
    """'greedy' (an exact match with the target's argmax), 'sampled' (rejection sampling) or 'none' (nothing
    tested), read from the step: a sampled test records a uniform, or an acceptance probability strictly
    between 0 and 1; a greedy one only ever 0 or 1 and no uniform."""
    t = tested(step)
    if not t.any():
        return "none"
    accept = step.accept_probs[t]
    uniforms = step.uniforms[t] if step.uniforms.shape[0] == step.tree.size else np.zeros(0)
    if np.isfinite(uniforms).any() or np.any((accept > 0) & (accept < 1)):
        return "sampled"
    return "greedy"


def empty_card_html(message: str = "Click a node of the draft tree to see its card.") -> str:
    return f'<div class="sv-card sv-card-empty">{html.escape(message)}</div>'


class _Names:
    """Display text of any token id of one step."""

    def __init__(self, step: SpecStep, labels: list, bonus_label: str, token_labels: dict | None):
        self.known = dict(token_labels or {})
        for t, label in zip(step.tree.token_ids, labels):
            self.known.setdefault(int(t), str(label))
        if step.bonus_token >= 0:
            self.known.setdefault(int(step.bonus_token), str(bonus_label))

    def __call__(self, token_id: int) -> str:
        token_id = int(token_id)
        text = self.known.get(token_id, f"#{token_id}")
        return f'<span class="sv-tokname">{html.escape(text)}</span>'


def _badge(name: str, text: str | None = None) -> str:
    color = {**STATUS_COLORS, **KIND_COLORS}.get(name, STATUS_COLORS["never-reached"])
    return (f'<span class="sv-badge" style="background:{color};color:{status_text_color(name)}">'
            f'{html.escape(text or name)}</span>')


def _bar(p: float, color: str) -> str:
    width = 0.0 if not np.isfinite(p) else max(0.0, min(1.0, float(p))) * 100
    return f'<span class="sv-pbar"><i style="width:{width:.0f}%;background:{color}"></i></span>'


def _topk_table(ids: np.ndarray, probs: np.ndarray, names: _Names, color: str, mark: int | None = None) -> str:
    """Rank, token, probability (with a bar) of the first CARD_TOPK candidates; `mark` the token to point out."""
    rows = []
    for rank, (t, p) in enumerate(zip(ids[:CARD_TOPK], probs[:CARD_TOPK]), 1):
        if t < 0 or not np.isfinite(p):
            continue
        here = " ◀ this node" if mark is not None and int(t) == mark else ""
        rows.append(f"<tr><td>{rank}</td><td>{names(t)}</td><td>{_bar(p, color)}{p:.3f}{here}</td></tr>")
    return f"<table>{''.join(rows)}</table>" if rows else ""


def _recorded(table: np.ndarray, probs: np.ndarray, row: int) -> bool:
    """Whether row `row` of a [N, K] top-k table holds a recorded distribution (K = 0, or zeros, when not)."""
    return table.ndim == 2 and table.shape[1] > 0 and 0 <= row < table.shape[0] and bool(np.any(probs[row] > 0))


def _children(step: SpecStep, node: int) -> list:
    return [int(i) for i in np.flatnonzero(step.tree.parent == node)]


def _previous_sibling(step: SpecStep, node: int) -> int:
    """The sibling tested just before `node` (its parent's child listed before it), -1 if it is the first."""
    before = [c for c in _children(step, int(step.tree.parent[node])) if c < node]
    return before[-1] if before else -1


def _next_tested_sibling(step: SpecStep, node: int) -> int:
    after = [c for c in _children(step, int(step.tree.parent[node])) if c > node and tested(step)[c]]
    return after[0] if after else -1


def _end_node(step: SpecStep) -> int:
    """The node the step's last token follows: the end of the accepted path (the root when none accepted)."""
    return int(step.accepted_path[-1]) if step.n_accepted else 0


def _correction_source(step: SpecStep) -> int:
    """The rejected node whose residual the correction was sampled from (the last child tested at the path's
    end), -1 when the step did not end with a correction."""
    if step.bonus_kind != CORRECTION:
        return -1
    rejected = [c for c in _children(step, _end_node(step)) if step.status[c] == REJECTED]
    return rejected[-1] if rejected else -1


def _why_untested(step: SpecStep, node: int) -> str:
    parent = int(step.tree.parent[node])
    if parent and step.status[parent] != ACCEPTED:
        return "its parent was not accepted, so it was never tested"
    if any(step.status[c] == ACCEPTED for c in _children(step, parent) if c < node):
        return "an earlier sibling was accepted first, so it was never tested"
    return "verification stopped before it"


def tested_p(step: SpecStep, node: int) -> str:
    """The probability p' the node's token had in the distribution it was tested against: the target's for a
    first child; for a later sibling the residual its rejected elder left (read from that residual's recorded
    top, or recovered from the test itself, acceptance = p'/q, when it was below 1)."""
    sibling = _previous_sibling(step, node)
    if sibling < 0 or not tested(step)[sibling]:
        return fmt_prob(step.target_probs[node])
    token = int(step.tree.token_ids[node])
    if _recorded(step.residual_topk_ids, step.residual_topk_probs, sibling):
        hit = np.flatnonzero(step.residual_topk_ids[sibling] == token)
        if hit.size:
            return fmt_prob(step.residual_topk_probs[sibling][hit[0]])
    accept, q = step.accept_probs[node], step.tree.draft_probs[node]
    if np.isfinite(accept) and accept < 1:
        return fmt_prob(accept * q)
    return f"≥ {fmt_prob(q)}"


def _test_line(step: SpecStep, node: int, kind: str) -> str:
    """How the node's test went, in words: the acceptance probability against the uniform, or the match."""
    if not tested(step)[node]:
        return f"not tested: {_why_untested(step, node)}"
    verdict = "accepted" if step.status[node] == ACCEPTED else "rejected"
    if kind == "greedy":
        return (f"exact match with the target's argmax: {'it is' if verdict == 'accepted' else 'it is not'} the "
                f"target's most likely token here → {verdict}")
    accept = step.accept_probs[node]
    u = step.uniforms[node] if step.uniforms.shape[0] == step.tree.size else np.nan
    if not np.isfinite(u):
        return f"acceptance probability {fmt_prob(accept)} → {verdict} (the uniform was not recorded)"
    sign = "&lt;" if u < accept else "≥"
    return f"u = {u:.3f} {sign} {accept:.3f} → {verdict}"


def node_card_html(step: SpecStep, node, labels: list, bonus_label: str, token_labels: dict | None = None) -> str:
    """The card of tree node `node` (an index, or "bonus") of `step`: its probabilities, how its test went, the
    target's top candidates around it and, for a node rejected under sampling, the residual sampled after it."""
    names = _Names(step, labels, bonus_label, token_labels)
    if node == BONUS_NODE:
        return _bonus_card(step, names)
    kind = verification_kind(step)
    node = int(node)
    token = int(step.tree.token_ids[node])
    status = STATUS_NAMES[int(step.status[node])]
    head = (f"<div class='sv-card-head'><b>{names(token)}</b> <span class='sv-note'>id {token}</span> "
            f"{_badge(status, 'not reached' if status == 'never-reached' else status)}</div>")
    rows = [("where", f"step {step.step} · node {node} · depth {int(step.tree.depth[node])}")]
    if node == 0:
        rows.append(("role", "the root: the last token already committed; the drafts continue from it"))
    else:
        sibling = _previous_sibling(step, node)
        against = ("the target's distribution after its parent" if sibling < 0 or kind == "greedy" else
                   "the residual left after its earlier sibling(s) were rejected")
        edit = step.intervention
        if edit is not None and edit.kind == REPLACE and edit.node == node:
            rows.append(("your edit", f"you put this token in place of the drafted {names(edit.was)}; the target "
                                      "verified the tree again with it"))
        rows += [
            ("drafted by", html.escape(step.tree.source[node])),
            ("draft probability q", fmt_prob(step.tree.draft_probs[node])),
            ("target probability p", fmt_prob(step.target_probs[node])),
            *([("p′ in the residual it was tested against", tested_p(step, node))]
              if tested(step)[node] and kind == "sampled" and _previous_sibling(step, node) >= 0 else []),
            ("acceptance probability", accept_text(step, node) + (
                f" <span class='sv-note'>(min(1, p′/q), tested against {against})</span>"
                if tested(step)[node] and kind == "sampled" else "")),
            ("test", _test_line(step, node, kind)),
        ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    parts = [head, f"<table>{table}</table>"]
    parent = int(step.tree.parent[node])
    if node > 0 and _recorded(step.target_topk_ids, step.target_topk_probs, parent):
        parts.append("<h4>What the target wanted here: its top 5 after the parent</h4>"
                     + _topk_table(step.target_topk_ids[parent], step.target_topk_probs[parent], names, TARGET_COLOR,
                                   mark=token))
    if node > 0 and _recorded(step.draft_topk_ids, step.draft_topk_probs, node):
        parts.append("<h4>What the drafter proposed here: its top candidates (q)</h4>"
                     + _topk_table(step.draft_topk_ids[node], step.draft_topk_probs[node], names, DRAFT_COLOR,
                                   mark=token))
    if _recorded(step.target_topk_ids, step.target_topk_probs, node):
        parts.append("<h4>The target's top 5 after this node</h4>"
                     + _topk_table(step.target_topk_ids[node], step.target_topk_probs[node], names, TARGET_COLOR))
    if step.status[node] == REJECTED and kind == "sampled":
        parts.append(_residual_section(step, node, names))
    return f'<div class="sv-card">{"".join(parts)}</div>'


def _residual_section(step: SpecStep, node: int, names: _Names) -> str:
    if not _recorded(step.residual_topk_ids, step.residual_topk_probs, node):
        return "<p class='sv-note'>The residual after this rejection was not recorded in this trace.</p>"
    nxt = _next_tested_sibling(step, node)
    if nxt >= 0:
        then = f"the next sibling, {names(step.tree.token_ids[nxt])}, was tested against it"
    elif _correction_source(step) == node:
        then = f"no sibling was left, so the correction {names(step.bonus_token)} was sampled from it"
    else:
        then = "no sibling after it was tested"
    return ("<h4>After this rejection: the residual norm(max(p − q, 0))</h4>"
            f"<p class='sv-note'>{then}.</p>"
            + _topk_table(step.residual_topk_ids[node], step.residual_topk_probs[node], names, KIND_COLORS["correction"],
                          mark=int(step.bonus_token) if _correction_source(step) == node else None))


def _bonus_card(step: SpecStep, names: _Names) -> str:
    if not has_bonus(step):
        return empty_card_html("This step added no token of the target's own (its accepted path ended the text).")
    end = _end_node(step)
    head = (f"<div class='sv-card-head'><b>{names(step.bonus_token)}</b> <span class='sv-note'>id {step.bonus_token}</span> "
            f"{_badge(step.bonus_kind)}</div>")
    if step.bonus_kind == CORRECTION:
        how = ("every draft tested after node "
               f"{end} was rejected, so the target added this token: sampled from the residual left by the last "
               "rejection under sampling, its argmax under greedy decoding")
    else:
        how = (f"every draft on the path was accepted (or none was drafted), so the target added this token "
               f"after node {end}, from its own distribution there")
    rows = [("where", f"step {step.step} · after node {end}"), ("how", how),
            ("target probability", fmt_prob(step.bonus_prob))]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    parts = [head, f"<table>{table}</table>"]
    source = _correction_source(step)
    if source >= 0 and _recorded(step.residual_topk_ids, step.residual_topk_probs, source):
        parts.append("<h4>The residual it was sampled from</h4>"
                     + _topk_table(step.residual_topk_ids[source], step.residual_topk_probs[source], names,
                                   KIND_COLORS["correction"], mark=int(step.bonus_token)))
    elif _recorded(step.target_topk_ids, step.target_topk_probs, end):
        parts.append(f"<h4>The target's top 5 after node {end}</h4>"
                     + _topk_table(step.target_topk_ids[end], step.target_topk_probs[end], names, TARGET_COLOR,
                                   mark=int(step.bonus_token)))
    return f'<div class="sv-card">{"".join(parts)}</div>'


def _candidates(step: SpecStep, node: int, names: _Names, n: int = 3) -> str:
    """p′ and q over the top candidates of node i's test: the top of what it was tested against (the target after
    its parent, or the residual its rejected elder sibling left), and the drafter's top."""
    sibling = _previous_sibling(step, node)
    if sibling >= 0 and tested(step)[sibling]:
        p_source = ("residual", step.residual_topk_ids, step.residual_topk_probs, sibling)
    else:
        p_source = ("target", step.target_topk_ids, step.target_topk_probs, int(step.tree.parent[node]))
    out = []
    for what, ids, probs, row in (p_source, ("drafter", step.draft_topk_ids, step.draft_topk_probs, node)):
        if _recorded(ids, probs, row):
            items = ", ".join(f"{names(t)} {p:.2f}" for t, p in zip(ids[row][:n], probs[row][:n]) if t >= 0)
            out.append(f"{what}: {items}")
    return "<br>".join(out)


def verification_order(step: SpecStep) -> list:
    """The tested nodes in the order verification tested them: by depth, then sibling order."""
    depth = step.tree.depth
    return sorted((int(i) for i in np.flatnonzero(tested(step))), key=lambda i: (int(depth[i]), i))


def rejection_html(step: SpecStep, labels: list, bonus_label: str, token_labels: dict | None = None) -> str:
    """The verification of `step`, node by node in test order: under sampling q, p, min(1, p/q), the uniform and
    the verdict, and the residual the correction was drawn from; under greedy the argmax match."""
    names = _Names(step, labels, bonus_label, token_labels)
    kind = verification_kind(step)
    title = f"<div><b>Step {step.step}: how verification decided</b></div>"
    if kind == "none":
        return (f'<div class="sv-card">{title}<p>Nothing was tested this step'
                f"{' (nothing was drafted)' if step.n_drafted == 0 else ''}: the target added its own token "
                f"{names(step.bonus_token) if step.bonus_token >= 0 else ''}.</p></div>")
    order = verification_order(step)
    if kind == "greedy":
        intro = ("<p>Greedy decoding: the test is an <b>exact match with the target's argmax</b>. A draft is kept "
                 "iff it is the target's most likely token after its parent; no uniform is drawn, and the output "
                 "is exactly plain greedy decoding's.</p>")
        header = "<tr><th>#</th><th>depth</th><th>draft</th><th>target's argmax here</th><th>verdict</th></tr>"
        rows = []
        for n, i in enumerate(order, 1):
            parent = int(step.tree.parent[i])
            argmax = (names(step.target_topk_ids[parent][0])
                      if _recorded(step.target_topk_ids, step.target_topk_probs, parent) else "–")
            rows.append(f"<tr><td>{n}</td><td>{int(step.tree.depth[i])}</td><td>{names(step.tree.token_ids[i])}</td>"
                        f"<td>{argmax}</td><td>{_verdict(step, i)}</td></tr>")
    else:
        intro = (f"<p>{LOSSLESS_RULE}</p><p class='sv-note'>p′ is the token's probability in what it was tested "
                 "against: the target's distribution for the first child of a node, the residual after the "
                 "rejected sibling before it otherwise.</p>")
        header = ("<tr><th>#</th><th>depth</th><th>draft</th><th>tested against</th><th>q</th><th>p′</th>"
                  "<th>min(1, p′/q)</th><th>u</th><th>verdict</th><th>top candidates (p′, q)</th></tr>")
        rows = []
        has_u = step.uniforms.shape[0] == step.tree.size
        for n, i in enumerate(order, 1):
            sibling = _previous_sibling(step, i)
            against = "target" if sibling < 0 else f"residual after {names(step.tree.token_ids[sibling])}"
            u = step.uniforms[i] if has_u else np.nan
            rows.append(
                f"<tr><td>{n}</td><td>{int(step.tree.depth[i])}</td><td>{names(step.tree.token_ids[i])}</td>"
                f"<td>{against}</td><td>{fmt_prob(step.tree.draft_probs[i])}</td><td>{tested_p(step, i)}</td>"
                f"<td>{accept_text(step, i)}</td><td>{fmt_prob(u) if np.isfinite(u) else 'not recorded'}</td>"
                f"<td>{_verdict(step, i)}</td><td>{_candidates(step, i, names)}</td></tr>")
    parts = [title, intro, f"<table>{header}{''.join(rows)}</table>", _ending(step, names, kind)]
    return f'<div class="sv-card sv-rejection">{"".join(parts)}</div>'


def _verdict(step: SpecStep, node: int) -> str:
    return _badge("accepted") if step.status[node] == ACCEPTED else _badge("rejected")


def _ending(step: SpecStep, names: _Names, kind: str) -> str:
    """How the step's last token came about, with the residual it was sampled from when there was one."""
    end = _end_node(step)
    if not has_bonus(step):
        return "<p>The accepted path ended the text (end of sequence): nothing was added after it.</p>"
    token = names(step.bonus_token)
    if step.bonus_kind != CORRECTION:
        return (f"<p>Every tested draft on the path was accepted: the target added the <b>bonus</b> {token} "
                f"(p = {fmt_prob(step.bonus_prob)}) from its own distribution after node {end}.</p>")
    if kind == "greedy":
        return (f"<p>No child of node {end} matched: the target added its argmax {token} as the "
                f"<b>correction</b>.</p>")
    source = _correction_source(step)
    text = (f"<p>Every child of node {end} was rejected: the <b>correction</b> {token} was sampled from the "
            f"residual left after the last rejection")
    if source >= 0 and _recorded(step.residual_topk_ids, step.residual_topk_probs, source):
        return (text + f" (of {names(step.tree.token_ids[source])}). Its top candidates:</p>"
                + _topk_table(step.residual_topk_ids[source], step.residual_topk_probs[source], names,
                              KIND_COLORS["correction"], mark=int(step.bonus_token)))
    return text + " (its candidates were not recorded in this trace).</p>"
