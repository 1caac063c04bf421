"""Assemble the app. Nothing here loads weights: models load on the first run."""
from __future__ import annotations

import os

import gradio as gr

from ..models import ModelStore
from ..policy import ServerPolicy
from ..viz.palette import css
from .benchmark import BenchmarkPanel
from .compare import CompareTab
from .controller import Sharing
from .diffusion import DiffusionTab
from .inputs import AppBlocks
from .learn import LearnTab, wire_links
from .replay import add_replay_endpoint
from .space import listen_address
from .speculative import SpeculativeTab

CSS = css()

INTRO = """# specviz · parallel decoding, step by step
**Speculative**: a cheap **drafter** proposes tokens; the **target** model scores the whole draft in **one forward
pass** and keeps the longest prefix it agrees with, plus one token of its own (the **bonus**).
**Diffusion**: a masked diffusion LM fills a canvas of masked cells over a few steps, revealing the cells a
**schedule** picks; Jacobi decoding makes an AR model fill the same lattice. Runs offline on the embedded
SmolLM2-135M-Instruct and a small trained diffusion model. **New here?** The **Learn** tab walks through the ideas
in nine short lessons on the live model."""


def build_demo(store: ModelStore | None = None, sharing: Sharing | None = None) -> gr.Blocks:
    """The app. `sharing` carries the server's policy (public mode), turns and limits; the default is a
    local server (`Sharing()`: everything allowed, no limits but the turns)."""
    store = store or ModelStore()
    sharing = sharing or Sharing()
    with AppBlocks(title="specviz") as demo:
        gr.Markdown(INTRO)
        if sharing.policy.public:
            gr.Markdown(sharing.policy.describe(), elem_id="sv-public-note")
        with gr.Tabs(selected="speculative") as tabs:
            with gr.Tab("Speculative", id="speculative", elem_id="sv-tab-speculative"):
                speculative = SpeculativeTab(store, sharing)
                speculative.build()
            with gr.Tab("Diffusion", id="diffusion", elem_id="sv-tab-diffusion"):
                diffusion = DiffusionTab(store, sharing)
                diffusion.build()
            with gr.Tab("Compare", id="compare", elem_id="sv-tab-compare"):
                CompareTab(store, sharing).build()
                with gr.Accordion("Benchmark: Spec-Bench questions, every method against AR", open=False,
                                  elem_id="sb-accordion"):
                    BenchmarkPanel(store, sharing).build()
            handles = {"speculative": speculative.controller.handle, "diffusion": diffusion.controller.handle}
            with gr.Tab("Learn", id="learn", elem_id="sv-tab-learn"):
                learn = LearnTab(handles)
                learn.build(tabs)
        wire_links(demo, tabs, learn, handles)
        add_replay_endpoint(sharing.policy.public)
    demo.sharing = sharing  # the server's turns and limits, for the load report and tests
    return demo


def server_from_env(environ=None) -> tuple:
    """(store, demo, host, port) as the environment asks: where to listen (`space.listen_address`), whether
    the server is public (`ServerPolicy.from_env`: a Space, an address beyond localhost, or
    SPECVIZ_PUBLIC), and so which models may run their own code: on a public server only those its
    operator pinned in SPECVIZ_REMOTE_CODE_MODELS, never all of them."""
    env = os.environ if environ is None else environ
    host, port = listen_address(env)
    policy = ServerPolicy.from_env(env, host)
    trust_all = not policy.public and env.get("SPECVIZ_TRUST_REMOTE_CODE", "").strip().lower() in ("1", "true", "yes")
    store = ModelStore(trust_remote_code=trust_all, remote_code_revisions=policy.remote_code)
    demo = build_demo(store, Sharing.for_server(policy, env))
    return store, demo, host, port


def launch(demo: gr.Blocks, **kwargs):
    kwargs.setdefault("css", CSS)
    sharing = getattr(demo, "sharing", None) or Sharing()
    # every Run / Step streams at once (the model is shared in turns), so the worker threads must cover
    # the runs a server admits plus its quick handlers
    kwargs.setdefault("max_threads", (sharing.limits.max_active or 48) + 16)
    # the only uploads are trace files to replay (`replay.PUBLIC_MAX_CHARS` is 8 M characters); Gradio's upload
    # route is capped to that
    kwargs.setdefault("max_file_size", os.environ.get("SPECVIZ_MAX_UPLOAD", "8mb"))
    # a bounded queue: when the server is full a new request is told so instead of waiting without end
    max_size = int(os.environ.get("SPECVIZ_QUEUE_MAX", 64))
    return demo.queue(default_concurrency_limit=4, max_size=max_size).launch(**kwargs)
