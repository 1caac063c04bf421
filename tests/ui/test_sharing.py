"""Sharing one model: turns are granted in arrival order one step at a time, so a session never waits
for another's whole run; per-session limits; a client that leaves gives its turns up; public mode
refuses what it must through the real API."""
import json
import threading
import time

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from specviz.ui.sharing import Limits, ServerFull, Sessions, Turns


def _step(log, owner, seconds):
    def work():
        log.append((owner, threading.current_thread().name))
        time.sleep(seconds)
        return owner
    return work


def test_turns_go_round_robin_so_a_newcomer_waits_one_step_not_a_run():
    turns, log = Turns(), []

    def long_run():  # 30 steps of 20 ms, joining the line again for each one
        for _ in range(30):
            assert turns.run("A", "a step of A", _step(log, "A", 0.02)) == "A"

    a = threading.Thread(target=long_run)
    a.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    turns.run("B", "a step of B", _step(log, "B", 0.0))
    waited = time.monotonic() - t0
    a.join()
    assert waited < 0.2, f"B waited {waited:.2f} s behind A's run of 0.6 s"
    owners = [o for o, _ in log]
    assert owners.index("B") < 12, owners  # B got in between A's steps, not after all 30
    assert turns.granted == 31 and turns.waiting == 0
    # all model work runs on the one model thread (one torch thread pool)
    assert {name for _, name in log} == {"specviz-model"}


def test_turns_report_the_place_in_line_cancel_a_leaver_and_hand_errors_back():
    turns, gate = Turns(), threading.Event()
    first = turns.submit("A", "a step of sps", gate.wait)
    while not first.started:
        time.sleep(0.01)
    second = turns.submit("B", "a step of eagle", lambda: "B")
    third = turns.submit("C", "a step of ar", lambda: "C")
    assert turns.ahead(second) == (1, "a step of sps")
    assert turns.ahead(third) == (2, "a step of sps")
    assert not turns.wait(third, 0.05)
    assert turns.cancel(second)  # B's client went away while waiting
    assert not turns.cancel(first)  # one that started runs to its end
    gate.set()
    assert turns.wait(third, 5) and turns.outcome(third) == "C"
    assert not second.done.is_set() and turns.waiting == 0

    def broken():
        raise ValueError("exit_layer is out of range")

    with pytest.raises(ValueError, match="exit_layer"):
        turns.run("D", "preparing a run", broken)  # raised in the requester's thread, the model thread lives on
    assert turns.run("E", "a step", lambda: 42) == 42


def test_sessions_one_request_each_a_server_cap_and_a_step_rate():
    sessions = Sessions(Limits(max_active=2, steps_per_minute=60))
    sessions.enter("s1", "a run of sps")
    with pytest.raises(ServerFull, match="already running"):
        sessions.enter("s1", "a step of sps")
    sessions.enter("s2", "a run of ar")
    with pytest.raises(ServerFull, match="server is full: 2 runs"):
        sessions.enter("s3", "a run of ar")
    sessions.leave("s1")
    sessions.enter("s3", "a run of ar")
    assert sessions.active == 2
    # a burst of ten seconds' worth passes, then the session is slowed to one step a second
    delays = [sessions.step_delay("s3") for _ in range(11)]
    assert delays[:10] == [0.0] * 10 and 0.5 < delays[10] <= 1.0
    assert sessions.step_delay("s2") == 0.0  # another session has its own allowance


def test_limits_from_the_environment():
    assert Limits.from_env(False, {}).steps_per_minute is None and Limits.from_env(False, {}).request_s is None
    public = Limits.from_env(True, {})
    assert public.steps_per_minute == 600 and public.request_s == 600
    tuned = Limits.from_env(True, {"SPECVIZ_MAX_ACTIVE": "8", "SPECVIZ_STEPS_PER_MIN": "0", "SPECVIZ_REQUEST_S": "30"})
    assert (tuned.max_active, tuned.steps_per_minute, tuned.request_s) == (8, None, 30)


# through the real app -------------------------------------------------------------------------


