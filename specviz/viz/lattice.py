"""Diffusion and Jacobi runs: the step × position lattice of a canvas, the per-cell top-k card,
tokens per forward, progress against autoregressive decoding and the schedule's comparisons.

Everything here is built from `DiffusionStep` records and text labels the caller supplies;
no tokenizer, no model.

The lattice is drawn as SVG (`lattice_svg`), not as a plotly heatmap, so that a cell is an element a page can
click without a script injected at launch: each cell is a `<rect data-pos="j">` inside its row's
`<g data-step="k">`, and the Diffusion tab's `gr.HTML` turns a click into an event with those two numbers.

Colour: each cell state owns a band of the colour scale (see `LATTICE_STATE_COLORS`), and the
shade inside the band is the chosen signal in [0, 1]: light = unsure, strong = confident. What the user did
is drawn on top in one colour of its own (`LATTICE_USER_COLOR`): a corner flag on every row a pin holds its
cell, a solid outline where the pin took effect, a dashed one where a cell was sent back to the mask.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ..trace import (CELL_STATE_NAMES, KEPT, MASKED, PINNED_BY_USER, REMASKED, REVEALED, SENT_BACK_BY_USER,
                     commit_numbers, summarize_diffusion, user_actions)
from .palette import (
    AR_REFERENCE_COLOR,
    BACKGROUND,
    BAR_TRACK_COLOR,
    INK_COLOR,
    LATTICE_ALL_IN_COLOR,
    LATTICE_BLOCK_COLOR,
    LATTICE_CURRENT_COLOR,
    LATTICE_STATE_COLORS,
    LATTICE_USER_COLOR,
    MARK_ON_DARK_COLOR,
    MUTED_COLOR,
    RUN_COLORS,
    SUBTLE_COLOR,
    TRANSPARENT,
)
from .panels import _row
from .tree import empty_figure

SIGNALS = {
    "confidence": "confidence (probability of the proposal)",
    "top2_gap": "top-2 gap (p1 − p2)",
    "entropy": "certainty exp(−entropy) = 1 / perplexity",
}
TEXT_CELLS = 2500  # commit-order numbers are drawn as text up to this many cells (and ≤ TEXT_WIDTH columns)
TEXT_WIDTH = 64
HOVER_CELLS = 6000  # cells get a hover text up to this many (a bigger lattice would weigh megabytes)
# SVG units (pixels at full size): the grid spreads over about GRID_WIDTH × at most GRID_HEIGHT
GRID_WIDTH, GRID_HEIGHT = 880, 1300
CELL_MIN, CELL_MAX = 3.0, 36.0
ROW_PX, ROW_MIN = 18.0, 3.0
LEFT_PX, TOP_PX, RIGHT_PX, BOTTOM_PX = 64, 18, 44, 4
SHADES = 24  # steps of shade inside a state's colour band
_N_STATES = len(CELL_STATE_NAMES)
# a cell's colour value: state + _LO + _SPAN * shade, so the shade never leaves its state's band
_LO, _SPAN = 0.02, 0.96


def signal_shade(step, signal: str = "confidence") -> np.ndarray:
    """[L] the per-cell quantity that drives the colour, in [0, 1] (NaN: not scored).

    "entropy" is shown as exp(−entropy), so low entropy reads as confident like the other two."""
    if signal == "confidence":
        v = step.confidence
    elif signal == "top2_gap":
        v = step.top2_gap
    elif signal == "entropy":
        v = np.exp(-step.entropy.astype(np.float64))
    else:
        raise ValueError(f"unknown signal {signal!r}; expected one of {sorted(SIGNALS)}")
    return np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0)


def is_all_in(step) -> bool:
    """The schedule committed everything left this step (Prophet's early commit), as the step records it."""
    return bool(step.all_in)


def _num(x) -> str:
    return f"{x:.3f}" if x is not None and np.isfinite(x) else "–"


def _label(labels, j: int) -> str:
    try:
        return html.escape(str(labels[j]))
    except (IndexError, TypeError):
        return "?"


class CommitState:
    """What the lattice needs to know about the steps before a row: for each cell, the step and running number
    of its commit (-1 / 0: not committed) and its shade under every signal when it was committed.

    `lattice_row` reads it, `advance` moves it past one step, so a trailing window of rows can be drawn from
    the state before its first row without replaying the run."""

    def __init__(self, length: int):
        self.steps = 0  # steps seen: the row number of the next step
        self.n = 0  # commits so far
        self.at = np.full(length, -1, dtype=np.int64)
        self.no = np.zeros(length, dtype=np.int64)
        self.value = {signal: np.full(length, np.nan) for signal in SIGNALS}

    def copy(self) -> "CommitState":
        out = CommitState(0)
        out.steps, out.n, out.at, out.no = self.steps, self.n, self.at.copy(), self.no.copy()
        out.value = {k: v.copy() for k, v in self.value.items()}
        return out

    def advance(self, step) -> None:
        revealed = np.flatnonzero(step.cell_state == REVEALED)
        remasked = step.cell_state == REMASKED
        # the user's pins and send-backs came before the step; a pin is committed by nobody's confidence
        touched = step.intervention != 0
        for signal, value in self.value.items():
            value[touched] = np.nan
            value[revealed] = signal_shade(step, signal)[revealed]
            value[remasked] = np.nan
        self.at[touched] = np.where(step.intervention[touched] == PINNED_BY_USER, step.step, -1)
        self.no[touched] = 0
        self.at[revealed], self.at[remasked] = step.step, -1
        self.no[revealed] = self.n + 1 + np.arange(revealed.shape[0])
        self.no[remasked] = 0
        self.n += int(revealed.shape[0])
        self.steps += 1


def lattice_row(step, state: CommitState, canvas_labels, proposal_labels, signal: str = "confidence") -> tuple:
    """(z [L], customdata [L, 9] object array) of one lattice row: `step` drawn on top of `state`, the
    commits before it (not changed). Labels are the row's: `canvas_labels[j]`, `proposal_labels[j]`."""
    length = step.length
    shade = signal_shade(step, signal)
    st = step.cell_state.astype(np.int64)
    kept = st == KEPT
    value = shade.copy()
    value[kept] = state.value[signal][kept]
    value[step.intervention == PINNED_BY_USER] = np.nan
    z = st + _LO + _SPAN * np.nan_to_num(value, nan=0.0)
    data = np.empty((length, 9), dtype=object)
    committed_value = state.value[signal]
    rule = html.escape(step.rule)
    row, n = state.steps, state.n
    for j in range(length):
        s_j = int(st[j])
        if s_j == REVEALED:
            n += 1
            note = f"<br>commit #{n} · rule: {rule}"
        elif step.pinned[j]:
            at = step.step if step.intervention[j] == PINNED_BY_USER else state.at[j]
            note = f"<br>pinned by you (in place from step {at})"
        elif s_j == KEPT:
            note = f"<br>committed at step {state.at[j]} (#{state.no[j]}) with {_num(committed_value[j])}"
        elif s_j == REMASKED:
            note = f"<br>taken back (committed at step {state.at[j]}, #{state.no[j]})"
        else:
            note = "" if step.proposal[j] >= 0 else "<br>not scored"
        if step.intervention[j] == SENT_BACK_BY_USER:
            note = "<br>sent back to the mask by you before this step" + note
        canvas = _label(canvas_labels, j) if step.canvas[j] >= 0 else "[mask]"
        proposal = _label(proposal_labels, j) if step.proposal[j] >= 0 else "–"
        data[j] = (row, j, CELL_STATE_NAMES[s_j], canvas, proposal, _num(step.confidence[j]), _num(step.top2_gap[j]),
                   _num(step.entropy[j]), note)
    return z, data


def lattice_cells(steps: list, canvas_labels: list, proposal_labels: list, signal: str = "confidence",
                  start: CommitState | None = None):
    """(z [S, L] colour values, customdata [S, L, 9] object array) of the lattice heatmap.

    customdata per cell: step, position, state name, canvas label (escaped, "[mask]" when masked),
    proposal label (escaped, "–" when not scored), confidence, top-2 gap, entropy (formatted), note
    (commit number and rule for revealed cells; for kept cells when they were committed and their shade value).
    `start`: the commit state before `steps[0]` when the steps are a trailing window of a run."""
    n_steps, length = len(steps), steps[0].length
    z = np.zeros((n_steps, length), dtype=np.float64)
    data = np.empty((n_steps, length, 9), dtype=object)
    state = start.copy() if start is not None else CommitState(length)
    for i, s in enumerate(steps):
        z[i], data[i] = lattice_row(s, state, canvas_labels[i], proposal_labels[i], signal)
        state.advance(s)
    return z, data


def _check_labels(name: str, labels, n_steps: int, length: int) -> None:
    if len(labels) != n_steps:
        raise ValueError(f"{name}: {len(labels)} rows for {n_steps} steps")
    for i, row in enumerate(labels):
        if len(row) != length:
            raise ValueError(f"{name}[{i}]: {len(row)} labels for a canvas of {length} cells")


def _grid_geometry(n_steps: int, length: int) -> tuple:
    """(cell width, row height) in SVG units: a canvas spreads over about GRID_WIDTH units, a run over at most
    GRID_HEIGHT (a long run gets thinner rows instead of a page-long lattice)."""
    cell = min(CELL_MAX, max(CELL_MIN, GRID_WIDTH / max(length, 1)))
    row = min(ROW_PX, max(ROW_MIN, GRID_HEIGHT / max(n_steps, 1)))
    return cell, row


def _tick_every(n: int, pitch: float, min_gap: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 … whose labels sit at least `min_gap` units apart."""
    for every in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
        if every * pitch >= min_gap or every >= n:
            return every
    return n


def _fill_table() -> np.ndarray:
    """[state, shade step] -> hex colour: each state's band from its light to its strong colour."""
    def rgb(hex_color: str) -> np.ndarray:
        return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)

    table = np.empty((_N_STATES, SHADES + 1), dtype=object)
    for b, name in enumerate(CELL_STATE_NAMES):
        light, strong = (rgb(c) for c in LATTICE_STATE_COLORS[name])
        for q in range(SHADES + 1):
            r, g, bl = np.rint(light + (strong - light) * q / SHADES).astype(int)
            table[b, q] = f"#{r:02x}{g:02x}{bl:02x}"
    return table


_FILLS = _fill_table()


def cell_fills(z: np.ndarray) -> np.ndarray:
    """Colour of each cell from its colour value (`lattice_row`'s z: state + _LO + _SPAN × shade)."""
    band = np.clip(np.floor(z).astype(np.int64), 0, _N_STATES - 1)
    shade = np.clip((z - band - _LO) / _SPAN, 0.0, 1.0)
    return _FILLS[band, np.rint(shade * SHADES).astype(np.int64)]


def _cell_tip(d) -> str:
    """A cell's hover text from its customdata row (labels already escaped)."""
    note = str(d[8]).replace("<br>", "&#10;")
    return (f"step {d[0]} · position {d[1]} · {d[2]}&#10;canvas: {d[3]} · proposal: {d[4]}&#10;"
            f"confidence {d[5]} · top-2 gap {d[6]} · entropy {d[7]} nats{note}")


def _edge_path(xs: list, top: float, row: float, left: float, cell: float, length: int) -> str:
    """SVG path data of one edge of the active block, row by row: a vertical run while the edge stays, a
    horizontal step where it moves (a new block, or Jacobi's window sliding on). Edges on the canvas border
    are not drawn."""
    parts, last = [], None
    for i, x in enumerate(xs):
        if not 0 < x < length:
            last = None
            continue
        px, y0 = left + x * cell, top + i * row
        if last is None:
            parts.append(f"M{px:.1f} {y0:.1f}")
        elif last != x:
            parts.append(f"H{px:.1f}")
        parts.append(f"V{y0 + row:.1f}")
        last = x
    return "".join(parts)


def _user_marks(steps: list, top: float, row: float, left: float, cell: float, gap: float) -> list:
    """SVG marks of what the user did: a corner flag on every cell a pin holds, a solid outline on the row where
    a pin took effect and a dashed one where a cell was sent back to the mask."""
    out = []
    flag = max(min(cell, row) * 0.45, 2.0)
    # the outline sits inside the cell, so neighbours' marks and the scrubber's row outline never cover it
    w, h = max(cell - gap - 2.0, 0.5), max(row - gap - 2.0, 0.5)
    for i, s in enumerate(steps):
        y = top + i * row
        for j in np.flatnonzero(s.pinned):
            x = left + j * cell
            out.append(f'<path class="sv-pinned" data-step="{s.step}" data-pos="{j}" d="M{x:.1f} {y:.1f}h{flag:.1f}'
                       f'L{x:.1f} {y + flag:.1f}Z" fill="{LATTICE_USER_COLOR}"/>')
        for j in np.flatnonzero(s.intervention):
            pin = s.intervention[j] == PINNED_BY_USER
            out.append(f'<rect class="sv-user-{"pin" if pin else "sent-back"}" data-step="{s.step}" data-pos="{j}" '
                       f'x="{left + j * cell + 1:.1f}" y="{y + 1:.1f}" width="{w:.1f}" height="{h:.1f}" '
                       f'fill="none" stroke="{LATTICE_USER_COLOR}" stroke-width="2"'
                       + ("/>" if pin else ' stroke-dasharray="4 2"/>'))
    return out


def _legend_html(present: set, signal: str, overlays, small: bool, any_all_in: bool, windows: bool,
                 user: set = frozenset()) -> str:
    names = {
        MASKED: f"masked (shade: the proposal's {signal})",
        REVEALED: "revealed this step",
        KEPT: f"kept (shade: its {signal} when committed)",
        REMASKED: "remasked (taken back)",
    }
    items = []
    for state, text in names.items():
        if state in present:
            color = LATTICE_STATE_COLORS[CELL_STATE_NAMES[state]][1]
            items.append(f'<span><i class="sv-swatch" style="background:{color}"></i>{text}</span>')
    if PINNED_BY_USER in user:
        items.append(f'<span><i class="sv-swatch" style="border:2px solid {LATTICE_USER_COLOR};background:linear-'
                     f'gradient(135deg,{LATTICE_USER_COLOR} 40%,{TRANSPARENT} 40%)"></i>pinned by you (corner flag: '
                     "the pin holds the cell; outline: the step it took effect)</span>")
    if SENT_BACK_BY_USER in user:
        items.append(f'<span><i class="sv-swatch" style="border:2px dashed {LATTICE_USER_COLOR};background:none">'
                     "</i>sent back to the mask by you</span>")
    if "commit_order" in overlays:
        items.append("<span>#n: commit order over the run</span>" if small else
                     "<span>dots: commits (hover or click a cell for its number)</span>")
    if "blocks" in overlays:
        what = "the guessed window's edges" if windows else "the active block's edges"
        items.append(f'<span><i class="sv-swatch" style="border:2px dashed {LATTICE_BLOCK_COLOR};width:7px;'
                     f'height:7px;background:none"></i>{what}</span>')
    if "threshold" in overlays and any_all_in:
        items.append(f'<span><i class="sv-swatch" style="background:{LATTICE_ALL_IN_COLOR};height:3px"></i>'
                     "all-in: the schedule committed everything left</span>")
    return f'<div class="sv-legend" style="margin:2px 0 4px 0;line-height:1.8">{"".join(items)}</div>'


def lattice_svg(
    steps: list,
    canvas_labels: list,
    proposal_labels: list,
    current_step: int | None = None,
    signal: str = "confidence",
    overlays=("commit_order", "blocks", "threshold"),
    title: str | None = None,
    start: CommitState | None = None,
    cells: tuple | None = None,
) -> str:
    """The step × position lattice of a diffusion or Jacobi run, as HTML: a title, a legend and an SVG grid.

    Each cell is a `<rect data-pos="j">` inside its row's `<g data-step="k">` (k counts the run's rows from 0), so
    a click handler finds the cell it landed on with `closest("[data-pos]")`; overlays ignore the pointer.

    `canvas_labels[i][j]` is the display text of `steps[i].canvas[j]` and `proposal_labels[i][j]` that of
    `steps[i].proposal[j]` (ignored where the id is -1). `signal` picks the shade: "confidence", "top2_gap" or
    "entropy". `overlays`: "commit_order" (running commit number on each revealed cell; text on small grids,
    dots on big ones), "blocks" (the edges of the active block, or of Jacobi's window, row by row),
    "threshold" (rows where the schedule went all-in). `current_step` gets an outline (the scrubber).

    A trailing window of a run: `steps` are its last rows and `start` the `CommitState` before the first of
    them (rows keep their step numbers, commit numbers keep counting). `cells`: the rows' (z, customdata)
    when the caller has them already (see `lattice_row`); the labels are then not read.
    """
    if not steps:
        return empty_lattice_html("No denoising steps yet")
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; expected one of {sorted(SIGNALS)}")
    n_steps, length = len(steps), steps[0].length
    first = start.steps if start is not None else 0
    if cells is None:
        _check_labels("canvas_labels", canvas_labels, n_steps, length)
        _check_labels("proposal_labels", proposal_labels, n_steps, length)
        cells = lattice_cells(steps, canvas_labels, proposal_labels, signal, start)
    z, data = cells
    small = n_steps * length <= TEXT_CELLS and length <= TEXT_WIDTH
    cell, row = _grid_geometry(n_steps, length)
    left, top = LEFT_PX, TOP_PX
    width, height = left + length * cell + RIGHT_PX, top + n_steps * row + BOTTOM_PX
    gap = 1.0 if cell >= 6 and row >= 8 else 0.0
    fills = cell_fills(np.asarray(z, dtype=np.float64))
    tips = n_steps * length <= HOVER_CELLS
    xs = [f"{left + j * cell:.1f}" for j in range(length)]
    w, h = f"{cell - gap:.1f}", f"{row - gap:.1f}"

    out = []
    # axes: positions along the top, steps down the left
    every = _tick_every(length, cell, 26)
    font = 10
    for j in range(0, length, every):
        out.append(f'<text x="{left + (j + 0.5) * cell:.1f}" y="{top - 5}" text-anchor="middle" font-size="{font}" '
                   f'fill="{SUBTLE_COLOR}">{j}</text>')
    every = _tick_every(n_steps, row, 13)
    for i in range(0, n_steps, every):
        out.append(f'<text x="{left - 5}" y="{top + (i + 0.5) * row:.1f}" text-anchor="end" '
                   f'dominant-baseline="central" font-size="{font}" fill="{SUBTLE_COLOR}">{first + i}</text>')
    out.append(f'<text x="{left - 5}" y="{top - 5}" text-anchor="end" font-size="{font}" fill="{SUBTLE_COLOR}">'
               "step \\ cell</text>")
    # the cells, one group per row
    out.append('<g class="sv-cells">')
    for i in range(n_steps):
        out.append(f'<g data-step="{first + i}" transform="translate(0 {top + i * row:.1f})">')
        fill_i = fills[i]
        if tips:
            d_i = data[i]
            out.extend(f'<rect data-pos="{j}" x="{xs[j]}" width="{w}" height="{h}" fill="{fill_i[j]}">'
                       f"<title>{_cell_tip(d_i[j])}</title></rect>" for j in range(length))
        else:
            out.extend(f'<rect data-pos="{j}" x="{xs[j]}" width="{w}" height="{h}" fill="{fill_i[j]}"/>'
                       for j in range(length))
        out.append("</g>")
    out.append("</g>")

    marks = ['<g pointer-events="none">']
    if "commit_order" in overlays:
        order = commit_numbers(steps, start.n if start is not None else 0)
        size = min(11.0, cell * 0.55, row * 0.7)
        for i, j in zip(*np.nonzero(order)):
            cx, cy = left + (j + 0.5) * cell - gap / 2, top + (i + 0.5) * row - gap / 2
            if small:
                marks.append(f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" dominant-baseline="central" '
                             f'font-size="{size:.1f}" fill="{MARK_ON_DARK_COLOR}">{order[i, j]}</text>')
            else:
                marks.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{max(min(cell, row) * 0.2, 0.8):.1f}" '
                             f'fill="{MARK_ON_DARK_COLOR}"/>')
    marks.extend(_user_marks(steps, top, row, left, cell, gap))
    windows = _sliding_windows(steps)
    if "blocks" in overlays:
        for edge in ([s.block_start for s in steps], [s.block_end for s in steps]):
            path = _edge_path(edge, top, row, left, cell, length)
            if path:
                marks.append(f'<path class="sv-block-edge" d="{path}" fill="none" stroke="{LATTICE_BLOCK_COLOR}" '
                             'stroke-width="2" stroke-dasharray="5 3"/>')
    all_in = [i for i, s in enumerate(steps) if is_all_in(s)]
    if "threshold" in overlays:
        for i in all_in:
            y = top + (i + 1) * row
            marks.append(f'<line class="sv-all-in" data-step="{first + i}" x1="{left}" x2="{left + length * cell:.1f}" '
                         f'y1="{y:.1f}" y2="{y:.1f}" stroke="{LATTICE_ALL_IN_COLOR}" stroke-width="3"/>'
                         f'<text x="{left + length * cell + 4:.1f}" y="{y - row / 2:.1f}" dominant-baseline="central" '
                         f'font-size="{font}" fill="{LATTICE_ALL_IN_COLOR}">all-in</text>')
    if current_step is not None and first <= current_step < first + n_steps:
        y = top + (current_step - first) * row
        marks.append(f'<rect class="sv-current" data-step="{current_step}" x="{left - 1.5}" y="{y - 1.5:.1f}" '
                     f'width="{length * cell + 2:.1f}" height="{row + 2:.1f}" fill="none" '
                     f'stroke="{LATTICE_CURRENT_COLOR}" stroke-width="3"/>')
    marks.append("</g>")
    present = set(np.unique(np.concatenate([s.cell_state for s in steps])).tolist())
    user = set(np.unique(np.concatenate([s.intervention for s in steps])).tolist())
    if any(s.pinned.any() for s in steps):
        user.add(PINNED_BY_USER)
    heading = html.escape(title or f"Denoising lattice: {n_steps} steps × {length} cells")
    hint = "click a cell for its top candidates" + (", hover for its numbers" if tips else "")
    return (f'<div class="sv-lattice" data-steps="{n_steps}" data-cells="{length}">'
            f'<div style="font-weight:600;font-size:14px">{heading}</div>'
            f'<div style="font-size:12px;color:{SUBTLE_COLOR}">shade = {html.escape(SIGNALS[signal])} · {hint}</div>'
            + _legend_html(present, signal, overlays, small, bool(all_in), windows, user)
            + f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" preserveAspectRatio="xMinYMin meet" '
            f'style="width:100%;max-width:{width:.0f}px;height:auto;display:block;font-family:ui-sans-serif,'
            f'system-ui,sans-serif" role="img" aria-label="{heading}">'
            + "".join(out) + "".join(marks) + "</svg></div>")


