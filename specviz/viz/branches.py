"""The branches of a run a user forked by editing a step's draft: one row per branch, side by side.

Rows are plain dicts (the UI computes them from each branch's records), so this module draws only."""
from __future__ import annotations

import html

from .palette import CUT_MARK, EDIT_MARK, MUTED_COLOR, SHOWN_ROW_COLOR


def branches_html(rows: list, current: int, greedy: bool) -> str:
    """`rows[i]`: name, edit (words, "" for the original), step (the edited step, -1 for the original), accepted
    (drafts accepted at that step), steps, tokens, finished (bool), same (bool or None: the output equals the
    original's on the tokens both have). `current` is the branch on show."""
    if len(rows) < 2:
        return ""
    head = ("<tr><th>branch</th><th>what changed</th><th>accepted at the edited step</th><th>steps</th>"
            "<th>tokens</th><th>τ</th><th>text</th></tr>")
    body = []
    for i, r in enumerate(rows):
        tau = r["tokens"] / r["steps"] if r["steps"] else float("nan")
        if r["same"] is None:
            same = "—"
        elif r["same"]:
            same = "same as the original" + ("" if r["finished"] else " so far")
        else:
            same = ("differs after the edit (sampled: each branch draws its own tokens, each from the target's law)"
                    if not greedy else "<b>differs from the original</b>")
        style = f' style="font-weight:600;background:{SHOWN_ROW_COLOR}"' if i == current else ""
        state = "" if r["finished"] else f' <span style="color:{MUTED_COLOR}">(running)</span>'
        body.append(f"<tr{style}><td>{html.escape(r['name'])}{' ◂ on show' if i == current else ''}</td>"
                    f"<td>{html.escape(r['edit']) or '—'}</td><td>{r['accepted']}</td><td>{r['steps']}{state}</td>"
                    f"<td>{r['tokens']}</td><td>{tau:.2f}</td><td>{same}</td></tr>")
    note = (f"{EDIT_MARK} replace and {CUT_MARK} cut change what the target is shown, never what it decides: "
            + ("under greedy decoding every branch must give the original's text, token for token."
               if greedy else "under sampling each branch's text is a fresh draw from the target's distribution."))
    return (f'<div class="sv-branches"><table class="sv-metrics sv-branch-table">{head}{"".join(body)}</table>'
            f'<p style="color:{MUTED_COLOR};font-size:12px">{note}</p></div>')
