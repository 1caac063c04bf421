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
    for t in json.loads(trace.read_text()):
        check_invariants(Trace.from_dict(t))


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
