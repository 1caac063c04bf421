"""Intervening through the API, as an outside client does: a draft edit forks the run, the branch stays equal to
plain greedy AR, the original is kept beside it, and bad edits get a message."""
import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

PROMPT = "Rewrite this code to be shorter: for i in range(len(xs)): print(xs[i])"
# lesson 2's chain: the 24-layer early exit accepts some drafts and misses others
SETTINGS = {"method": "sps", "exit_layer": 24, "draft_len": 4, "max_new_tokens": 24}
# outputs of /intervene and /branch: the branch picker, the branches table, then the tab's outputs (the session
# state is not an output): status, text, slider, tree, node card, …, and last the run summary
BRANCH, TABLE, STATUS, TREE = 0, 1, 2, 5


@pytest.fixture()
def client(app_url):
    return Client(app_url, verbose=False)


def _trace(client) -> dict:
    return json.loads(Path(client.predict(api_name="/export")).read_text())


def _accepting_step(trace):
    for k, s in enumerate(trace["steps"]):
        if s["accepted_path"]:
            return k, s
    raise AssertionError("no step accepted a draft")


def test_a_draft_edit_forks_the_run_and_stays_equal_to_ar(client):
    original = client.predict(prompt=PROMPT, settings=SETTINGS, api_name="/run")[-1]
    assert original["speedup_vs_ar"]["matches_ar"] is True
    k, step = _accepting_step(_trace(client))
    node = step["accepted_path"][0]
    drafted = step["tree"]["token_ids"][node]
    wrong = 28 if drafted != 28 else 29  # ',' : not what the target wanted here
    out = client.predict("replace", k, node, None, f"#{wrong}", api_name="/intervene")
    assert out[BRANCH]["value"] == f"branch 1: replace at step {k}"
    assert "verified again" in out[STATUS] and "paused" in out[STATUS]
    assert "✎" in out[TREE] and "You replaced the draft" in out[TREE]
    assert f"{len(step['accepted_path'])} → 0" in out[TABLE]
    # Run carries the branch on to its end; it is still the target's text
    branch = client.predict(prompt=PROMPT, settings=SETTINGS, api_name="/run")[-1]
    assert branch["output_ids"] == original["output_ids"]
    assert branch["speedup_vs_ar"]["matches_ar"] is True
    trace = _trace(client)
    edit = trace["steps"][k]["intervention"]
    assert edit == {"kind": "replace", "node": node, "token": wrong, "was": drafted, "removed": 0,
                    "accepted_before": len(step["accepted_path"])}
    assert trace["steps"][k]["tree"]["source"][node] == "you"
    assert not trace["steps"][k]["accepted_path"]
    # the original is kept: switch back to it, then cut a node of the same step in a second branch
    back = client.predict("original", api_name="/branch")
    assert back[-1]["output_ids"] == original["output_ids"]
    assert "intervention" not in json.dumps(back[-1]["summary"])
    cut = client.predict("cut", k, node, None, "", api_name="/intervene")
    assert cut[BRANCH]["choices"][-1][0] == f"branch 2: cut at step {k}"
    assert "✂ You cut the draft" in cut[TREE]
    done = client.predict(prompt=PROMPT, settings=SETTINGS, api_name="/run")[-1]
    assert done["output_ids"] == original["output_ids"]
    # a trace with an edit replays with its mark
    client.predict(handle_file(_export_path(client)), api_name="/open_trace")
    scrubbed = client.predict(k, api_name="/scrub")  # the scrub outputs start at the status line
    assert "✂ You cut the draft" in scrubbed[TREE - 2]


def _export_path(client):
    return client.predict(api_name="/export")


def test_typing_a_token_and_sampled_runs(client):
    sampled = {**SETTINGS, "temperature": 0.8, "seed": 5}
    client.predict(prompt=PROMPT, settings=sampled, api_name="/step")
    client.predict(prompt=PROMPT, settings=sampled, api_name="/step")
    trace = _trace(client)
    k = next(k for k, s in enumerate(trace["steps"]) if len(s["tree"]["token_ids"]) > 1)
    out = client.predict("replace", k, 1, None, " the", api_name="/intervene")
    assert "verified again" in out[STATUS]
    result = client.predict(prompt=PROMPT, settings=sampled, api_name="/run")[-1]
    assert result["finished"] and len(result["output_ids"]) <= SETTINGS["max_new_tokens"]
    edited = _trace(client)["steps"][k]
    assert edited["intervention"]["kind"] == "replace" and edited["tree"]["source"][1] == "you"


@pytest.mark.parametrize("args,message", [
    (("replace", 0, 1, None, "#5"), "nothing is recorded yet"),
], ids=["before-a-run"])
def test_an_edit_before_a_run_is_refused(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/intervene")


def test_bad_edits_get_a_message_and_the_run_carries_on(client):
    client.predict(prompt=PROMPT, settings=SETTINGS, api_name="/run")
    k, step = _accepting_step(_trace(client))
    n = len(step["tree"]["token_ids"])
    cases = [
        (("replace", 10_000, 1, None, "#5"), "step 10000 is not recorded"),
        (("replace", k, 0, None, "#5"), "node 0 is the root"),
        (("replace", k, n, None, "#5"), f"no drafted node {n}"),
        (("replace", k, 1, None, " unbelievably"), "is 3 tokens"),
        (("replace", k, 1, None, "#99999999"), "outside the model.s vocabulary"),
        (("replace", k, 1, None, ""), "pick a candidate or type"),
        (("replace", k, 1, None, f"#{step['tree']['token_ids'][1]}"), "already drafted"),
        (("replace", 1.5, 1, None, "#5"), "whole number"),
    ]
    for args, message in cases:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/intervene")
    with pytest.raises(Exception, match="no branch called|not in the list of choices"):
        client.predict("branch 7", api_name="/branch")
    # the session still works: a real edit goes through
    assert "verified again" in client.predict("cut", k, 1, None, "", api_name="/intervene")[STATUS]


def test_a_run_keeps_a_bounded_number_of_branches(client):
    """Each branch holds a decoder and its KV cache in the session: a client editing in a loop hits a limit."""
    from specviz.ui.intervene import MAX_BRANCHES

    short = {**SETTINGS, "max_new_tokens": 12}
    client.predict(prompt=PROMPT, settings=short, api_name="/run")
    k = next(k for k, s in enumerate(_trace(client)["steps"]) if len(s["tree"]["token_ids"]) > 1)
    for i in range(1, MAX_BRANCHES):
        out = client.predict("cut", k, 1, None, "", api_name="/intervene")
        assert out[BRANCH]["choices"][-1][0].startswith(f"branch {i}:")
        client.predict("original", api_name="/branch")  # a cut branch's step k has nothing left to cut
    with pytest.raises(Exception, match=f"{MAX_BRANCHES} branches already"):
        client.predict("cut", k, 1, None, "", api_name="/intervene")
    client.predict(api_name="/reset")
    client.predict(prompt=PROMPT, settings=short, api_name="/run")  # a new run starts with no branches
    assert "verified again" in client.predict("cut", k, 1, None, "", api_name="/intervene")[STATUS]


def test_a_replayed_trace_cannot_be_edited(client):
    from specviz.ui.controller import EXAMPLE_TRACES, example_traces

    label = next(iter(example_traces("speculative")))
    client.predict(label, api_name="/open_example")
    with pytest.raises(Exception, match="opened from a trace file"):
        client.predict("cut", 0, 1, None, "", api_name="/intervene")
    assert EXAMPLE_TRACES.exists()
