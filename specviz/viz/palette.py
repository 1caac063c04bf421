"""The one palette: the same status or source gets the same colour in every view.

Every colour the views draw is named here; the other viz modules import these names and contain no colour
literal of their own (tests/viz/test_palette.py checks both that and the rule below).

Status colours (root / accepted / rejected / never reached, and the bonus / correction token) fill the
tree's nodes; source colours ring them, naming the drafter that proposed the node. A ring must never read
as a status, so every source colour keeps a Euclidean RGB distance of at least `MIN_SOURCE_STATUS_DISTANCE`
from every status colour, and the sources keep `MIN_SOURCE_DISTANCE` from each other.
"""

# --- neutrals --------------------------------------------------------------------------------------
BACKGROUND = "white"  # plot background
INK_COLOR = "#0f172a"  # text, outlines, reference lines
SUBTLE_COLOR = "#64748b"  # secondary text, annotations
MUTED_COLOR = "#94a3b8"  # placeholder text, tried-but-not-taken edges, collapsed markers
BAR_TRACK_COLOR = "#e2e8f0"  # the empty part of a probability bar
MASKED_PAIR_COLOR = "#f1f5f9"  # an attention pair the ancestor mask cuts
SHOWN_ROW_COLOR = "#f1f5f9"  # the row of the branch on show (viz/branches.py)
TRANSPARENT = "rgba(0,0,0,0)"
MARK_ON_DARK_COLOR = "white"  # marks drawn on strongly coloured cells (commit order)

# --- status of a draft-tree node, and how the step's last token came about --------------------------
STATUS_COLORS = {
    "root": "#475569",
    "accepted": "#16a34a",
    "rejected": "#dc2626",
    "never-reached": "#cbd5e1",
}
# the target's own token at the end of a step
KIND_COLORS = {
    "accepted": STATUS_COLORS["accepted"],
    "bonus": "#7c3aed",
    "correction": "#ea580c",
}
KIND_LABELS = {
    "accepted": "accepted draft token",
    "bonus": "bonus token (all drafts accepted, or none drafted)",
    "correction": "token drawn after a rejection",
}
# every colour a node's fill or the step's final star can take
STATUS_PALETTE = {**STATUS_COLORS, **KIND_COLORS}


def status_text_color(status: str) -> str:
    """The text colour on a node filled with a status (or kind) colour: light fills take ink, strong ones white."""
    return INK_COLOR if status == "never-reached" else MARK_ON_DARK_COLOR

# --- which drafter proposed a node (the ring around it) --------------------------------------------
# Adjacent shades of one hue (green-600 / green-700, slate-600 / slate-500 …) lie 32-54 apart in RGB and
# read as "the same colour"; 80 is half again the widest of those, so a ring never passes for a status.
MIN_SOURCE_STATUS_DISTANCE = 80.0
MIN_SOURCE_DISTANCE = 60.0  # sources that share a tree (graft: a model plus retrieval stores) stay apart
SOURCE_COLORS = {
    "draft-model": "#2563eb",  # blue
    "early-exit": "#0891b2",  # cyan: early-exit-L<k>
    "distilled-exit": "#38bdf8",  # sky: distilled-exit-L<k>
    "ngram": "#eab308",  # yellow: prompt lookup and the n-gram trie
    "retrieval:context": "#84cc16",  # lime
    "retrieval:shipped": "#f472b6",  # pink
    "retrieval:file": "#831843",  # wine
    "retrieval": "#5eead4",  # aqua: several stores pooled
    "graft": "#4d7c0f",  # olive
    "jacobi": "#78350f",  # brown
    # trained drafters
    "eagle": INK_COLOR,  # near black
    "medusa": "#d946ef",  # fuchsia
    # a token a user put in (trace.USER_SOURCE), its ring also dashed (`EDIT_DASH`)
    "you": "#0000aa",  # navy
}
EDIT_DASH = "4 3"  # the stroke dash of an edited node's ring and of the text's edited tokens
EDIT_MARK = "✎"  # the glyph of a token a user put in
CUT_MARK = "✂"  # the glyph of a node a user cut
OTHER_SOURCE_COLOR = "#a8a29e"  # stone: any other drafter (tests' scripted drafters, future ones)

DRAFT_COLOR = "#60a5fa"
TARGET_COLOR = "#1e293b"
ACCEPT_PROB_COLOR = "#f59e0b"
ACCEPT_PROB_EDGE_COLOR = "#78350f"
ACCEPT_RATE_COLOR = "#86efac"  # per-node acceptance rate beside the path reach (depth chart)


def source_color(source: str) -> str:
    """The ring colour of a node proposed by `source` (the root's ring is its fill)."""
    if source == "root":
        return STATUS_COLORS["root"]
    # early-exit drafters are named early-exit-L<k>, distilled ones distilled-exit-L<k>
    for family in ("early-exit", "distilled-exit"):
        if source.startswith(family):
            return SOURCE_COLORS[family]
    return SOURCE_COLORS.get(source, OTHER_SOURCE_COLOR)


