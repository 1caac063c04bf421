"""Loading traces from elsewhere: every mutated trace is either refused with a clean message naming the
problem, or it loads, keeps the record contract and renders in every view. Nothing else escapes."""
import copy
import json
import math

import numpy as np
import pytest

from specviz.config import SamplingConfig
from specviz.decoding.engine import decode
from specviz.decoding.registry import get_method
from specviz.trace import Trace, TraceError, check_invariants
from specviz.viz.live import LatticeLiveView, SpecLiveView
from specviz.viz.mask import ancestor_mask_html

from .conftest import PROMPTS, tiny_drafter, tiny_settings


@pytest.fixture(scope="module")
def sources(tiny):
    from specviz.decoding.diffusion import DiffusionConfig, diffuse
    from specviz.decoding.schedules import ScheduleParams

    from .decoding.test_diffusion import PROMPT, tiny_family_model

    sampled = SamplingConfig(0.9, 1.0, 3)
    spec = decode(tiny, tiny_drafter(get_method("dynamic_tree"), tiny, sampled), PROMPTS[0],
                  tiny_settings("dynamic_tree", 16, sampled))
    greedy = decode(tiny, tiny_drafter(get_method("ngram_tree"), tiny), PROMPTS[1], tiny_settings("ngram_tree", 16))
    lm = tiny_family_model("llada", eos_ids=(7,))
    diffusion = diffuse(lm, PROMPT, DiffusionConfig(schedule="threshold", gen_length=12, block_size=4, steps=6,
                                                    params=ScheduleParams(threshold=0.05)))
    # a run the user pinned and sent a cell back in: the fields of interventions get fuzzed too
    from specviz.decoding.diffusion import DiffusionDecoder

    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig(schedule="low_confidence", gen_length=12, block_size=4, steps=6))
    dec.pin(5, 40)
    dec.step()
    dec.remask(int(np.flatnonzero((dec.canvas >= 0) & ~dec.pinned)[0]))
    for _ in dec.steps():
        pass
    touched = dec.trace()
    assert touched.steps[1].intervention.any()
    return [json.loads(t.to_json()) for t in (spec, greedy, diffusion, touched)]


def _paths(node, prefix=()):
    """Every (path, value) in a JSON tree, lists sampled so the count stays bounded."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list) and node:
        for i in sorted({0, len(node) // 2, len(node) - 1}):
            yield from _paths(node[i], prefix + (i,))


def _set(doc, path, value):
    doc = copy.deepcopy(doc)
    node = doc
    for p in path[:-1]:
        node = node[p]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()
REPLACEMENTS = [_DELETE, None, "x", -7, 2**40, 1.5, math.nan, math.inf, [], {}, True, [[1, 2]], [None, "a"]]


def mutations(doc):
    """Mutated JSON texts of one trace: replaced or deleted fields, structural breaks, truncation."""
    rng = np.random.default_rng(0)
    paths = [p for p, _ in _paths(doc) if p]
    for path in rng.permutation(len(paths))[:60]:
        path = paths[path]
        for value in rng.choice(len(REPLACEMENTS), 3, replace=False):
            yield f"{path} <- {REPLACEMENTS[value]!r}", json.dumps(_set(doc, path, REPLACEMENTS[value]))
    text = json.dumps(doc)
    for cut in (1, len(text) // 3, len(text) - 1):
        yield f"truncated at {cut}", text[:cut]
    yield "empty", ""
    yield "a list", "[]"
    yield "deep nesting", "[" * 100_000 + "]" * 100_000
    yield "not utf-8", b"\xff\xfe\x00trace"
    steps = doc["steps"]
    yield "no steps", json.dumps({**doc, "steps": []})
    yield "steps reversed", json.dumps({**doc, "steps": steps[::-1]})
    yield "a huge array", json.dumps(_set(doc, ("prompt_ids",), list(range(5_000_000))))
    if "tree" in steps[0]:
        n = len(steps[-1]["tree"]["parent"])
        yield "forward parent", json.dumps(_set(doc, ("steps", len(steps) - 1, "tree", "parent"), [-1] + [n] * (n - 1)))
        yield "a cycle", json.dumps(_set(doc, ("steps", 0, "tree", "parent"), [-1, 2, 1] + list(range(2, n - 1))))
        yield "status NaN", json.dumps(_set(doc, ("steps", 0, "status", 0), math.nan))


def render(trace):
    """Every view of every step, as the app draws a replayed trace (token labels are their ids)."""
    if trace.kind == "diffusion":
        view = LatticeLiveView()
        for s in trace.steps:
            view.add(s, [str(t) for t in s.canvas], [str(t) for t in s.proposal])
        for k in range(len(trace.steps)):
            view.full(k)
    else:
        view = SpecLiveView()
        for s in trace.steps:
            view.add(s, [str(t) for t in s.tree.token_ids], str(s.bonus_token), [str(t) for t in s.committed_ids])
        for k, s in enumerate(trace.steps):
            view.full(k)
            # what a click and the accordions show: every node's card, the bonus's, the ancestor mask
            for node in [*range(s.tree.size), "bonus"]:
                view.node_card(k, node)
            ancestor_mask_html(s, view.node_labels[k])
    trace.summary()


def test_mutated_traces_load_cleanly_or_are_refused_clearly(sources):
    loaded = refused = 0
    escaped = []
    for doc in sources:
        for label, text in mutations(doc):
            try:
                trace = Trace.from_json(text)
            except TraceError as err:
                message = str(err)
                assert message and len(message) < 500 and "Traceback" not in message, (label, message)
                refused += 1
                continue
            except Exception as err:  # noqa: BLE001 - the point: anything else is a defect
                escaped.append((label, repr(err)[:200]))
                continue
            try:
                if trace.steps:
                    check_invariants(trace)
                render(trace)
                loaded += 1
            except Exception as err:  # noqa: BLE001
                escaped.append((label, f"loaded but broke: {err!r}"[:200]))
    assert not escaped, escaped[:10]
    print(f"trace fuzz: {loaded + refused} mutated traces: {loaded} loaded and rendered, {refused} refused")
    assert loaded + refused >= 200 and refused >= 100 and loaded >= 20, (loaded, refused)


def test_real_traces_round_trip(sources):
    for doc in sources:
        trace = Trace.from_json(json.dumps(doc))
        render(trace)
        assert json.loads(trace.to_json())["steps"] == doc["steps"]