def _sliding_windows(steps: list) -> bool:
    """Every row is its own block and some overlap the one before: Jacobi's window sliding along the canvas."""
    pairs = list(zip(steps, steps[1:]))
    return bool(pairs) and all(a.block != b.block for a, b in pairs) and \
        any(b.block_start < a.block_end for a, b in pairs)


def empty_lattice_html(message: str) -> str:
    return (f'<div class="sv-lattice sv-lattice-empty" style="padding:36px 8px;text-align:center;'
            f'color:{SUBTLE_COLOR};font-size:14px;border:1px dashed {BAR_TRACK_COLOR};border-radius:6px">'
            f"{html.escape(message)}</div>")


def user_note(steps: list, k: int, position: int) -> str:
    """What the user had done to cell `position` by recorded step k, in words ("" when nothing)."""
    done = user_actions(steps, position, k)
    if not done:
        return ""
    last = done[-1]
    if steps[k].pinned[position]:
        return f"pinned by you: in place from step {last.step}"
    note = f"sent back to the mask by you at step {last.step} (before its forward)"
    return note + ("; the model has filled it again since" if last.step < k and steps[k].canvas[position] >= 0 else "")


def cell_topk_html(step, position: int, topk_labels: list, state_name: str | None = None, note: str = "") -> str:
    """The top-k candidates of one cell at one step: rank, token, probability and a bar.

    `topk_labels[r]` is the display text of `step.topk_ids[position, r]`; `note` (e.g. `user_note`) goes under the
    heading."""
    if not 0 <= position < step.length:
        return f'<div class="sv-topk" style="color:{MUTED_COLOR}">Position {int(position)} is off the canvas (0–{step.length - 1}).</div>'
    state = state_name or CELL_STATE_NAMES[int(step.cell_state[position])]
    header = (
        f'<div style="margin-bottom:4px"><b>step {step.step} · position {position}</b> · {html.escape(state)}'
        f" · confidence {_num(step.confidence[position])} · top-2 gap {_num(step.top2_gap[position])}"
        f" · entropy {_num(step.entropy[position])} nats</div>"
    )
    if note:
        header += (f'<div class="sv-user-note" style="color:{LATTICE_USER_COLOR};margin-bottom:4px">'
                   f"{html.escape(note)}</div>")
    proposal = int(step.proposal[position])
    if proposal < 0:
        return (f'<div class="sv-topk">{header}<div style="color:{MUTED_COLOR}">This cell was not scored at step '
                f"{step.step}: the model proposed nothing for it (outside the active block, or already committed).</div></div>")
    k = step.topk_ids.shape[1] if step.topk_ids.ndim == 2 else 0
    if k == 0:
        return (f'<div class="sv-topk">{header}<div style="color:{MUTED_COLOR}">Top-k candidates were not recorded for this run '
                "(K = 0); only the proposal and its confidence are known.</div></div>")
    canvas = int(step.canvas[position])
    color = LATTICE_STATE_COLORS["revealed-now"][1]
    rows = []
    for r in range(k):
        tok = int(step.topk_ids[position, r])
        if tok < 0:
            continue
        p = float(step.topk_probs[position, r])
        label = topk_labels[r] if r < len(topk_labels) else f"id {tok}"
        marks = []
        if tok == proposal:
            marks.append("proposal")
        if tok == canvas:
            marks.append("on canvas")
        width = 100.0 * min(max(p, 0.0), 1.0) if np.isfinite(p) else 0.0
        bar = (f'<div style="width:120px;height:10px;background:{BAR_TRACK_COLOR};border-radius:2px">'
               f'<div style="width:{width:.1f}%;height:10px;background:{color};border-radius:2px"></div></div>')
        weight = "font-weight:bold;" if tok == proposal else ""
        rows.append(
            f'<tr style="{weight}"><td>{r + 1}</td><td style="font-family:ui-monospace,Menlo,monospace">'
            f"{html.escape(str(label))}</td><td>{_num(p)}</td><td>{bar}</td>"
            f'<td style="color:{SUBTLE_COLOR}">{html.escape(", ".join(marks))}</td></tr>'
        )
    table = (f'<table class="sv-metrics"><tr style="color:{SUBTLE_COLOR}"><td>rank</td><td>token</td><td>p</td><td></td><td></td></tr>'
             + "".join(rows) + "</table>")
    return f'<div class="sv-topk">{header}{table}</div>'


