"""The one palette: the same status or source gets the same colour in every view."""

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
SOURCE_COLORS = {
    "root": "#475569",
    "draft-model": "#2563eb",
    "early-exit": "#0891b2",
    "ngram": "#ca8a04",
    "retrieval:context": "#d97706",
    "retrieval:shipped": "#db2777",
    "retrieval:file": "#9333ea",
    "retrieval": "#be185d",  # several stores pooled
    "scripted": "#64748b",
    # trained drafters
    "eagle": "#16a34a",
    "medusa": "#7c3aed",
    "distilled-exit": "#0d9488",
}
DRAFT_COLOR = "#60a5fa"
TARGET_COLOR = "#1e293b"
ACCEPT_PROB_COLOR = "#f59e0b"


def source_color(source: str) -> str:
    # early-exit drafters are named early-exit-L<k>, distilled ones distilled-exit-L<k>
    key = "early-exit" if source.startswith("early-exit") else "distilled-exit" if source.startswith("distilled-exit") else source
    return SOURCE_COLORS.get(key, "#64748b")


def css() -> str:
    """Styles for the generated-text view, built from the palette."""
    rules = [
        ".sv-text{font-family:ui-monospace,Menlo,monospace;font-size:14px;line-height:1.9;white-space:pre-wrap;word-break:break-word}",
        ".sv-tok{border-radius:3px;padding:1px 0;cursor:help}",
        ".sv-legend span{margin-right:14px;font-size:12px}",
        ".sv-swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:middle}",
        ".sv-metrics td{padding:2px 10px 2px 0}.sv-metrics td:first-child{color:#64748b}",
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
LATTICE_BLOCK_COLOR = "#0f172a"  # block boundaries
LATTICE_CURRENT_COLOR = "#f59e0b"  # the scrubber's row
LATTICE_ALL_IN_COLOR = "#db2777"  # steps where the schedule committed everything left (early commit)
AR_REFERENCE_COLOR = "#64748b"  # the one-token-per-forward reference
RUN_COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#ca8a04")  # runs overlaid in one chart
