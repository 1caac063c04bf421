"""The Learn tab's lessons: complete, parseable by their tab, in the issue's order; lesson 2's run really
accepts and rejects drafts on the embedded model."""
import re

import numpy as np
import pytest

from specviz.config import LATTICE_KNOBS
from specviz.runs import compare_with_ar, prepare_run
from specviz.settings import LatticeSettings, RunSettings
from specviz.textio import encode_prompt
from specviz.trace import ACCEPTED, REJECTED, summarize
from specviz.ui import diffusion, speculative
from specviz.ui.lessons import LESSONS, Lesson, lesson_by_slug

ORDER = ["plain-decoding", "draft-and-verify", "lossless-sampling", "trees", "draft-sources", "trained-drafters",
         "when-it-pays", "diffusion", "jacobi"]
TEXT_FIELDS = ("slug", "title", "goal", "explain", "tab", "prompt", "look_at", "notice", "question", "answer",
               "try_change")


def _spec_for(lesson: Lesson):
    return (speculative.SpeculativeSpec if lesson.tab == "speculative" else diffusion.DiffusionSpec)(None)


def test_nine_lessons_in_the_issues_order():
    assert [lesson.slug for lesson in LESSONS] == ORDER
    assert [lesson.title.split(" · ")[0] for lesson in LESSONS] == [str(i) for i in range(1, 10)]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.slug)
def test_lesson_fields(lesson):
    for name in TEXT_FIELDS:
        value = getattr(lesson, name)
        assert isinstance(value, str) and value.strip(), f"{lesson.slug}: {name} is empty"
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", lesson.slug)
    assert lesson.tab in ("speculative", "diffusion")
    assert 80 <= len(lesson.explain.split()) <= 160, lesson.slug
    assert lesson.steps is None or (isinstance(lesson.steps, int) and lesson.steps > 0)
    assert isinstance(lesson.settings, dict) and lesson.settings


def test_slugs_unique_and_found():
    assert len({lesson.slug for lesson in LESSONS}) == len(LESSONS)
    for lesson in LESSONS:
        assert lesson_by_slug(lesson.slug) is lesson
        assert lesson_by_slug(lesson.slug.upper()) is lesson
    for bad in ("", "nope", None, 3, "../trees", ["trees"]):
        assert lesson_by_slug(bad) is None


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.slug)
def test_settings_parse_with_the_tabs_settings_type(lesson):
    """The tab's own parse (settings type and server policy) takes the dict, and the dict is complete: it
    round-trips through the settings object unchanged, so the run does not depend on the tab's defaults."""
    spec = _spec_for(lesson)
    checked = spec.parse(dict(lesson.settings))
    assert isinstance(checked, RunSettings if lesson.tab == "speculative" else LatticeSettings)
    assert checked.to_dict() == lesson.settings
    spec.check_prompt(lesson.prompt)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.slug)
def test_settings_are_what_the_tabs_controls_produce(lesson):
    """The dict is exactly what the tab's `collect_settings` builds from controls holding these values."""
    s = lesson.settings
    if lesson.tab == "speculative":
        knobs = [s.get(k.name, k.default) for k in speculative.KNOBS]
        got = speculative.collect_settings(s["method"], *knobs, s["max_new_tokens"], s["temperature"], s["top_p"],
                                           s["seed"], s["target"], s["draft"])
    else:
        knobs = [s.get(k.name, k.default) for k in LATTICE_KNOBS]
        got = diffusion.collect_settings(s["method"], s["model"], *knobs, s["gen_length"], s["temperature"],
                                         s["seed"])
    assert got == s


def test_the_tabs_match_the_lessons_topics():
    by = {lesson.slug: lesson for lesson in LESSONS}
    assert by["plain-decoding"].settings["method"] == "ar"
    assert by["lossless-sampling"].settings["temperature"] > 0 and by["lossless-sampling"].steps
    assert by["diffusion"].tab == "diffusion" and by["diffusion"].settings["model"] == "tiny-mdm"
    assert by["jacobi"].tab == "diffusion" and by["jacobi"].settings["method"] == "jacobi"
    # the two-run lessons share the prompt with the runs they are compared against
    assert by["trained-drafters"].prompt == by["draft-and-verify"].prompt == by["trees"].prompt


def test_draft_and_verify_accepts_and_rejects(store):
    """Lesson 2's prepared run on the embedded model: drafts are accepted and rejected, some step ends in the
    bonus token, τ is the ≈ 2.5 its notice quotes, and the text is plain decoding's."""
    lesson = lesson_by_slug("draft-and-verify")
    prepared = prepare_run(store, lesson.settings)
    dec = prepared.decoder(encode_prompt(prepared.target.tokenizer, lesson.prompt), record=True)
    steps = []
    for record in dec.steps():
        steps.append(record)
        if lesson.steps and len(steps) >= lesson.steps:
            break
    status = np.concatenate([s.status[1:] for s in steps])
    assert (status == ACCEPTED).any() and (status == REJECTED).any()
    assert any(s.bonus_kind == "bonus" for s in steps) and any(s.bonus_kind == "correction" for s in steps)
    summary = summarize(steps)
    assert 2.2 <= summary["tau"] <= 2.9, summary["tau"]
    if lesson.steps is None:
        assert compare_with_ar(prepared, dec.trace())["matches_ar"] is True