def _revealed_stats(steps: list):
    mean, low = [], []
    for s in steps:
        c = s.confidence[s.cell_state == REVEALED]
        c = c[np.isfinite(c)]
        mean.append(float(c.mean()) if c.size else None)
        low.append(float(c.min()) if c.size else None)
    return mean, low


def tokens_per_forward_figure(steps: list) -> go.Figure:
    """Bars: cells revealed per forward at each step (remasked cells below zero); line: the running
    mean of cells committed (revealed − remasked) per forward; dashed: autoregressive, 1 per forward."""
    if not steps:
        return empty_figure("Tokens per forward appear once the run has steps", height=240)
    xs = np.arange(len(steps))
    fw = np.array([max(s.forwards, 1) for s in steps], dtype=np.float64)
    rev = np.array([s.n_revealed for s in steps], dtype=np.float64)
    rem = np.array([s.n_remasked for s in steps], dtype=np.float64)
    running = np.cumsum(rev - rem) / np.cumsum(fw)
    info = np.array([[s.n_revealed, s.forwards, html.escape(s.rule)] for s in steps], dtype=object)
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=xs, y=rev / fw, name="revealed ÷ forwards", marker_color=LATTICE_STATE_COLORS["revealed-now"][1],
        customdata=info,
        hovertemplate="step %{x}: %{customdata[0]} cells in %{customdata[1]} forward(s) = %{y:.2f}"
                      "<br>rule: %{customdata[2]}<extra></extra>",
    ))
    if rem.any():
        fig.add_trace(go.Bar(x=xs, y=-rem / fw, name="remasked ÷ forwards",
                             marker_color=LATTICE_STATE_COLORS["remasked"][1],
                             hovertemplate="step %{x}: %{y:.2f} per forward taken back<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=running, mode="lines", name="running mean (committed ÷ forwards)",
                             line=dict(color=INK_COLOR, width=2),
                             hovertemplate="after step %{x}: %{y:.2f} cells per forward<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color=AR_REFERENCE_COLOR, dash="dash", width=1.5), name="autoregressive",
                  annotation_text="autoregressive", annotation_position="top left",
                  annotation_font=dict(size=10, color=AR_REFERENCE_COLOR))
    summ = summarize_diffusion(steps)
    fig.update_layout(
        title=dict(text=f"Cells per forward: {summ['cells_per_forward']:.2f}<br><sup>{summ['tokens_per_forward']:.2f} "
                        f"generated tokens per forward over the run</sup>", font=dict(size=14)),
        height=320,
        barmode="relative",
        bargap=0.1,
        xaxis=dict(title="step", dtick=1 if len(steps) <= 30 else None),
        yaxis=dict(title="cells per forward", rangemode="tozero"),
        # the legend goes under the axis: above the plot it ran into the two-line title
        margin=dict(l=50, r=10, t=56, b=90),
        legend=dict(orientation="h", y=-0.3, x=0, yanchor="top", font=dict(size=10)),
        plot_bgcolor=BACKGROUND,
    )
    return fig


def progress_curve(steps: list) -> tuple:
    """(x, y): cells committed so far (revealed − remasked) against steps taken, from (0, 0)."""
    net = np.cumsum([s.n_revealed - s.n_remasked for s in steps]).astype(np.int64)
    return np.concatenate([[0], net]), np.arange(len(steps) + 1)


def progress_figure(runs: dict) -> go.Figure:
    """Steps against generated length for each named run, with the one-token-per-step diagonal."""
    runs = {name: steps for name, steps in runs.items() if steps}
    if not runs:
        return empty_figure("Progress appears once a run has steps", height=260)
    fig = go.Figure()
    top = 0
    for k, (name, steps) in enumerate(runs.items()):
        x, y = progress_curve(steps)
        fw = np.concatenate([[0], np.cumsum([s.forwards for s in steps])])
        top = max(top, int(x[-1]), int(y[-1]))
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers" if len(steps) <= 100 else "lines", name=str(name),
            # straight segments, not a staircase: a run at one token per step then lies on the diagonal, as the
            # subtitle says (a staircase dips under it between steps and reads as faster than autoregressive)
            line=dict(color=RUN_COLORS[k % len(RUN_COLORS)], width=2.5), marker=dict(size=5),
            customdata=fw,
            hovertemplate=f"{html.escape(str(name))}<br>" + "%{x} cells after %{y} steps (%{customdata} forwards)<extra></extra>",
        ))
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="autoregressive (1 token per step)",
                             line=dict(color=AR_REFERENCE_COLOR, dash="dash", width=1.5), hoverinfo="skip"))
    fig.update_layout(
        title=dict(text="Steps against generated length<br><sup>below the dashed diagonal = more than one token per "
                        "step</sup>", font=dict(size=14)),
        height=320,
        xaxis=dict(title="cells committed", rangemode="tozero"),
        yaxis=dict(title="steps", rangemode="tozero"),
        margin=dict(l=50, r=10, t=56, b=90),
        legend=dict(orientation="h", y=-0.3, x=0, yanchor="top", font=dict(size=10)),
        plot_bgcolor=BACKGROUND,
    )
    return fig


