"""Per-browser-session run state and rendering of a recorded step.

A `SpecSession` lives in the session's `gr.State`: its live decoder (models are
shared read-only through the `ModelStore`), the step records so far, and the
text pieces of the generated tokens. Rendering reads only the stored records,
so the step slider never calls the model.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..decoding.engine import SpeculativeDecoder
from ..runner import PreparedRun
from ..textio import PieceDecoder, token_label
from ..trace import Trace, committed_tokens, summarize
from ..viz.confidence import running_strip_figure, step_confidence_figure
from ..viz.panels import depth_chart, generated_text_html, metrics_html
from ..viz.tree import empty_figure, tree_figure


@dataclass
class SpecSession:
    key: tuple  # the settings this run was started with
    prepared: PreparedRun
    decoder: SpeculativeDecoder
    prompt_text: str
    pieces: PieceDecoder
    steps: list = field(default_factory=list)
    node_labels: list = field(default_factory=list)  # per step: display text of each tree node
    bonus_labels: list = field(default_factory=list)
    speedup: dict | None = None
    paused: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tokenizer(self):
        return self.prepared.target.tokenizer

    @property
    def done(self) -> bool:
        return self.decoder.done

    def advance(self):
        """One decoding step, recorded; None when the run is over."""
        step = self.decoder.step()
        if step is None:
            return None
        tok = self.tokenizer
        self.node_labels.append([token_label(tok, t) for t in step.tree.token_ids])
        self.bonus_labels.append(token_label(tok, step.bonus_token))
        self.pieces.extend(step.committed_ids)
        self.steps.append(step)
        return step

    def trace(self) -> Trace:
        return Trace(
            method=self.prepared.method.name,
            config=self.decoder.config.to_dict(),  # shape knobs may have changed mid-run
            target_id=self.prepared.target.model_id,
            draft_id=self.prepared.draft_id,
            prompt_ids=self.decoder.prompt_ids,
            steps=list(self.steps),
            wall_s=0.0,
            prefill_ms=self.decoder.prefill_ms,
            finish_reason=self.decoder.finish_reason,
            backend=self.decoder.backend,
            lossless=self.decoder.lossless,
        )


def new_session(key: tuple, prepared: PreparedRun, prompt_text: str, prompt_ids: list) -> SpecSession:
    return SpecSession(
        key=key,
        prepared=prepared,
        decoder=prepared.decoder(prompt_ids, record=True),
        prompt_text=prompt_text,
        pieces=PieceDecoder(prepared.target.tokenizer),
    )


def measure_speedup(session: SpecSession) -> dict:
    """Time plain AR on the same prompt, target and sampling settings, right now, in this session.

    Both sides are timed inside the decoder (draft + verify of every step, with
    the same recording on), so page rendering and model loading are excluded.
    """
    method_s = sum(s.draft_ms + s.verify_ms for s in session.steps) / 1000
    n = len(session.pieces.ids)
    if session.prepared.method.name == "ar":
        return {"ratio": 1.0, "ar_s": method_s, "method_s": method_s, "matches_ar": None,
                "how": "this run is the AR baseline itself"}
    baseline = session.prepared.baseline().limited(max(n, 1))
    dec = baseline.decoder(session.decoder.prompt_ids, record=True)
    ar_steps = list(dec.steps())
    ar_s = sum(s.draft_ms + s.verify_ms for s in ar_steps) / 1000
    same = None
    if session.prepared.config.sampling.greedy:
        same = dec.output_ids.tolist() == session.decoder.output_ids.tolist()
    return {
        "ratio": ar_s / method_s if method_s > 0 else 0.0,
        "ar_s": ar_s,
        "method_s": method_s,
        "matches_ar": same,
        "how": f"AR {ar_s:.2f} s ÷ this run {method_s:.2f} s for {n} tokens, same prompt, timed just now in this session",
    }


def render(session: SpecSession | None, k: int | None = None, tree_depth: int | None = None) -> dict:
    """Everything the Speculative tab shows, for step k (default: the latest)."""
    if session is None or not session.steps:
        return {
            "text": generated_text_html([], []),
            "tree": empty_figure("Press Run or Step to draft and verify"),
            "confidence": empty_figure("Per-position probabilities of the current step", height=220),
            "strip": empty_figure("No tokens yet", height=200),
            "metrics": "",
            "depth": empty_figure("Acceptance by depth appears once something is drafted", height=220),
            "n_steps": 0,
            "k": 0,
        }
    n = len(session.steps)
    k = n - 1 if k is None else max(0, min(int(k), n - 1))
    step = session.steps[k]
    tokens = committed_tokens(session.steps)
    summary = summarize(session.steps)
    return {
        "text": generated_text_html(session.pieces.pieces, tokens, current_step=k),
        "tree": tree_figure(step, session.node_labels[k], session.bonus_labels[k], max_depth=tree_depth),
        "confidence": step_confidence_figure(step, session.node_labels[k]),
        "strip": running_strip_figure(tokens, session.pieces.pieces, current_step=k),
        "metrics": metrics_html(summary, session.speedup, session.decoder.backend, session.decoder.lossless,
                                session.decoder.finish_reason),
        "depth": depth_chart(summary),
        "n_steps": n,
        "k": k,
    }
