"""The Learn tab: a guided path through the lessons (`lessons.LESSONS`), each opening its prepared run on the
live model in the tab that shows it, and the links that open the app on a lesson or on a shared run.

A lesson's run goes through the same controller as a Run pressed by hand (`TabController.drive`, in turns on
the shared model), so the class's thirty sessions share the server as they would anyway. The run's settings
come from the lesson itself, not from the controls: the controls are set to them too, so Run afterwards
reruns the lesson, but what runs never depends on the browser having applied those updates first.
"""
from __future__ import annotations

import gradio as gr

from ..config import ConfigError
from .controller import TabHandle, request_key, user_errors
from .lessons import LESSONS, lesson_by_slug
from .links import TAB_IDS, parse_shared_run

INTRO = ("Nine short lessons on the live model, in order: read the idea, press the button to open its prepared "
         "run in the tab that shows it, look where the lesson says, answer the question, then try the change it "
         "suggests. Every lesson runs offline on this machine. A teacher can link straight to a lesson: each one "
         "shows its link.")


def lesson_link(slug: str) -> str:
    return f"?lesson={slug}"


def run_label(lesson) -> str:
    what = "Run" if lesson.steps is None else f"Step {lesson.steps}×"
    return f"▶ {what}: open this lesson's run in the {lesson.tab.capitalize()} tab"


class LearnTab:
    def __init__(self, handles: dict):
        """`handles`: the built tabs by name ("speculative", "diffusion"), whose runs the lessons open."""
        self.handles = handles
        self.walkthrough = None

    def build(self, tabs: gr.Tabs):
        gr.Markdown(INTRO, elem_id="sv-learn-intro")
        with gr.Walkthrough(selected=0, elem_id="sv-learn") as walkthrough:
            for i, lesson in enumerate(LESSONS):
                with gr.Step(lesson.short or lesson.title, id=i, elem_id=f"sv-lesson-{i + 1}"):
                    self._lesson(i, lesson, tabs, walkthrough)
        self.walkthrough = walkthrough
        return walkthrough

    def _lesson(self, i: int, lesson, tabs, walkthrough) -> None:
        gr.Markdown(f"### {lesson.title}\n**Goal.** {lesson.goal}\n\n{lesson.explain}",
                    elem_classes=["sv-lesson-text"])
        run = gr.Button(run_label(lesson), variant="primary", elem_id=f"sv-lesson-run-{i + 1}")
        gr.Markdown(f"**Look at:** {lesson.look_at}. {lesson.notice}", elem_classes=["sv-lesson-text"])
        gr.Markdown(f"**Question.** {lesson.question}", elem_id=f"sv-lesson-question-{i + 1}")
        with gr.Accordion("Show the answer", open=False, elem_id=f"sv-lesson-answer-{i + 1}"):
            gr.Markdown(lesson.answer)
        gr.Markdown(f"**Try this.** {lesson.try_change}\n\n<small>Link to this lesson: "
                    f"<a href='{lesson_link(lesson.slug)}'><code>{lesson_link(lesson.slug)}</code></a></small>")
        with gr.Row():
            if i > 0:
                gr.Button(f"← {LESSONS[i - 1].title}", elem_id=f"sv-lesson-prev-{i + 1}", size="sm").click(
                    lambda k=i - 1: gr.Walkthrough(selected=k), None, walkthrough, queue=False, api_name=False)
            if i + 1 < len(LESSONS):
                gr.Button(f"Next: {LESSONS[i + 1].title} →", elem_id=f"sv-lesson-next-{i + 1}", size="sm").click(
                    lambda k=i + 1: gr.Walkthrough(selected=k), None, walkthrough, queue=False, api_name=False)
        handle = self.handles[lesson.tab]
        wire_open_run(handle, run, tabs, lesson.tab, lambda lesson=lesson: (lesson.prompt, lesson.settings, lesson.steps),
                      api_name=f"lesson_{i + 1}", label=f"lesson {lesson.title}")


def wire_open_run(handle: TabHandle, trigger, tabs, tab: str, what, api_name=False, label: str = ""):
    """On `trigger`: switch to `tab`, set its controls to the run `what()` gives (prompt, settings, steps), and
    drive that run (steps None: to the end; k: k steps) in the tab's views; its status line ends with `label`."""
    spec = handle.controller.spec

    def show():
        prompt, settings, _ = what()
        with user_errors(spec.smaller, spec.policy):
            checked = spec.parse(settings)
        return [gr.Tabs(selected=TAB_IDS[tab]), gr.update(value=prompt), *spec.control_updates(checked)]

    def drive(view=None, session=None, request: gr.Request = None):
        prompt, settings, steps = what()
        for out in handle.controller.drive(prompt, settings, view, session, steps, request_key(request)):
            status = out[1]
            # the status says which lesson's run this is, so a class sees they are all on the same one
            yield (out[0], f"{status} · {label}", *out[2:]) if label and isinstance(status, str) else out

    trigger.click(show, None, [tabs, handle.prompt, *handle.collect_inputs], queue=False, api_name=False).then(
        drive, [handle.view_state, handle.state], handle.outputs, api_name=api_name, concurrency_limit=None)


def wire_links(demo: gr.Blocks, tabs, learn: LearnTab, handles: dict) -> None:
    """Open the page where its link says: `?lesson=<slug>` on that lesson, `?tab=…&prompt=…&settings=…&step=k`
    on a shared run, replayed to step k (the run reruns on this server: greedy and seeded runs give the same
    steps)."""
    pending = gr.State(None)

    def on_load(request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        lesson = lesson_by_slug(params.get("lesson", "")) if "lesson" in params else None
        if lesson is not None:
            return gr.Tabs(selected=TAB_IDS["learn"]), gr.Walkthrough(selected=LESSONS.index(lesson)), None
        try:
            shared = parse_shared_run(params, handles)
        except ConfigError as err:
            gr.Warning(f"This link's run could not be opened: {err}")
            shared = None
        if shared is None:
            return gr.skip(), gr.skip(), None
        return gr.Tabs(selected=TAB_IDS[shared[0]]), gr.skip(), shared

    load = demo.load(on_load, None, [tabs, learn.walkthrough, pending], queue=False, api_name=False)
    for name, handle in handles.items():
        spec = handle.controller.spec

        def controls(shared, spec=spec, name=name, handle=handle):
            if not shared or shared[0] != name:
                return [gr.skip()] * (1 + len(handle.collect_inputs))
            with user_errors(spec.smaller, spec.policy):
                checked = spec.parse(shared[2])
            return [gr.update(value=shared[1]), *spec.control_updates(checked)]

        def drive(shared, view=None, session=None, request: gr.Request = None, name=name, handle=handle):
            if not shared or shared[0] != name:
                return
            _, prompt, settings, steps = shared
            yield from handle.controller.drive(prompt, settings, view, session, steps, request_key(request))

        load.then(controls, pending, [handle.prompt, *handle.collect_inputs], queue=False, api_name=False).then(
            drive, [pending, handle.view_state, handle.state], handle.outputs, api_name=False,
            concurrency_limit=None)