def _finite_or_none(values) -> list:
    return [float(v) if v is not None and np.isfinite(v) else None for v in values]


def schedule_figure(steps: list) -> go.Figure:
    """Per step: the signal the schedule compared, its threshold, and the confidence of the cells it
    revealed; early-commit (all-in) steps marked. Without a threshold or signal, the mean and minimum
    confidence of the revealed cells."""
    if not steps:
        return empty_figure("The schedule appears once the run has steps", height=240)
    xs = list(range(len(steps)))
    thr = _finite_or_none([s.threshold for s in steps])
    sig = _finite_or_none([s.signal for s in steps])
    mean, low = _revealed_stats(steps)
    rules = [html.escape(s.rule) for s in steps]
    scheduled = any(v is not None for v in thr + sig)
    fig = go.Figure()
    if scheduled:
        fig.add_trace(go.Scatter(x=xs, y=sig, mode="lines+markers", name="signal", customdata=rules,
                                 line=dict(color=RUN_COLORS[0], width=2), marker=dict(size=5),
                                 hovertemplate="step %{x}: signal %{y:.3f}<br>rule: %{customdata}<extra></extra>"))
        fig.add_trace(go.Scatter(x=xs, y=thr, mode="lines+markers", name="threshold", marker=dict(size=4, color=INK_COLOR),
                                 line=dict(color=INK_COLOR, dash="dash", width=2),
                                 hovertemplate="step %{x}: threshold %{y:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=xs, y=mean, mode="lines", name="mean confidence of revealed cells",
                                 line=dict(color=LATTICE_STATE_COLORS["kept"][1], width=1.5),
                                 hovertemplate="step %{x}: revealed cells' mean confidence %{y:.3f}<extra></extra>"))
        title = "What the schedule compared each step<br><sup>its signal against the threshold</sup>"
    else:
        fig.add_trace(go.Scatter(x=xs, y=mean, mode="lines+markers", name="mean confidence of revealed cells",
                                 customdata=rules, line=dict(color=LATTICE_STATE_COLORS["kept"][1], width=2),
                                 marker=dict(size=5),
                                 hovertemplate="step %{x}: mean %{y:.3f}<br>rule: %{customdata}<extra></extra>"))
        fig.add_trace(go.Scatter(x=xs, y=low, mode="lines", name="lowest confidence revealed",
                                 line=dict(color=LATTICE_STATE_COLORS["remasked"][0], width=1.5),
                                 hovertemplate="step %{x}: min %{y:.3f}<extra></extra>"))
        title = "What the schedule compared each step<br><sup>no threshold: the confidence of the cells it revealed</sup>"
    for i, s in enumerate(steps):
        if is_all_in(s):
            fig.add_shape(type="line", name="all-in", x0=i, x1=i, y0=0, y1=1, yref="paper",
                          line=dict(color=LATTICE_ALL_IN_COLOR, width=2, dash="dot"))
            fig.add_annotation(name="all-in", x=i, y=1, yref="paper", yanchor="bottom", text="all-in", showarrow=False,
                               font=dict(size=10, color=LATTICE_ALL_IN_COLOR))
    values = [v for v in sig + thr + mean + low if v is not None]
    unit = bool(values) and min(values) >= 0 and max(values) <= 1
    fig.update_layout(
        title=title,
        height=260,
        xaxis=dict(title="step", range=[-0.5, len(steps) - 0.5], dtick=1 if len(steps) <= 30 else None),
        yaxis=dict(range=[0, 1.05]) if unit else dict(rangemode="tozero"),
        margin=dict(l=50, r=10, t=60, b=40),
        legend=dict(orientation="h", y=-0.3, x=0, font=dict(size=10)),
        plot_bgcolor=BACKGROUND,
    )
    return fig


