import numpy as np
import pytest

from specviz.trace import (ACCEPTED, BONUS, CORRECTION, REJECTED, ROOT, UNREACHED, DraftTree, SpecStep, Trace,
                           check_invariants, committed_tokens, summarize)


def make_step(k, root_pos, tokens, parent, status, path, bonus, kind, committed=None):
    n = len(tokens)
    full = [tokens[i] for i in path] + [bonus]
    return SpecStep(
        step=k, root_pos=root_pos,
        tree=DraftTree(np.array(tokens), np.array(parent), np.linspace(1, 0.5, n).astype(np.float32),
                       ("root",) + ("ngram",) * (n - 1)),
        target_probs=np.full(n, 0.5, np.float32), accept_probs=np.full(n, 0.5, np.float32),
        status=np.array(status, np.int8), accepted_path=np.array(path, dtype=np.int64), bonus_token=bonus,
        bonus_prob=0.9, bonus_kind=kind, committed_ids=np.array(committed if committed is not None else full),
        target_topk_ids=np.zeros((n, 2), np.int64), target_topk_probs=np.zeros((n, 2), np.float32),
        draft_ms=1.0, verify_ms=2.0, target_forwards=1, draft_forwards=0,
    )


def synthetic_trace():
    # step 0: chain of 3, two accepted, third rejected -> correction
    s0 = make_step(0, 4, [10, 11, 12, 13], [-1, 0, 1, 2], [ROOT, ACCEPTED, ACCEPTED, REJECTED], [1, 2], 99, CORRECTION)
    # step 1: a branching tree: root -> (a, b), b -> c ; b and c accepted -> bonus
    s1 = make_step(1, 7, [99, 20, 21, 22], [-1, 0, 0, 2], [ROOT, REJECTED, ACCEPTED, ACCEPTED], [2, 3], 30, BONUS)
    # step 2: nothing drafted, bonus only
    s2 = make_step(2, 10, [30], [-1], [ROOT], [], 31, BONUS)
    return Trace("test", {"k": 1}, "t", None, np.arange(5), [s0, s1, s2], wall_s=1.0)


def test_invariants_hold_on_a_valid_trace():
    check_invariants(synthetic_trace(), max_new_tokens=7)


def test_json_round_trip_is_exact():
    tr = synthetic_trace()
    back = Trace.from_json(tr.to_json())
    assert back.to_json() == tr.to_json()
    assert np.array_equal(back.output_ids, tr.output_ids)
    assert back.steps[1].tree.source == tr.steps[1].tree.source
    assert back.steps[0].status.dtype == np.int8


def test_summary_metrics():
    s = summarize(synthetic_trace().steps, wall_s=1.0)
    assert s["new_tokens"] == 3 + 3 + 1
    assert s["target_forwards"] == 3
    assert s["tau"] == pytest.approx(7 / 3)
    assert s["tau_drafts_only"] == pytest.approx(4 / 3)
    # depth 1: step0 accepted, step1 one rejected + one accepted -> 2/3; depth 2: 2/2; depth 3: 0/1
    assert s["acceptance_by_depth"] == pytest.approx([2 / 3, 1.0, 0.0])
    # path reach: step0 (depth 3) and step1 (depth 2) both reached depths 1 and 2; only step0 drafted depth 3
    # and its path stopped at 2 -> [2/2, 2/2, 0/1]; the sibling lowers the node rate, not the reach
    assert s["path_reach_by_depth"] == pytest.approx([1.0, 1.0, 0.0])
    assert s["tok_per_s"] == pytest.approx(7.0)


def test_committed_tokens_view():
    toks = committed_tokens(synthetic_trace().steps)
    assert [t.kind for t in toks] == ["accepted", "accepted", "correction", "accepted", "accepted", "bonus", "bonus"]
    assert [t.step for t in toks] == [0, 0, 0, 1, 1, 1, 2]


@pytest.mark.parametrize("breakage", ["root_pos", "path", "committed", "unreached"])
def test_invariants_catch_broken_traces(breakage):
    tr = synthetic_trace()
    s = tr.steps[1]
    if breakage == "root_pos":
        tr.steps[1] = make_step(1, 8, [99, 20, 21, 22], [-1, 0, 0, 2], [ROOT, REJECTED, ACCEPTED, ACCEPTED], [2, 3], 30, BONUS)
    elif breakage == "path":
        tr.steps[1] = make_step(1, 7, [99, 20, 21, 22], [-1, 0, 0, 2], [ROOT, ACCEPTED, REJECTED, ACCEPTED], [1, 3], 30, BONUS)
    elif breakage == "committed":
        tr.steps[1] = make_step(1, 7, [99, 20, 21, 22], [-1, 0, 0, 2], [ROOT, REJECTED, ACCEPTED, ACCEPTED], [2, 3], 30, BONUS, committed=[21, 20, 30])
    else:
        tr.steps[1] = make_step(1, 7, [99, 20, 21, 22], [-1, 0, 0, 2], [ROOT, UNREACHED, ACCEPTED, ACCEPTED], [2, 3], 30, BONUS)
    assert s is not tr.steps[1]
    with pytest.raises(AssertionError):
        check_invariants(tr)
