"""The Speculative tab's Intervene panel: edit a drafted token of a recorded step, or cut a node, and let the
target verify that step again in a fork of the run (`SpeculativeDecoder.fork`).

The fork is a new session beside the original (its branches share one list, `Session.extra["branches"]`); the
state switches to it, paused on the edited step, so Run and Step carry the branch on while the original waits.
The picker shows the session's branches side by side (`viz.branches`)."""
from __future__ import annotations

import gradio as gr
import numpy as np

from ..config import ConfigError
from ..decoding.intervene import DraftEdit
from ..trace import CUT, REPLACE
from ..textio import single_token
from ..viz.branches import branches_html
from ..viz.node_card import empty_card_html
from .controller import Session, request_key, user_errors
from .inputs import recorded_index, whole_number

EDITS = [("✎ Replace the drafted token", REPLACE), ("✂ Cut the node: force its rejection", CUT)]
# branches one run may hold, the original included: each keeps its own decoder and KV cache in the session, so an
# anonymous client editing in a loop must not grow a session's memory without bound
MAX_BRANCHES = 8
PICK_FIRST = ("Click a drafted node of the tree (not the root ● or the ★ bonus) to edit it here; the target then "
              "verifies that step again, in a branch of the run.")


def open_node_card(session, evt: gr.EventData):
    """The card of the tree node clicked. The page's listener (`viz.tree.TREE_CLICK_JS`) sends the node's index
    (or "bonus") and the step it belongs to; both are checked by the view, since any client can send anything."""
    data = evt._data if isinstance(getattr(evt, "_data", None), dict) else {}
    if session is None or session.n_steps == 0:
        return empty_card_html("Nothing recorded yet: press Run or Step, then click a node of the tree.")
    return session.view.node_card(data.get("step"), data.get("node"))


def _names(view, k: int) -> dict:
    """id -> display text for the tokens of recorded step k: its nodes, then the other ids its cards name."""
    step = view.steps[k]
    names = dict(view.token_labels[k])
    names.update({int(t): view.node_labels[k][i] for i, t in enumerate(step.tree.token_ids)})
    return names


def edit_candidates(view, k: int, node: int) -> list:
    """(label, token id as text) of what could stand at node `node` of step k instead of its token: the
    drafter's other candidates there (the node's siblings, and its top when the run recorded it), then the
    target's own top after the parent. The current token is left out."""
    step = view.steps[k]
    names = _names(view, k)
    parent = int(step.tree.parent[node])
    seen, out = {int(step.tree.token_ids[node])}, []

    def add(token, how: str) -> None:
        token = int(token)
        if token >= 0 and token not in seen:
            seen.add(token)
            out.append((f"{names.get(token, f'#{token}')!r} · {how}", str(token)))

    for j in np.flatnonzero(step.tree.parent == parent):
        add(step.tree.token_ids[j], f"drafted beside it (q {float(step.tree.draft_probs[j]):.2f})")
    if step.draft_topk_ids.ndim == 2 and step.draft_topk_ids.shape[1]:
        for t, q in zip(step.draft_topk_ids[node], step.draft_topk_probs[node]):
            add(t, f"drafter's top (q {float(q):.2f})")
    if step.target_topk_ids.ndim == 2 and step.target_topk_ids.shape[1]:
        for t, p in zip(step.target_topk_ids[parent], step.target_topk_probs[parent]):
            add(t, f"target's top (p {float(p):.2f})")
    return out


def branch_name(i: int, session: Session) -> str:
    if i == 0:
        return "original"
    k, edit = _edited(session)
    what = "cut" if edit.kind == CUT else "replace"
    return f"branch {i}: {what} at step {k}"


def _edited(session: Session) -> tuple:
    """(the step a branch's user edited, its Intervention): the latest edit in its records, since a branch of a
    branch keeps the edits made before it."""
    for k in range(session.n_steps - 1, -1, -1):
        edit = session.decoder.records[k].intervention
        if edit is not None:
            return k, edit
    raise ValueError("not a branch")


def _edit_words(session: Session) -> str:
    k, edit = _edited(session)
    names = session.view.token_labels[k]

    def name(t):
        return repr(str(names.get(int(t), f"#{int(t)}")))

    if edit.kind == CUT:
        return f"cut {name(edit.token)}" + (f" (+{edit.removed - 1} below)" if edit.removed > 1 else "")
    return f"{name(edit.was)} → {name(edit.token)} at node {edit.node}"