def css() -> str:
    """Styles for the generated-text view, built from the palette."""
    rules = [
        ".sv-text{font-family:ui-monospace,Menlo,monospace;font-size:14px;line-height:1.9;white-space:pre-wrap;word-break:break-word}",
        ".sv-tok{border-radius:3px;padding:1px 0;cursor:help}",
        ".sv-legend span{margin-right:14px;font-size:12px}",
        ".sv-swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:middle}",
        f".sv-metrics td{{padding:2px 10px 2px 0}}.sv-metrics td:first-child{{color:{SUBTLE_COLOR}}}",
        # the draft tree (viz/tree.py): a legend row above a scroll box, so neither overlaps the other
        ".sv-tree-title{font-weight:600;font-size:14px;margin:2px 0 4px}",
        ".sv-tree-legend{display:flex;flex-wrap:wrap;gap:2px 14px;font-size:12px;margin-bottom:4px}",
        ".sv-tree-edit{font-size:13px;margin:2px 0 6px;padding:4px 8px;border-left:3px dashed " + INK_COLOR + ";background:#f8fafc}",
        ".sv-branch-table th{text-align:left;font-weight:600;padding:2px 10px 2px 0;font-size:12px}.sv-branch-table td{font-size:13px}",
        f".sv-ring{{background:{BACKGROUND};border:3px solid;border-radius:50%;box-sizing:border-box}}",
        f".sv-tree-scroll{{overflow:auto;border:1px solid {BAR_TRACK_COLOR};border-radius:6px;background:{BACKGROUND}}}",
        ".sv-tree-scroll svg{display:block}",
        f".sv-tree-hint,.sv-tree-empty,.sv-card-empty{{font-size:12px;color:{SUBTLE_COLOR};margin-top:4px}}",
        ".sv-tree-empty{padding:24px 8px;font-size:14px}",
        ".sv-node{cursor:pointer;outline:none}",
        ".sv-node:hover rect,.sv-node:focus rect{stroke-width:5}",
        f".sv-node.sv-selected{{filter:drop-shadow(0 0 4px {ACCEPT_PROB_COLOR})}}",
        ".sv-edge-path{stroke-width:3.5}.sv-edge-tried{stroke-width:1.5}",
        ".sv-edge-unreached{stroke-width:1.2;stroke-dasharray:2 3}.sv-edge-bonus{stroke-width:2.5;stroke-dasharray:6 3}",
        ".sv-more{font-size:11px}",
        # the node card and the rejection-sampling panel (viz/node_card.py)
        ".sv-card{font-size:13px;line-height:1.5}.sv-card-head{font-size:16px;margin-bottom:4px}.sv-card h4{margin:6px 0 2px;font-size:13px}",
        ".sv-card table{border-collapse:collapse;margin:2px 0 6px;width:auto;border:none}",
        # Gradio's own table rules outrank a class selector: without !important every cell gets a frame
        f".sv-card table,.sv-card td,.sv-card th{{border:none!important}}"
        f".sv-card td,.sv-card th{{padding:1px 10px 1px 0;text-align:left;vertical-align:top;background:none}}"
        f".sv-card tr{{border:none!important;border-bottom:1px solid {BAR_TRACK_COLOR}!important;background:none}}"
        f".sv-card th{{color:{SUBTLE_COLOR};font-weight:normal}}",
        ".sv-card .sv-tokname{font-family:ui-monospace,Menlo,monospace;white-space:pre}",
        f".sv-pbar{{display:inline-block;width:80px;height:8px;background:{BAR_TRACK_COLOR};vertical-align:middle;"
        f"border-radius:2px;margin-right:4px}}.sv-pbar i{{display:block;height:100%;border-radius:2px}}",
        ".sv-badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px}",
        f".sv-note{{color:{SUBTLE_COLOR};font-size:12px}}",
    ]
    for kind, color in KIND_COLORS.items():
        rules.append(f".sv-{kind}{{background:{color}26;border-bottom:2px solid {color}}}")
    return "\n".join(rules)


# --- diffusion / Jacobi lattice (viz/lattice.py) -------------------------------------------------
# each cell state gets a band from light (low signal: unsure) to strong (high signal: confident)
LATTICE_STATE_COLORS = {
    "masked": ("#f1f5f9", "#94a3b8"),  # grey: tone = how confident the proposal under the mask is
    "revealed-now": ("#93c5fd", "#1e3a8a"),  # strong blue: committed this step
    "kept": ("#dcfce7", "#15803d"),  # green: committed earlier, tone = signal when it was committed
    "remasked": ("#fdba74", "#b91c1c"),  # orange to red: committed earlier, taken back this step
}
# what the user did (pinned a token, sent a cell back to the mask): one colour that no cell state or overlay uses
LATTICE_USER_COLOR = "#6d28d9"
LATTICE_BLOCK_COLOR = "#0f172a"  # block boundaries
LATTICE_CURRENT_COLOR = "#f59e0b"  # the scrubber's row
LATTICE_ALL_IN_COLOR = "#db2777"  # steps where the schedule committed everything left (early commit)
AR_REFERENCE_COLOR = "#64748b"  # the one-token-per-forward reference
RUN_COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#ca8a04")  # runs overlaid in one chart

# --- the what-if panel (viz/whatif.py) ---------------------------------------------------------------
WHATIF_RUN_COLOR = STATUS_COLORS["accepted"]  # this run: its bar, and the dashed line at its τ
WHATIF_FAMILY_COLORS = {
    "this run": WHATIF_RUN_COLOR,
    "model chain": "#0891b2",
    "model static tree": "#2563eb",
    "fitted to this run": "#7c3aed",
    "model-free": "#ca8a04",
}

# --- the cost model (viz/costs.py) -------------------------------------------------------------------
COST_CURVE_COLOR = "#2563eb"  # this machine's forward time against tokens scored
COST_RUN_COLOR = WHATIF_RUN_COLOR  # where this run sits on the curve
