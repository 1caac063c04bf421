"""The Compare tab through gradio_client: a four-lane race in lockstep, the AR check and speedups from the same
run, bad lanes refused by name, export and reopen without the model, and two sessions racing side by side."""
import json
import threading

import pytest
from gradio_client import Client, handle_file

from .test_browser import browser  # noqa: F401 - the shared headless Chromium fixture

PROMPT = "Name three fruits."
N = 6  # tokens per lane: enough for trees to draft, small for the test's time


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def _compare(client, lanes, prompt=PROMPT):
    return client.predict(prompt=prompt, lanes=lanes, api_name="/compare")


def test_demo_has_the_compare_endpoints():
    from specviz.models import ModelStore
    from specviz.ui import build_demo

    demo = build_demo(ModelStore(loader=lambda _: (_ for _ in ()).throw(AssertionError("no loading at build"))))
    names = {d["api_name"] for d in demo.config["dependencies"] if d.get("api_name")}
    assert {"compare", "compare_step", "compare_pause", "compare_reset", "compare_scrub", "compare_export",
            "compare_open"} <= names


def test_four_lanes_race_to_the_end_and_speculative_lanes_equal_ar(client, embedded, tmp_path):
    lanes = [{"method": "ar", "max_new_tokens": N}, {"method": "ngram_tree", "max_new_tokens": N},
             {"method": "jacobi", "gen_length": N, "window": 4},
             {"method": "diffusion", "schedule": "threshold", "gen_length": 8, "block_size": 8, "steps": 4,
              "threshold": 0.4}]
    out = _compare(client, lanes)
    result = out[-1]
    assert "finished (every lane done)" in out[0]
    assert [r["label"] for r in result] == ["1 · AR", "2 · ngram_tree", "3 · Jacobi (window 4)",
                                            "4 · diffusion · threshold"]
    ar, tree, jacobi, diffusion = result
    # every lane ran: tokens, forwards, its own decode time
    assert ar["tokens"] == tree["tokens"] == jacobi["tokens"] == N and diffusion["tokens"] >= 1
    assert ar["forwards"] == N and all(r["forwards"] >= 1 and r["wall_s"] > 0 for r in result)
    assert diffusion["forwards"] <= 8 and diffusion["kind"] == "lattice"
    # lossless lanes keep greedy AR's output; the diffusion lane is another model
    assert ar["equals_ar"] is True and tree["equals_ar"] is True and jacobi["equals_ar"] is True
    assert tree["output_ids"] == ar["output_ids"] == jacobi["output_ids"]
    assert diffusion["equals_ar"] in (False, True)
    # the speedups come from this run: the AR lane's own time
    tps_ar = ar["tokens"] / ar["wall_s"]
    assert ar["speedup_vs_ar"] == pytest.approx(1.0)
    for r in result[1:]:
        assert r["speedup_vs_ar"] == pytest.approx((r["tokens"] / r["wall_s"]) / tps_ar, rel=1e-6)
    assert f"{ar['wall_s']:.2f} s" in out[5] and "the AR lane" in out[5]
    assert "equals AR (all 6 tokens)" in out[4]
    if diffusion["equals_ar"] is False:
        assert "differs from AR at position" in out[4] and "diffusion lane decodes with its own model" in out[4]
    # scrub back to round 0: every lane on its first step
    scrubbed = client.predict(0, api_name="/compare_scrub")
    assert "Round 0" in scrubbed[0] and "showing recorded step 0" in scrubbed[0]
    # export, then reopen without the model: the same table
    path = client.predict(api_name="/compare_export")
    data = json.loads(open(path).read())
    assert data["kind"] == "specviz-comparison" and len(data["lanes"]) == 4
    assert data["lanes"][0]["settings"]["method"] == "ar" and data["lanes"][0]["trace"]["steps"]
    assert data["lanes"][0]["trace"]["token_text"]
    reopened = Client(client.src, verbose=False).predict(handle_file(path), api_name="/compare_open")
    assert "Opened" in reopened[0]
    assert [(r["label"], r["tokens"], r["equals_ar"]) for r in reopened[-1]] == \
        [(r["label"], r["tokens"], r["equals_ar"]) for r in result]
    assert reopened[-1][1]["speedup_vs_ar"] == pytest.approx(tree["speedup_vs_ar"])


def test_step_plays_one_round_and_run_resumes_without_an_ar_lane(app_url, embedded):
    """Step advances every lane once and pauses; Run carries on from there. With no AR lane, AR is decoded after
    the race, in the same comparison, for the check and the speedups."""
    client = Client(app_url, verbose=False)
    lanes = [{"method": "prompt_lookup", "max_new_tokens": 4}, {"method": "jacobi", "gen_length": 4}]
    stepped = client.predict(prompt=PROMPT, lanes=lanes, api_name="/compare_step")
    assert "Round 0" in stepped[0] and "paused" in stepped[0]
    assert [r["steps"] for r in stepped[-1]] == [1, 1]
    assert "not known yet" in stepped[4]  # AR's output comes after the race
    again = client.predict(prompt=PROMPT, lanes=lanes, api_name="/compare_step")
    assert "Round 1" in again[0] and [r["steps"] for r in again[-1]] == [2, 2]
    result = client.predict(prompt=PROMPT, lanes=lanes, api_name="/compare")[-1]
    assert all(r["tokens"] == 4 and r["equals_ar"] is True and r["speedup_vs_ar"] > 0 for r in result)
    assert "decoded after the race" in client.predict(0, api_name="/compare_scrub")[5]