def branch_rows(family: list) -> list:
    original = family[0].decoder.output_ids
    rows = []
    for i, s in enumerate(family):
        records = s.decoder.records
        out = s.decoder.output_ids
        n = min(len(out), len(original))
        row = {"name": branch_name(i, s), "edit": "", "accepted": "—", "steps": len(records), "tokens": len(out),
               "finished": s.decoder.done, "same": None}
        if i:
            k, edit = _edited(s)
            row.update(edit=_edit_words(s), accepted=f"{edit.accepted_before} → {records[k].n_accepted}",
                       same=bool(np.array_equal(out[:n], original[:n])))
        rows.append(row)
    return rows


def branches_view(session: Session | None) -> tuple:
    """(the branch picker's update, the side-by-side table) for the session on show."""
    family = session.extra.get("branches", []) if session is not None else []
    if len(family) < 2:
        return gr.update(choices=[], value=None, visible=False), ""
    current = next(i for i, s in enumerate(family) if s is session)
    names = [branch_name(i, s) for i, s in enumerate(family)]
    return (gr.update(choices=names, value=names[current], visible=True),
            branches_html(branch_rows(family), current, session.settings.greedy))


class InterventionPanel:
    """Builds the panel and its handlers for the Speculative tab (`tab`: its spec and controller)."""

    def __init__(self, spec, controller):
        self.spec = spec
        self.controller = controller

    # handlers --------------------------------------------------------------------------
    def pick(self, session, data: dict) -> tuple:
        """What the panel shows for a clicked tree node: (step, node, the candidates' update, the words)."""
        node, k = data.get("node"), data.get("step")
        try:
            k, node = int(k), int(node)
        except (TypeError, ValueError, OverflowError):
            return gr.skip(), gr.skip(), gr.update(choices=[], value=None), PICK_FIRST
        if session is None or not 0 <= k < session.n_steps or not 1 <= node < session.view.steps[k].tree.size:
            return gr.skip(), gr.skip(), gr.update(choices=[], value=None), PICK_FIRST
        label = session.view.node_labels[k][node]
        words = (f"Editing **node {node}** of **step {k}**: the draft `{label}`. Replace it (pick a candidate or type "
                 "a token), or cut it with everything drafted below it; then press **Verify again**.")
        choices = edit_candidates(session.view, k, node)
        return k, node, gr.update(choices=choices, value=choices[0][1] if choices else None), words

    def intervene(self, edit, step, node, candidate=None, token="", view=None, session=None,
                  request: gr.Request = None):
        """Fork the session's run at recorded `step` with the edit of `node`, verify that step again, and show
        the branch there, paused. `edit` is "replace" (the token: `token` typed, as one token or #id, else the
        `candidate` id) or "cut"."""
        spec = self.spec
        key = request_key(request)
        with user_errors(spec.smaller, spec.policy):
            if session is None or session.n_steps == 0:
                raise ConfigError("nothing is recorded yet: press Run or Step, then click a drafted node of the tree")
            if session.run is None:
                raise ConfigError("this run was opened from a trace file, so no model is loaded to verify an edit: "
                                  "press Run to run it live, then edit a step")
            if len(session.extra.get("branches", ())) >= MAX_BRANCHES:
                raise ConfigError(f"this run has {MAX_BRANCHES} branches already, the most one run keeps: press Run "
                                  "on a new prompt or Reset to start over")
            k = recorded_index("step", step, session.n_steps)
            n_nodes = session.view.steps[k].tree.size
            node_i = whole_number("node", node)
            if n_nodes < 2:
                raise ConfigError(f"step {k} drafted nothing, so it has no draft token to edit")
            if not 1 <= node_i < n_nodes:
                raise ConfigError(f"step {k} has no drafted node {node_i}: pick one of 1..{n_nodes - 1} (node 0 is the "
                                  "root, text already committed)")
            token_id = -1
            if edit == REPLACE:
                typed = token.strip("\n") if isinstance(token, str) else ""
                if typed:
                    token_id = single_token(session.extra["tokenizer"], typed, what="the token to put in")
                elif candidate not in (None, ""):
                    token_id = whole_number("candidate", candidate)
                else:
                    raise ConfigError("pick a candidate or type the token to put in")
            draft_edit = DraftEdit(k, node_i, edit, token_id)  # an unknown edit is refused here
            # the run on show stops at its current step: the branch takes the views over
            running = self.controller._running.get(key)
            for s in {id(x): x for x in (session, running) if x is not None}.values():
                s.paused = True

            def work():
                with session.lock:
                    decoder = session.decoder.fork(draft_edit, session.run.drafter())
                decoder.step()  # the edited step, verified again
                return decoder

            decoder = spec.sharing.run_in_turn(key, "an edited step, verified again", work)
            branch = spec.branch(session, decoder)
        family = branch.extra["branches"]
        note = f"{branch_name(len(family) - 1, branch)}: {_edit_words(branch)}, verified again · paused"
        outputs = spec.outputs_full(branch, spec.status(branch, note, k), k, view or {})
        return (*branches_view(branch), *outputs)

    def switch(self, name, view=None, session=None):
        """Show another branch of the session's run (by its name in the picker), at its latest step."""
        family = session.extra.get("branches", []) if session is not None else []
        names = [branch_name(i, s) for i, s in enumerate(family)]
        if name not in names:
            raise gr.Error(f"This run has no branch called {str(name)[:60]!r}: "
                           + (f"pick one of {', '.join(names)}." if names else "edit a step to make one."),
                           print_exception=False)
        chosen = family[names.index(name)]
        outputs = self.spec.outputs_full(chosen, self.spec.status(chosen, f"showing {name}"), None, view or {})
        return (*branches_view(chosen), *outputs)

    # layout -------------------------------------------------------------------------------
    def build(self):
        with gr.Accordion("Intervene: edit this step's draft, and the target verifies it again", open=True,
                          elem_id="sv-intervene-accordion"):
            where = gr.Markdown(PICK_FIRST, elem_id="sv-edit-where")
            with gr.Row():
                step = gr.Number(label="Step", elem_id="sv-edit-step")
                node = gr.Number(label="Node", elem_id="sv-edit-node")
                edit = gr.Radio(EDITS, value=REPLACE, label="Edit", elem_id="sv-edit-kind")
            with gr.Row():
                candidate = gr.Dropdown([], label="Put in a candidate", elem_id="sv-edit-candidate",
                                        info="the drafter's other candidates here, then the target's own top")
                token = gr.Textbox(label="…or type a token", placeholder="one token, e.g. ' the' (spaces count), or #id",
                                   max_length=100, elem_id="sv-edit-token")
            verify = gr.Button("Verify again (branch the run)", variant="primary", elem_id="sv-edit-verify")
            gr.Markdown("The run **branches** at that step: the original stays as it was, the branch carries on "
                        "from your edit (Run and Step continue it). The target still decides every token, so the "
                        "text stays the target's; what changes is how much of the draft it accepts.")
            branch = gr.Radio([], label="Branches of this run", visible=False, elem_id="sv-branch")
            table = gr.HTML("", elem_id="sv-branches")
        self.components = dict(where=where, step=step, node=node, edit=edit, candidate=candidate, token=token,
                               verify=verify, branch=branch, table=table)
        return self

    def wire(self, handle, tree, node_card, buttons, open_events):
        c = self.components
        # the branch picker and table first: like every run endpoint's, the last output is the run summary
        outputs = [c["branch"], c["table"], *handle.outputs]

        def picked(session, evt: gr.EventData):
            data = evt._data if isinstance(getattr(evt, "_data", None), dict) else {}
            return (open_node_card(session, evt), *self.pick(session, data))

        # no model work: the card and the candidates are read from the recorded step, so they skip the queue
        tree.click(picked, handle.state, [node_card, c["step"], c["node"], c["candidate"], c["where"]],
                   queue=False, api_name=False, show_progress="hidden")
        c["verify"].click(self.intervene, [c["edit"], c["step"], c["node"], c["candidate"], c["token"],
                                           handle.view_state, handle.state], outputs, api_name="intervene",
                          concurrency_limit=None)
        c["branch"].input(self.switch, [c["branch"], handle.view_state, handle.state], outputs, api_name="branch",
                          queue=False)
        # a run's branches follow the session on show: after Run or Step, and cleared by Reset or an opened trace
        for event in (handle.run_event, handle.step_event):
            event.then(branches_view, handle.state, [c["branch"], c["table"]], queue=False, api_name=False,
                       show_progress="hidden")
        for event in (buttons[3].click, *open_events):
            event(lambda: (gr.update(choices=[], value=None, visible=False), ""), None, [c["branch"], c["table"]],
                  queue=False, api_name=False, show_progress="hidden")
