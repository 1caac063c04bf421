"""The goals report of `bench goals`: each check reads the right figure, and can fail."""
from specviz.bench.goals import checks, format_report


def _row(speedup, predicted=None, by_category=None, vs_generate=None):
    return {"tau": 1.5, "tokens": 100, "target_forwards": 60, "wall_s": 1.0 / speedup, "tok_per_s": 100 * speedup,
            "speedup_vs_ar": speedup, "matches_ar": True, "predicted": predicted,
            "speedup_vs_generate": vs_generate if vs_generate is not None else speedup * 1.2,
            "by_category": by_category or {"writing": speedup, "math": speedup}}


def _methods(**over):
    methods = {"ar": _row(1.0), "ngram_tree": _row(1.4, 1.45), "auto": _row(1.25, 1.2, {"writing": 1.0, "math": 1.5}),
               "hf_generate": _row(0.8), "hf_generate_static": _row(0.85)}
    methods.update(over)
    return methods


def test_every_goal_met():
    result = checks(_methods())
    assert all(ok for _, ok, _ in result), result
    assert len(result) == 7


def test_each_goal_can_be_missed():
    missed = lambda methods: {goal for goal, ok, _ in checks(methods) if not ok}  # noqa: E731
    assert missed(_methods(ngram_tree=_row(1.2, 1.2, vs_generate=1.25), auto=_row(1.22, 1.2, vs_generate=1.26))) == {
        "best method ≥ 1.3× our AR", "best method ≥ 1.3× transformers' generate"}
    assert missed(_methods(auto=_row(1.25, 1.2, {"writing": 0.9, "math": 1.6}))) == {"auto ≥ 0.97× AR in every category"}
    assert missed(_methods(auto=_row(1.1, 1.1))) == {"auto ≥ 1.2× AR overall"}
    assert missed(_methods(ngram_tree=_row(1.4, 1.9))) == {"predicted speedup within 15% of measured, every method"}
    assert missed(_methods(hf_generate_static=_row(1.05))) == {"our AR at least as fast as hf_generate_static"}


def test_report_prints_the_table_categories_and_goals():
    result = {"methods": _methods(), "categories": ["writing", "math"], "checks": checks(_methods())}
    text = format_report(result)
    assert "ngram_tree" in text and "1.40×" in text and "+4%" in text  # predicted 1.45 against measured 1.40
    assert "speedup over our AR by category" in text and "writing" in text
    assert "[met] auto ≥ 0.97× AR in every category: lowest: writing 1.00×" in text
