"""Assemble the app. Nothing here loads weights: models load on the first run."""
from __future__ import annotations

import gradio as gr

from ..models import ModelStore
from ..viz.palette import css
from .speculative import SpeculativeTab

CSS = css()

INTRO = """# specviz · speculative decoding, step by step
A cheap **drafter** proposes tokens; the **target** model scores the whole draft in **one forward pass** and keeps
the longest prefix it agrees with, plus one token of its own (the **bonus**). Watch each step below: the draft tree,
what was accepted, and how confident each model was. Runs on the embedded SmolLM2-135M-Instruct by default."""


def build_demo(store: ModelStore | None = None) -> gr.Blocks:
    store = store or ModelStore()
    with gr.Blocks(title="specviz") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Speculative"):
            SpeculativeTab(store).build()
    return demo


def launch(demo: gr.Blocks, **kwargs):
    kwargs.setdefault("css", CSS)
    return demo.queue(default_concurrency_limit=4).launch(**kwargs)
