"""The teacher's path in headless Chromium: a lesson's link, the first three lessons run on the live model, a tree
node's card, an example trace opened and scrubbed, and a share link that reopens a run at its step."""
import os
from pathlib import Path

import pytest

from specviz.ui.lessons import LESSONS

from .test_browser import browser  # noqa: F401 - the shared headless Chromium fixture

pytestmark = pytest.mark.browser
DONE = "(t => t.includes('finished') || t.includes('paused'))"


def _shot(page, name):
    out = Path(os.environ.get("SPECVIZ_SCREENSHOTS", "out"))
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / name), full_page=True)


def _status_done(page, prefix, timeout=240_000):
    page.wait_for_function(f"{DONE}(document.querySelector('#{prefix}-status').innerText)", timeout=timeout)


def _run_lesson(page, i):
    """Open lesson i (1-based) in the Learn tab and run it: its tab opens and its run finishes (or stops at its
    steps)."""
    lesson = LESSONS[i - 1]
    prefix = "sv" if lesson.tab == "speculative" else "sd"
    page.get_by_role("tab", name="Learn").click()
    if i > 1 and not page.locator(f"#sv-lesson-run-{i}").is_visible():
        page.locator(f"#sv-lesson-next-{i - 1}").click()  # from the lesson before, as a class goes
    page.wait_for_selector(f"#sv-lesson-run-{i}", state="visible", timeout=30_000)
    assert lesson.goal[:40] in page.locator(f"#sv-lesson-{i}").inner_text()
    page.locator(f"#sv-lesson-run-{i}").click()
    page.wait_for_selector(f"#{prefix}-status", state="visible", timeout=30_000)
    # the lesson's own run (its status names the lesson) to its end, or its last step
    page.wait_for_function(f"(t => t.includes({lesson.title!r}) && t.includes('Step') && {DONE}(t))"
                           f"(document.querySelector('#{prefix}-status').textContent)", timeout=240_000)
    return lesson, prefix


def test_walk_the_first_three_lessons(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    # a lesson's own link opens the Learn tab on it
    page.goto(f"{app_url.rstrip('/')}/?lesson={LESSONS[1].slug}")
    page.wait_for_selector("#sv-lesson-run-2", state="visible", timeout=60_000)
    _shot(page, "learn_lesson_2.png")
    page.locator("#sv-lesson-prev-2").click()

    lesson, prefix = _run_lesson(page, 1)
    assert lesson.tab == "speculative"
    assert page.locator("#sv-method input").input_value()  # the controls show the lesson's settings

    lesson, prefix = _run_lesson(page, 2)
    # the lesson points at the tree: click a drafted node and read its card
    page.wait_for_selector('#sv-tree [data-node="1"]', timeout=30_000)
    page.locator('#sv-tree [data-node="1"]').click()
    page.wait_for_selector("#sv-node-card .sv-card-head", timeout=30_000)
    card = page.locator("#sv-node-card").inner_text()
    assert "node 1" in card and "acceptance probability" in card
    _shot(page, "learn_lesson_2_card.png")

    # lesson 3: its question has an answer revealed on request, and its run is sampled
    page.get_by_role("tab", name="Learn").click()
    page.locator("#sv-lesson-next-2").click()
    page.wait_for_selector("#sv-lesson-run-3", state="visible", timeout=30_000)
    page.locator("#sv-lesson-answer-3").get_by_text("Show the answer").click()
    page.wait_for_function(f"document.querySelector('#sv-lesson-answer-3').innerText.includes("
                           f"{LESSONS[2].answer.split()[0]!r})", timeout=15_000)
    _shot(page, "learn_lesson_3.png")
    lesson, prefix = _run_lesson(page, 3)
    assert lesson.settings.get("temperature", 0) > 0
    page.locator("#sv-rejection-accordion").get_by_text("Why it is lossless").click()
    page.wait_for_selector("#sv-rejection table", timeout=30_000)
    panel = page.locator("#sv-rejection").inner_text()
    assert "Greedy decoding" not in panel and "u" in panel  # a sampled step: the uniforms that decided
    _shot(page, "learn_lesson_3_rejection.png")
    page.close()


def test_open_an_example_trace_scrub_it_and_share_the_step(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(app_url)
    page.wait_for_selector("#sv-run", timeout=60_000)
    page.locator("#sv-open-accordion").get_by_text("Open a recorded run").click()
    page.locator("#sv-open-example").click()
    page.wait_for_function("document.querySelector('#sv-status').innerText.includes('Replaying')", timeout=60_000)
    page.wait_for_selector('#sv-tree [data-node="0"]', timeout=30_000)
    number = page.locator("#sv-slider input[type=number]")
    number.fill("2")
    number.press("Enter")
    page.wait_for_function("document.querySelector('#sv-status').innerText.includes('showing recorded step 2')",
                           timeout=60_000)
    assert "Step 2" in page.locator("#sv-status").inner_text()
    _shot(page, "speculative_example_trace.png")

    # the share link restores the run's settings and the step shown: the run reruns to that step
    page.locator("#sv-share").click()
    page.wait_for_function("document.querySelector('#sv-share-link textarea, #sv-share-link input').value"
                           ".includes('step=2')", timeout=15_000)
    link = page.locator("#sv-share-link textarea, #sv-share-link input").first.input_value()
    assert "settings=" in link and "tab=speculative" in link
    shared = browser.new_page(viewport={"width": 1400, "height": 1800})
    shared.goto(link)
    shared.wait_for_selector("#sv-status", timeout=60_000)
    shared.wait_for_function("document.querySelector('#sv-status').innerText.includes('Step 2')", timeout=240_000)
    _status_done(shared, "sv")
    assert "eagle" in shared.locator("#sv-method input").input_value().lower()  # the controls show its settings
    _shot(shared, "speculative_shared_link.png")
    shared.close()
    page.close()