def test_a_step_waits_for_one_step_of_a_running_session_not_for_its_run(app_url, served_demo):
    """Session A runs 96 tokens of plain AR; session B steps meanwhile. B's step must finish long before A's
    run does (with one slot for whole runs it waited for all of A)."""
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    settings = {"method": "ar", "max_new_tokens": 96}
    job = a.submit(prompt="Write a detailed essay about the history of Rome.", settings=settings, api_name="/run")
    granted = served_demo[0].sharing.turns.granted
    deadline = time.monotonic() + 60
    while served_demo[0].sharing.turns.granted < granted + 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # A is a few steps in
    t0 = time.monotonic()
    out = b.predict(prompt="Name a colour.", settings={"method": "ar", "max_new_tokens": 4}, api_name="/step")
    b_s = time.monotonic() - t0
    assert not job.done(), f"A's run finished before B's step ({b_s:.1f} s): the test did not overlap them"
    a_out = job.result(timeout=300)
    assert out[-1]["settings"]["max_new_tokens"] == 4 and len(out[-1]["output_ids"]) == 1
    assert len(a_out[-1]["output_ids"]) == 96  # A ran to its end, undisturbed


def test_a_client_that_leaves_gives_up_the_model(app_url, served_demo):
    """A Run whose client closes its event stream stops at its next step: no more turns are taken for it."""
    sharing = served_demo[0].sharing
    with httpx.Client(base_url=app_url, timeout=30) as http:
        event = http.post("/gradio_api/call/run", json={"data": [
            "Write a long story about the sea.", {"method": "ar", "max_new_tokens": 200}]}).json()["event_id"]
        with http.stream("GET", f"/gradio_api/call/run/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and sharing.turns.granted > 0:
                    break  # streaming has begun; now the client goes away
    deadline = time.monotonic() + 30
    while sharing.sessions.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sharing.sessions.active == 0, "the run went on after its client left"
    granted = sharing.turns.granted
    time.sleep(1.0)
    assert sharing.turns.granted == granted


@pytest.fixture(scope="module")
def public_url(store, embedded):
    """The app as a public server would run it (its policy and limits), on its own port."""
    from specviz.policy import ServerPolicy
    from specviz.ui import build_demo, launch
    from specviz.ui.controller import Sharing

    policy = ServerPolicy.from_env({"SPECVIZ_PUBLIC": "1"})
    demo = build_demo(store, Sharing(policy, Limits.from_env(True, {})))
    _, url, _ = launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    demo.close()


@pytest.mark.parametrize("api, settings, expect", [
    ("/run", {"method": "retrieval", "corpus": "/proc/self/environ"}, "corpus: this public server does not read files"),
    ("/run", {"method": "retrieval", "corpus": "/etc/passwd"}, "corpus: this public server does not read files"),
    ("/run", {"target": "/root/.cache/specviz/smollm2-135m-instruct-v1"}, "target: this public server loads only"),
    ("/run", {"target": "someone/unlisted-model"}, "target: this public server loads only"),
    ("/run", {"method": "eagle", "draft": "/tmp"}, "draft: this public server loads only"),
    ("/run", {"max_new_tokens": 1000}, "max_new_tokens=1000 is over this public server's cap of 256"),
    ("/run", {"method": "static_tree", "preset": ";".join(str(i) for i in range(63)) + ";0,0;0,1;1,0"},
     "preset: a tree of 66 nodes is over this public server's cap of 64"),
    ("/lattice_run", {"model": "/root"}, "model: this public server loads only"),
    ("/lattice_run", {"gen_length": 256}, "gen_length=256 is over this public server's cap of 128"),
    ("/lattice_compare", {"model": "GSAI-ML/LLaDA-8B-Instruct"}, "model: this public server loads only"),
])
def test_public_server_refuses_with_a_clear_message(public_url, api, settings, expect):
    client = Client(public_url, verbose=False)
    with pytest.raises(AppError) as info:
        client.predict(prompt="Hello.", settings=settings, api_name=api)
    msg = str(info.value)
    assert expect in msg, msg
    assert "Traceback" not in msg and "/root" not in msg.replace(expect, "")


def test_public_server_caps_the_prompt_and_uploads_and_still_serves(public_url):
    client = Client(public_url, verbose=False)
    with pytest.raises(AppError, match="prompt: 5,000 characters is over"):
        client.predict(prompt="x" * 5000, settings={}, api_name="/step")
    # over the 8 MB a trace file may have (`replay.PUBLIC_MAX_CHARS`)
    files = {"files": ("big.txt", b"x" * (9 << 20), "text/plain")}
    response = httpx.post(public_url.rstrip("/") + "/gradio_api/upload", files=files, timeout=30)
    assert response.status_code == 413, response.text[:200]
    out = client.predict(prompt="Name a fruit.", settings={"max_new_tokens": 2}, api_name="/step")
    assert json.loads(json.dumps(out[-1]))["settings"]["max_new_tokens"] == 2


def test_a_step_pressed_while_the_same_session_runs_pauses_the_run_and_steps(app_url, served_demo):
    client = Client(app_url, verbose=False)
    prompt, settings = "Write a detailed essay about the history of Rome.", {"method": "ar", "max_new_tokens": 96}
    job = client.submit(prompt=prompt, settings=settings, api_name="/run")
    sharing = served_demo[0].sharing
    deadline = time.monotonic() + 60
    while not sharing.sessions.active and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    out = client.predict(prompt=prompt, settings=settings, api_name="/step")
    run_out = job.result(timeout=120)
    assert "paused" in run_out[0], run_out[0]  # the Run stopped after its step, without an error
    n_run, n_step = len(run_out[-1]["output_ids"]), len(out[-1]["output_ids"])
    assert 0 < n_run < 96 and n_step == n_run + 1, (n_run, n_step)  # the Step continued the same run


def test_server_from_env_decides_public_mode_remote_code_and_limits(tmp_path):
    from specviz.ui.app import server_from_env

    store, demo, host, port = server_from_env({"SPECVIZ_PORT": "7999"})
    assert (host, port) == ("127.0.0.1", 7999) and not demo.sharing.policy.public
    assert demo.sharing.limits.steps_per_minute is None

    space = {"SPACE_ID": "someone/specviz", "SPECVIZ_TRUST_REMOTE_CODE": "1",
             "SPECVIZ_REMOTE_CODE_MODELS": "GSAI-ML/LLaDA-8B-Instruct@08b83a6"}
    store, demo, host, port = server_from_env(space)
    assert host == "0.0.0.0" and demo.sharing.policy.public
    # on a public server the blanket switch is ignored: only the pinned models run their own code
    assert store.trust_remote_code is False
    assert store.remote_code_revisions == {"GSAI-ML/LLaDA-8B-Instruct": "08b83a6"}
    assert demo.sharing.limits.request_s == 600
    note = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sv-public-note"]
    assert note and "Public server" in note[0].value
    store, demo, *_ = server_from_env({"SPECVIZ_TRUST_REMOTE_CODE": "1"})
    assert store.trust_remote_code is True and not demo.sharing.policy.public  # a local operator's choice


def test_pause_and_reset_in_one_session_never_touch_another(app_url, served_demo):
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    job = b.submit(prompt="Write a detailed essay about the history of Rome.",
                   settings={"method": "ar", "max_new_tokens": 48}, api_name="/run")
    sharing = served_demo[0].sharing
    deadline = time.monotonic() + 60
    while not sharing.sessions.active and time.monotonic() < deadline:
        time.sleep(0.05)
    a.predict(prompt="Name a fruit.", settings={"method": "ar", "max_new_tokens": 2}, api_name="/step")
    a.predict(api_name="/pause")
    a.predict(api_name="/reset")
    out = job.result(timeout=300)
    assert "paused" not in out[0] and "finished" in out[0], out[0]
    assert out[-1]["prompt"] == "Write a detailed essay about the history of Rome."
    assert len(out[-1]["output_ids"]) == 48 or out[-1]["finished"] == "eos"


def test_a_lone_session_is_never_told_it_waits_in_line(app_url):
    """The place in line is reported only while a job waits behind others, never during its own step."""
    client = Client(app_url, verbose=False)
    job = client.submit(prompt="Explain why the sky is blue.", settings={"method": "sps", "max_new_tokens": 6},
                        api_name="/run")
    job.result(timeout=300)
    statuses = [str(o[0]) for o in job.outputs() if o]
    assert statuses and not any("In line" in s for s in statuses), statuses
