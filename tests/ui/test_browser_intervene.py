"""Editing a draft token from the tree, in headless Chromium: click a node, put another token in, verify again,
and the run branches; the branch runs on to the same text as the original, which stays one click away."""
import pytest

from .test_browser import browser  # noqa: F401 - the shared headless Chromium fixture
from .test_browser_learn import _run_lesson, _shot

pytestmark = pytest.mark.browser


def _status_has(page, words, timeout=120_000):
    page.wait_for_function(f"document.querySelector('#sv-status').innerText.includes({words!r})", timeout=timeout)


def test_edit_a_draft_token_from_the_tree(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(f"{app_url.rstrip('/')}/?lesson=draft-and-verify")
    page.wait_for_selector("#sv-lesson-run-2", state="visible", timeout=60_000)
    _run_lesson(page, 2)  # lesson 2's chain on the live model, run to its end
    page.wait_for_selector('#sv-tree [data-node="1"]', timeout=30_000)
    page.locator('#sv-tree [data-node="1"]').click()
    page.wait_for_selector("#sv-node-card .sv-card-head", timeout=30_000)
    # the panel sits open under the node card: the click above picked the node for it
    page.wait_for_function("document.querySelector('#sv-edit-where').innerText.includes('Editing node 1')",
                           timeout=30_000)
    # the candidate list is filled from the clicked node's step: put the first one in and verify again
    assert page.locator("#sv-edit-candidate input").input_value()
    page.locator("#sv-edit-verify").click()
    _status_has(page, "verified again")
    tree = page.locator("#sv-tree").inner_text()
    assert "✎" in tree and "You replaced the draft" in tree
    assert page.locator("#sv-tree .sv-edited").count() == 1
    assert page.locator("#sv-branch").is_visible()
    assert "branch 1" in page.locator("#sv-branches").inner_text()
    _shot(page, "intervene_edited_step.png")

    # Run carries the branch on; under greedy it must end on the original's text
    page.locator("#sv-run").click()
    _status_has(page, "finished", timeout=240_000)
    page.wait_for_function("(t => t.includes('same as the original') && !t.includes('running'))"
                           "(document.querySelector('#sv-branches').innerText)", timeout=60_000)
    assert "differs" not in page.locator("#sv-branches").inner_text()
    assert page.locator("#sv-text .sv-edited").count() >= 1  # the tokens the edited step committed are marked
    _shot(page, "intervene_branch_finished.png")

    # the original is one click away, unchanged
    page.locator("#sv-branch").get_by_text("original").click()
    _status_has(page, "showing original")
    assert page.locator("#sv-text .sv-edited").count() == 0
    page.close()
