"""The load script (scripts/load_test.py): a small run against the real app started as a subprocess, and its
cross-talk checker, which must catch an answer that belongs to another session."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from specviz.config import EMBEDDED_MODEL_ID

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "load_test.py"


@pytest.fixture(scope="module")
def load_test():
    spec = importlib.util.spec_from_file_location("load_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("load_test", None)


def test_small_load_against_the_app(tmp_path):
    """3 students × 2 rounds of (1 step, 1 run, reset) at 4 tokens, through gradio_client, each its own session."""
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--clients", "3", "--rounds", "2", "--steps", "1",
                           "--tokens", "4", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    f = json.loads(out.read_text())
    assert f["clients"] == f["clients_connected"] == 3
    assert f["jobs_planned"] == f["jobs_submitted"] == f["jobs_ok"] == 3 * 2 * 3
    assert f["jobs_failed"] == 0 and f["errors"] == {} and f["interrupted"] is False
    assert f["cross_talk_violations"] == 0
    assert f["prompt_check"].startswith("decoded prompt ids")  # the exact check ran, not only the fallback
    assert f["runs_completed"] == 6
    for kind, n in (("step_latency", 6), ("run_latency", 6), ("reset_latency", 6)):
        assert f[kind]["n"] == n and 0 < f[kind]["p50_s"] <= f[kind]["p95_s"] <= f[kind]["max_s"]
    assert f["longest_session_wait_s"] >= f["run_latency"]["p95_s"] and f["wall_s"] > 0
    rss = f["rss_mib"]
    assert rss["after_5_runs"] > 100 and rss["end"] > 100 and rss["peak"] >= rss["end"]
    assert rss["after_40_runs"] is None  # only 6 runs
    assert "cross-talk violations" in proc.stdout and "/run latency p50 / p95" in proc.stdout


# the checker -------------------------------------------------------------------------------------------------
def summary(ids, steps, tokens=4, finished=None, method="sps", **extra):
    return {"method": method, "target": EMBEDDED_MODEL_ID, "settings": {"method": method, "max_new_tokens": tokens},
            "prompt_ids": list(ids), "output_ids": [7] * min(steps, tokens), "finished": finished,
            "summary": {"steps": steps}, **extra}


def decode(ids):
    """A stand-in tokenizer: id i is the i-th word."""
    words = ["<s>", "Student", "1,", "2,", "round", "1:", "2:", "hello"]
    return " ".join(words[i] for i in ids)


A1 = (0, 1, 2, 4, 5)  # "<s> Student 1, round 1:"
B1 = (0, 1, 3, 4, 5)  # "<s> Student 2, round 1:"
A2 = (0, 1, 2, 4, 6)  # "<s> Student 1, round 2:"


def checkers(load_test, decoder=decode):
    owners = load_test.PromptOwners(decoder)
    a, b = load_test.SessionChecker(1, owners, 4), load_test.SessionChecker(2, owners, 4)
    a.new_round(1, "Student 1, round 1:")
    b.new_round(1, "Student 2, round 1:")
    return a, b


def test_checker_passes_a_clean_round(load_test):
    a, b = checkers(load_test)
    assert a.step(summary(A1, 1)) == [] and b.step(summary(B1, 1)) == []
    assert a.step(summary(A1, 2)) == [] and a.run(summary(A1, 4, finished="length")) == []
    assert a.reset((None, "Reset.", None)) == []
    a.new_round(2, "Student 1, round 2:")
    assert a.step(summary(A2, 1)) == []  # after a reset the step count starts again
    # a step that ended the run: the next call starts a new run
    assert a.step(summary(A2, 2, finished="eos")) == [] and a.run(summary(A2, 1, finished="length")) == []


def test_checker_catches_another_sessions_answer(load_test):
    a, b = checkers(load_test)
    assert b.step(summary(B1, 1)) == []
    bad = a.step(summary(B1, 1))  # client 1 got client 2's run
    assert any("got the prompt of client 2 round 1" in v for v in bad)
    assert any("decodes to" in v for v in bad)


def test_checker_catches_a_wrong_prompt_without_a_tokenizer(load_test):
    """Without a tokenizer the ids still belong to one (client, round): a stolen or changing prompt is caught."""
    a, b = checkers(load_test, decoder=None)
    assert a.step(summary(A1, 1)) == []
    assert any("got the prompt of client 1 round 1" in v for v in b.step(summary(A1, 2)))
    assert any("prompt ids changed within the round" in v for v in a.step(summary(A2, 2)))


def test_checker_catches_a_prompt_field_that_differs(load_test):
    a, _ = checkers(load_test)
    assert any("is not the prompt sent" in v for v in a.step(summary(A1, 1, prompt="Student 2, round 1:")))


def test_checker_catches_step_counts_and_settings(load_test):
    a, _ = checkers(load_test)
    assert a.step(summary(A1, 1)) == []
    assert any("step count 1, expected 2" in v for v in a.step(summary(A1, 1)))  # a step that did not advance
    a.new_round(1, "Student 1, round 1:")
    assert any("step count 3, expected 1" in v for v in a.step(summary(A1, 3)))  # a run that was not fresh
    a.new_round(1, "Student 1, round 1:")
    assert any("max_new_tokens=16, sent 4" in v for v in a.step(summary(A1, 1, tokens=16)))
    assert any("did not finish" in v for v in a.run(summary(A1, 2)))
    assert any("expected at least 3" in v for v in a.run(summary(A1, 2, finished="length")))
    assert any("no run summary" in v for v in a.step(None))
    assert any("reset answered with a run summary" in v for v in a.reset((None, summary(A1, 1))))


def test_checker_names_the_method_it_sent(load_test):
    owners = load_test.PromptOwners(None)
    c = load_test.SessionChecker(1, owners, 4, method="ar")
    c.new_round(1, "Student 1, round 1:")
    assert any("method='sps', sent 'ar'" in v for v in c.step(summary(A1, 1)))


def test_figures_fail_on_errors_and_cross_talk(load_test):
    totals = load_test.Totals()
    totals.calls += [load_test.Call(1, 1, "step", 0.5, True), load_test.Call(1, 1, "run", 2.0, True),
                     load_test.Call(2, 1, "run", 9.0, False, "AppError: queue is full"),
                     load_test.Call(3, 1, "run", 1.0, False, "AppError: queue is full")]
    totals.violations.append("client 1 round 1 /step: got the prompt of client 2 round 1")
    args = load_test.parse_args(["--clients", "3"])
    f = load_test.figures(totals, args, 12.0, 900.0, 950.0, "test")
    assert f["jobs_submitted"] == 4 and f["jobs_ok"] == 2 and f["jobs_failed"] == 2 and f["jobs_planned"] == 3 * 3 * 4
    assert f["errors"] == {"/run: AppError: queue is full": 2}
    assert f["longest_session_wait_s"] == 9.0 and f["longest_session_wait"] == "client 2 round 1 /run"
    assert f["cross_talk_violations"] == 1
    assert f["step_latency"]["p50_s"] == 0.5 and f["run_latency"]["n"] == 1
    assert load_test.percentile([1, 2, 3, 4, 5], 50) == 3 and load_test.percentile([1, 2], 95) == pytest.approx(1.95)
    assert "error ×2: /run: AppError: queue is full" in load_test.table(f)
