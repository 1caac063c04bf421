import json
import subprocess
import sys

import pytest

from specviz.__main__ import main



def test_help_lists_the_methods():
    out = subprocess.run([sys.executable, "-m", "specviz", "run", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("ar", "sps", "prompt_lookup"):
        assert name in out


def test_run_writes_the_documented_json(tmp_path, embedded, capsys):
    qs = tmp_path / "q.jsonl"
    qs.write_text('{"question_id": 7, "category": "x", "turns": ["Say hello.", "ignored"]}\n'
                  '{"question_id": 8, "category": "y", "turns": ["Count to five."]}\n')
    out = tmp_path / "out.json"
    trace = tmp_path / "trace.json"
    rc = main(["run", "--method", "prompt_lookup", "--questions", str(qs), "--limit", "2", "--max-new-tokens", "16",
               "--json", str(out), "--trace", str(trace)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["question_id"] for r in rows] == [7, 8]
    for r in rows:
        assert set(r) == {"question_id", "prompt_ids", "output_ids", "text", "target_forwards", "mean_accepted", "wall_s"}
        assert 1 <= len(r["output_ids"]) <= 16
        assert r["mean_accepted"] == pytest.approx(len(r["output_ids"]) / r["target_forwards"])
    from specviz.trace import Trace, check_invariants
    traces = json.loads(trace.read_text())
    for t in traces:
        check_invariants(Trace.from_dict(t))
    # each carries its prompt as typed and its tokens' text, so the app replays it with words, no model needed
    assert [t["prompt_text"] for t in traces] == ["Say hello.", "Count to five."]
    assert all(str(i) in traces[0]["token_text"] for i in traces[0]["prompt_ids"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--prompt", "", "--method", "ar"], "prompt is empty"),
        (["--prompt", "hi", "--method", "sps", "--draft-len", "0"], "draft_len=0 is out of range"),
        (["--prompt", "hi", "--method", "ar", "--target", "nobody/nothing"], "cannot load 'nobody/nothing'"),
        (["--questions", "/nonexistent.jsonl", "--method", "ar"], "does not exist"),
        (["--prompt", "hi", "--method", "ar", "--draft", "x/y"], "does not use a draft model"),
    ],
)
def test_bad_input_exits_with_a_message(argv, message, capsys, embedded):
    assert main(["run", "--max-new-tokens", "4", *argv]) == 2
    assert message in capsys.readouterr().err


def test_lattice_compares_schedules_and_writes_traces(tmp_path, embedded, capsys):
    from specviz.trace import Trace, check_invariants

    trace = tmp_path / "lattice.json"
    rc = main(["lattice", "--prompt", "Name a colour.", "--schedules", "low_confidence,threshold", "--gen-length", "8",
               "--steps", "4", "--block-size", "4", "--threshold", "0.0", "--trace", str(trace)])
    assert rc == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("low_confidence", "threshold"))}
    assert lines["low_confidence"][1] == "4.0"  # the step budget
    assert lines["threshold"][1] == "2.0"  # a threshold of 0 reveals a whole block per step
    traces = [Trace.from_dict(t) for t in json.loads(trace.read_text())]
    assert [t.method for t in traces] == ["diffusion:low_confidence", "diffusion:threshold"]
    for t in traces:
        check_invariants(t)


def test_lattice_jacobi_checks_itself_against_ar(embedded, capsys):
    rc = main(["lattice", "--method", "jacobi", "--prompt", "Count to five.", "--gen-length", "8", "--window", "3"])
    assert rc == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Jacobi"))
    assert row.rstrip().endswith("yes")


def test_lattice_refuses_remote_code_without_the_flag(capsys):
    assert main(["lattice", "--model", "Dream-org/Dream-v0-Instruct-7B", "--prompt", "hi"]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err


def test_bench_tau_replays_the_trained_drafters(embedded, capsys):
    rc = main(["bench", "tau", "--methods", "eagle,medusa,prompt_lookup", "--prompt",
               "Repeat after me: red, green, blue, red, green, blue.", "--max-new-tokens", "24"])
    assert rc == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "[1/1]" in captured.err  # per-question progress, on stderr
    table = out.split("share of steps")[0]
    rows = {line.split()[0]: float(line.split()[1]) for line in table.splitlines()
            if line.split() and line.split()[0] in ("eagle", "medusa", "prompt_lookup")}
    assert set(rows) == {"eagle", "medusa", "prompt_lookup"} and all(t >= 1.0 for t in rows.values())
    shares = out.split("share of steps by accepted drafted tokens")[1].split("\n\n")[0].splitlines()[2:]
    assert len(shares) == 3 and all(abs(sum(map(float, line.split()[1:])) - 1) < 0.01 for line in shares)


def test_bench_compares_knob_overrides_of_one_method_side_by_side(embedded, capsys):
    rc = main(["bench", "tau", "--methods", "eagle:budget=4:top_k=2,eagle", "--prompt",
               "Repeat after me: red, green, blue, red, green, blue.", "--max-new-tokens", "16"])
    assert rc == 0
    table = capsys.readouterr().out.split("share of steps")[0]
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.startswith("eagle")}
    assert set(rows) == {"eagle:budget=4:top_k=2", "eagle"}
    assert float(rows["eagle:budget=4:top_k=2"][2]) <= 4 < float(rows["eagle"][2])  # nodes per step


@pytest.mark.parametrize("spec, message", [("eagle:budget", "knob=value"), ("eagle:ngram=3", "knob=value"),
                                           ("hydra", "unknown method"), ("eagle:budget=999", "out of range")])
def test_bench_method_entries_give_clear_errors(spec, message, capsys):
    assert main(["bench", "tau", "--methods", spec, "--prompt", "hi", "--max-new-tokens", "4"]) == 2
    assert message in capsys.readouterr().err


def test_train_cli_refuses_unknown_drafters(capsys):
    assert main(["train", "--drafters", "hydra"]) == 2
    assert "unknown drafter" in capsys.readouterr().err


def test_bench_costs_prints_this_machines_curve_and_caches_it(embedded, capsys, monkeypatch):
    """`bench costs`: the embedded model's verify-cost curve, measured in seconds, then read from the cache."""
    from specviz.runs import costs

    monkeypatch.setattr(costs, "CONTEXT", 32)  # a short prefix keeps the test quick; the key holds it
    assert main(["bench", "costs", "--remeasure"]) == 0
    measured = capsys.readouterr().out
    assert "measured in" in measured and "tokens scored" in measured
    rows = [line.split() for line in measured.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 4, 8, 16, 32, 64, 128] and rows[0][2] == "1.00x"
    assert main(["bench", "costs"]) == 0
    assert "read from the cache in" in capsys.readouterr().out