MASKED_CELL_SPAN = f'<span class="sv-tok" style="color:{MUTED_COLOR}" title="masked">▢</span>'


def canvas_cell_span(position: int, token_id: int, piece: str, commit_step: int, now: bool,
                     pinned: bool = False) -> str:
    """The span of one committed canvas cell: `piece` is its text; `now`: committed at the step shown (blue),
    else earlier (green); `pinned`: a pin of the user's holds it (the user's colour, whatever the step)."""
    if pinned:
        color = LATTICE_USER_COLOR
        title = f"position {position} · pinned by you at step {commit_step} · id {token_id}"
    else:
        color = LATTICE_STATE_COLORS["revealed-now" if now else "kept"][1]
        title = f"position {position} · committed at step {commit_step} · id {token_id}"
    return f'<span class="sv-tok" style="border-bottom:2px solid {color}" title="{title}">{html.escape(piece)}</span>'


def canvas_spans_html(spans: list | None) -> str:
    """The canvas-text panel around already built cell spans (None: nothing run yet)."""
    if spans is None:
        return f'<div class="sv-text" style="color:{MUTED_COLOR}">The canvas text appears here.</div>'
    return '<div class="sv-text">' + "".join(spans) + "</div>"


def canvas_text_end(step) -> int:
    """How many cells the canvas text shows after `step`: through the first EOS, else the whole canvas."""
    return step.eos_at + 1 if step.eos_at >= 0 else step.length


