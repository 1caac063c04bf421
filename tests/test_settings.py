"""Run settings: one frozen object per run, built from a flat JSON dict with defaults, refusing unknown fields,
round-tripping through JSON and travelling in the trace; knobs are shared, typed and say whether they are live."""
import json

import pytest

from specviz.config import LATTICE_KNOBS, ConfigError
from specviz.decoding.registry import METHODS
from specviz.settings import DEFAULT_METHOD, LatticeSettings, RunSettings, settings_from_trace

from .conftest import TINY_KNOBS


def test_empty_settings_are_the_default_run():
    s = RunSettings.from_dict({})
    assert s == RunSettings.from_dict(None)
    assert s.method == DEFAULT_METHOD and s.knobs == METHODS[DEFAULT_METHOD].check_knobs({})
    two = RunSettings.from_dict({"method": "retrieval", "max_new_tokens": 16})
    assert two.method == "retrieval" and two.max_new_tokens == 16
    assert two.knobs == METHODS["retrieval"].check_knobs({}) and two.temperature == 0.0


@pytest.mark.parametrize("name", list(METHODS))
def test_settings_round_trip_through_json(name):
    s = RunSettings.from_dict({"method": name, "temperature": 0.7, "seed": 3})
    again = RunSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s
    # the method's own knob defaults (EAGLE's 60-node tree) fill what the dict leaves out
    assert s.knobs == {k.name: METHODS[name].default(k) for k in METHODS[name].knobs}


def test_lattice_settings_round_trip_and_typed_knobs():
    s = LatticeSettings.from_dict({"schedule": "threshold", "adaptive_block": "on", "gen_length": 24})
    assert s.knobs["adaptive_block"] is True and s.gen_length == 24 and s.model == "tiny-mdm"
    assert LatticeSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    jacobi = LatticeSettings.from_dict({"method": "jacobi"})
    assert set(jacobi.knobs) == {"window"} and jacobi.model.startswith("embedded:")


@pytest.mark.parametrize("data,message", [
    ({"colour": "red"}, "has no field(s) 'colour'"),
    ({"method": "ar", "depth": 3}, "'depth' (a knob of dynamic_tree"),
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"method": ["sps"]}, "method must be text"),
    ({"budget": 3.5, "method": "dynamic_tree"}, "budget must be a whole number"),
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"temperature": True}, "temperature must be a number"),
    ({"max_new_tokens": 10**400}, "max_new_tokens must be a number"),
    ({"seed": "x"}, "seed must be a number"),
    ({"method": "prompt_lookup", "draft": "some/model"}, "does not use a draft model"),
    ({1: 2}, "field names must be text"),
])
def test_bad_settings_get_a_clear_message(data, message):
    with pytest.raises(ConfigError) as err:
        RunSettings.from_dict(data)
    assert message in str(err.value)


def test_settings_must_be_an_object():
    for bad in ([1], "sps", 3):
        with pytest.raises(ConfigError, match="settings must be a JSON object"):
            RunSettings.from_dict(bad)


def test_only_live_knobs_change_mid_run():
    s = RunSettings.from_dict({"method": "dynamic_tree"})
    assert s.live_changes(s) == {}
    assert s.live_changes(s.changed(budget=12, depth=3)) == {"budget": 12, "depth": 3}
    assert s.live_changes(s.changed(exit_layer=10)) is None  # another drafter: a new run
    assert s.live_changes(s.changed(temperature=0.5)) is None
    assert s.live_changes(RunSettings.from_dict({"method": "graft"})) is None


def test_methods_that_share_a_knob_share_its_definition():
    seen = {}
    for m in METHODS.values():
        for k in m.knobs:
            assert seen.setdefault(k.name, k) is k, f"{m.name} redefines the knob {k.name!r}"
    for k in LATTICE_KNOBS:
        assert seen.setdefault(k.name, k) is k, f"the lattice knob {k.name!r} differs from a method's"


def test_boolean_knobs_are_booleans():
    for k in [k for m in METHODS.values() for k in m.knobs] + list(LATTICE_KNOBS):
        if k.boolean:
            assert isinstance(k.default, bool), k.name
        assert set(k.choices) != {"on", "off"}, f"{k.name} is a switch: make it boolean"


def test_tiny_knobs_cover_every_method():
    """Every method-wide suite reads TINY_KNOBS: a registered method missing from it would escape them."""
    assert set(TINY_KNOBS) == set(METHODS)
    for name, knobs in TINY_KNOBS.items():
        METHODS[name].check_knobs(knobs)


def test_a_trace_reproduces_its_settings(tiny):
    from specviz.decoding.engine import decode

    from .conftest import PROMPTS, tiny_drafter

    s = RunSettings.from_dict({"method": "dynamic_tree", "exit_layer": 2, "budget": 7, "max_new_tokens": 6})
    tr = decode(tiny, tiny_drafter(METHODS["dynamic_tree"], tiny, knobs=s.knobs), PROMPTS[0], s)
    from specviz.trace import Trace

    again = Trace.from_json(tr.to_json())
    assert again.settings == s.to_dict() and settings_from_trace(again) == s


def test_one_model_directory_loads_once_however_it_is_spelled(tmp_path, monkeypatch):
    from specviz.models import ModelStore

    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (tmp_path / "link").symlink_to(model_dir)
    loaded = []
    store = ModelStore(loader=lambda key: loaded.append(key) or key)
    monkeypatch.chdir(tmp_path)
    for spelling in (str(model_dir), f"{model_dir}/", "my-model", "./my-model/", " my-model ", "link"):
        assert store.get(spelling) == str(model_dir.resolve())
    assert loaded == [str(model_dir.resolve())]
    assert store.get("EMBEDDED:SmolLM2-135M-Instruct") == store.get(None) and len(loaded) == 2


@pytest.mark.parametrize("data,message", [
    ({"method": "static_tree", "preset": ";".join(str(r) for r in range(300))}, "at most 256 nodes"),
    ({"method": "static_tree", "preset": "x" * 20_000}, "preset is 20,000 characters; the limit is 10,000"),
    ({"method": "static_tree", "preset": 5}, "preset must be text"),
])
def test_tree_shapes_and_text_fields_are_capped(data, message):
    from specviz.decoding.shapes import parse_shape

    with pytest.raises(ValueError) as err:
        settings = RunSettings.from_dict(data)
        parse_shape(settings.knobs["preset"])
    assert message in str(err.value)
