"""One palette: drafter rings never pass for a node status, and no view hard-codes a colour of its own."""
import ast
import itertools
import math
import re
from pathlib import Path

import pytest

from specviz.viz import palette
from specviz.viz.palette import (
    MIN_SOURCE_DISTANCE, MIN_SOURCE_STATUS_DISTANCE, OTHER_SOURCE_COLOR, SOURCE_COLORS, STATUS_PALETTE, source_color,
)

SPECVIZ = Path(__file__).resolve().parents[2] / "specviz"
VIZ = SPECVIZ / "viz"

# every source label the app's drafters write into `DraftTree.source` (decoding/registry.py, drafters.py,
# retrieval.py, trained_drafters.py, jacobi.py, tree_drafters.py), plus names of the families
APP_SOURCES = (
    "draft-model", "early-exit-L1", "early-exit-L20", "distilled-exit-L8", "ngram", "retrieval",
    "retrieval:context", "retrieval:shipped", "retrieval:file", "eagle", "medusa", "jacobi", "graft",
)


def rgb(color: str) -> tuple:
    h = color.lstrip("#")
    assert re.fullmatch(r"[0-9a-fA-F]{6}", h), f"{color!r} is not #rrggbb"
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def distance(a: str, b: str) -> float:
    return math.dist(rgb(a), rgb(b))


def source_labels_in_code() -> set:
    """Retrieval store names written as literals in the decoding code and the runner ("retrieval:shipped", …)."""
    names = set()
    for f in [*sorted((SPECVIZ / "decoding").rglob("*.py")), SPECVIZ / "runner.py"]:
        if f.exists():
            names |= set(re.findall(r"""["'](retrieval:[a-z_]+)["']""", f.read_text()))
    return names


@pytest.mark.parametrize("source", sorted({*APP_SOURCES, *source_labels_in_code()}))
def test_app_sources_have_their_own_colour_far_from_every_status(source):
    color = source_color(source)
    assert color != OTHER_SOURCE_COLOR, f"{source} falls back to the catch-all colour"
    for status, status_color in STATUS_PALETTE.items():
        d = distance(color, status_color)
        assert d >= MIN_SOURCE_STATUS_DISTANCE, f"{source} {color} is {d:.0f} from status {status} {status_color}"


def test_fallback_and_every_listed_source_stay_clear_of_statuses():
    for name, color in [*SOURCE_COLORS.items(), ("other", OTHER_SOURCE_COLOR)]:
        nearest = min(distance(color, c) for c in STATUS_PALETTE.values())
        assert nearest >= MIN_SOURCE_STATUS_DISTANCE, f"{name} {color}: {nearest:.0f} from a status colour"
    # the case that prompted the rule: an accepted node drafted by EAGLE is no longer green on green
    assert distance(source_color("eagle"), palette.STATUS_COLORS["accepted"]) >= MIN_SOURCE_STATUS_DISTANCE


def test_no_source_colour_is_a_status_or_kind_colour():
    """The plain rule under the distances: a ring (EAGLE's, Medusa's, any drafter's) never takes the colour of a
    node status or of the bonus / correction star, the way EAGLE's ring once was the accepted green."""
    statuses = {c.lower() for c in [*palette.STATUS_COLORS.values(), *palette.KIND_COLORS.values()]}
    for source in {*APP_SOURCES, *source_labels_in_code(), "something-new"}:
        assert source_color(source).lower() not in statuses, source


def test_sources_are_told_apart_from_each_other():
    colors = {**SOURCE_COLORS, "other": OTHER_SOURCE_COLOR}
    for (a, ca), (b, cb) in itertools.combinations(colors.items(), 2):
        assert distance(ca, cb) >= MIN_SOURCE_DISTANCE, f"{a} {ca} and {b} {cb} are {distance(ca, cb):.0f} apart"


def test_root_ring_is_its_fill_and_families_share_a_colour():
    assert source_color("root") == palette.STATUS_COLORS["root"]
    assert source_color("early-exit-L3") == source_color("early-exit-L20") == SOURCE_COLORS["early-exit"]
    assert source_color("distilled-exit-L8") == SOURCE_COLORS["distilled-exit"]
    assert source_color("something-new") == OTHER_SOURCE_COLOR


HEX = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?(?:[0-9a-fA-F]{2})?\b")
FUNCTIONAL = re.compile(r"\b(?:rgba?|hsla?)\s*\(", re.I)
NAMED = {"white", "black", "red", "green", "blue", "orange", "purple", "violet", "grey", "gray", "yellow", "pink",
         "brown", "cyan", "magenta", "navy", "teal", "lime", "olive", "maroon", "silver", "gold", "transparent",
         "lightgray", "lightgrey", "darkgray", "darkgrey", "crimson", "indigo", "salmon", "tomato"}
CSS_NAMED = re.compile(r"(?:color|background|border[a-z-]*|outline)\s*:[^;\"'{}]*\b(" + "|".join(NAMED) + r")\b", re.I)


def colour_literals(path: Path) -> list:
    """(line, text) of every string constant (f-string parts included) that spells a colour."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if HEX.search(text) or FUNCTIONAL.search(text) or text.strip().lower() in NAMED or CSS_NAMED.search(text):
                found.append((node.lineno, text))
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in VIZ.glob("*.py") if p.name != "palette.py"))
def test_no_colour_literal_outside_the_palette(module):
    assert colour_literals(VIZ / module) == [], f"viz/{module} spells colours itself; name them in viz/palette.py"


def test_the_literal_finder_finds_colours():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "m.py"
        f.write_text('a = "#0f172a"\nb = f"<i style=\'color:white\'>{a}</i>"\nc = "rgba(0,0,0,0)"\nd = "white"\n'
                     'e = "commit #12 at step 3"\ng = "white-space:pre"\n')
        assert sorted(line for line, _ in colour_literals(f)) == [1, 2, 3, 4]