def canvas_text_html(step, commit_step: np.ndarray, pieces: list) -> str:
    """The text on the canvas after `step`, one span per cell (masked cells as ▢); `commit_step[j]` is the step
    that committed cell j (`trace.commit_steps(steps, step.step)`), `pieces[j]` the text of `step.canvas[j]`."""
    spans = []
    for j in range(canvas_text_end(step)):
        tok = int(step.canvas[j])
        if tok < 0:
            spans.append(MASKED_CELL_SPAN)
        else:
            spans.append(canvas_cell_span(j, tok, str(pieces[j]), int(commit_step[j]), commit_step[j] == step.step,
                                          bool(step.pinned[j])))
    return canvas_spans_html(spans)


def diffusion_metrics_html(summary: dict, finish: str, backend: str, speedup: dict | None = None,
                           ar_pending: bool = False) -> str:
    """The metrics table of a diffusion or Jacobi run; `summary` comes from `summarize_diffusion`.

    `speedup` (Jacobi, from `runs.against_ar`): plain AR on the same model and prompt, timed after the run, as the
    CLI's lattice bench does; `ar_pending`: that measurement is still to come."""
    rows = [
        _row("tokens per forward", f"{summary['tokens_per_forward']:.2f}", "generated tokens to the first EOS ÷ model forwards"),
        _row("cells per forward", f"{summary['cells_per_forward']:.2f}",
             f"{summary['cells_revealed']} canvas cells filled, EOS padding included"),
        _row("tokens", str(summary["new_tokens"]), f"of a {summary.get('canvas_length', 0)}-cell canvas"
             + (f", stopped at {finish}" if finish else "")),
        _row("steps", str(summary["steps"])),
        _row("forwards", str(summary["forwards"])),
        _row("remasked", str(summary["remasked"]), "cells committed and then taken back"),
        *([_row("your pins", str(summary["pinned"]), "cells your pins hold at this point")] if summary.get("pinned")
          else []),
        *([_row("sent back by you", str(summary["sent_back"]), "cells you sent back to the mask")]
          if summary.get("sent_back") else []),
        _row("blocks", str(summary["blocks"])),
        _row("tok/s", f"{summary['tok_per_s']:.1f}",
             f"forward {summary.get('forward_ms', 0.0):.0f} ms + select {summary.get('select_ms', 0.0):.0f} ms"),
        _row("backend", backend),
    ]
    if speedup is not None:
        same = speedup.get("matches_ar")
        rows[1:1] = [
            _row("speedup vs AR", f"{speedup['ratio']:.2f}×", speedup.get("how", "")),
            _row("AR time", f"{speedup['ar_s']:.2f} s", f"this run {speedup['method_s']:.2f} s"),
            _row("greedy output = AR", {True: "yes", False: "NO", None: "–"}[same],
                 "Jacobi is lossless: greedy Jacobi reproduces greedy AR token for token" if same is not None
                 else "compared under greedy decoding only"),
        ]
    elif ar_pending:
        rows.insert(1, _row("speedup vs AR", "…", "plain AR on the same prompt is timed when the run ends"))
    return '<table class="sv-metrics">' + "".join(rows) + "</table>"