@pytest.mark.parametrize("lanes, words", [
    ([{"method": "ar"}], "2 to 4 lanes; got 1"),
    ([{"method": "ar"}] * 5, "2 to 4 lanes; got 5"),
    ([{"method": "ar"}, {"method": "warp"}], "lane 2 ('warp')"),
    ([{"method": "ar"}, {"method": "auto", "budget": -3}], "lane 2 ('auto')"),
    ([{"method": "ar"}, {"method": "diffusion", "schedule": "nope"}], "lane 2 ('diffusion')"),
    ([{"method": "ar", "window": 4}, {"method": "ar"}], "lane 1 ('ar')"),
    ([{"method": "ar"}, {"method": "ar", "kind": "quantum"}], "lane 2 ('ar'): kind must be"),
    ([{"method": "ar"}, "fast"], "lane 2: a lane is a settings object"),
    ("ar", "lanes must be a list"),
])
def test_bad_lanes_are_refused_by_name(client, lanes, words):
    with pytest.raises(Exception) as err:
        _compare(client, lanes)
    assert words in str(err.value)


def test_two_sessions_race_their_own_comparisons(app_url, embedded):
    jobs = {"a": ("Count from one to ten.", [{"method": "ar", "max_new_tokens": 4},
                                             {"method": "ngram_tree", "max_new_tokens": 4}]),
            "b": ("Name a colour.", [{"method": "ar", "max_new_tokens": 5},
                                     {"method": "prompt_lookup", "max_new_tokens": 5},
                                     {"method": "jacobi", "gen_length": 5}])}
    results, errors = {}, []

    def race(name):
        try:
            prompt, lanes = jobs[name]
            results[name] = Client(app_url, verbose=False).predict(prompt=prompt, lanes=lanes, api_name="/compare")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=race, args=(n,)) for n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    a, b = results["a"][-1], results["b"][-1]
    assert [r["label"] for r in a] == ["1 · AR", "2 · ngram_tree"] and len(b) == 3
    assert all(r["tokens"] == 4 for r in a) and all(r["tokens"] == 5 for r in b)
    assert all(r["equals_ar"] for r in a + b)
    assert a[0]["output_ids"] != b[0]["output_ids"]  # each its own prompt


@pytest.mark.browser
def test_a_two_lane_race_runs_to_the_end_in_a_real_browser(app_url, embedded, browser):
    import os
    from pathlib import Path

    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(app_url)
    page.wait_for_selector("#sv-tab-compare-button, button:has-text('Compare')", timeout=60_000)
    page.get_by_role("tab", name="Compare").click()
    page.wait_for_selector("#cmp-run", state="visible", timeout=30_000)
    number = page.locator("#cmp-max-new input[type=number]")
    number.fill("6")
    number.press("Enter")
    # the default lanes: AR against auto
    page.locator("#cmp-run").click()
    page.wait_for_function("document.querySelector('#cmp-status').innerText.includes('every lane done')",
                           timeout=240_000)
    page.wait_for_selector("#cmp-table td", timeout=30_000)
    table = page.locator("#cmp-table").inner_text()
    assert "1 · AR" in table and "2 · auto" in table and "1.00×" in table
    assert page.locator("#cmp-lanes-view .sv-compare-lane").count() == 2
    assert page.locator("#cmp-lanes-view [data-node]").count() >= 2  # the lanes' trees
    assert "Click a node" not in page.locator("#cmp-lanes-view").inner_text()  # no card opens here
    assert page.locator("#cmp-diff").inner_text().count("equals AR (all 6 tokens)") == 2
    assert page.locator("#cmp-race-forwards .scatterlayer .trace").count() >= 3
    out = Path(os.environ.get("SPECVIZ_SCREENSHOTS", "out"))
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "compare_race.png"), full_page=True)
    page.close()


def test_pause_stops_a_race_after_the_lane_step_in_flight(app_url, embedded):
    import time

    client = Client(app_url, verbose=False)
    lanes = [{"method": "ar", "max_new_tokens": 40}, {"method": "prompt_lookup", "max_new_tokens": 40}]
    job = client.submit(prompt="Count from one to forty.", lanes=lanes, api_name="/compare")
    deadline = time.monotonic() + 120
    while not any("Round" in str(o[0]) for o in job.outputs() if o) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "pause requested" in client.predict(api_name="/compare_pause")
    final = job.result(timeout=120)
    assert "paused" in final[0] and "every lane done" not in final[0]
    assert all(r["steps"] < 40 for r in final[-1])
