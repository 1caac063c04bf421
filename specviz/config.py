"""Knobs: everything a user can turn (CLI flag, UI control, API field), described once.

A `Knob` carries its name, default, range or options, help, and whether it may
change in the middle of a run (`live`: a tree-shape knob takes effect on the
next step; any other change starts a new run). Methods that share a knob share
this one object, so the CLI, the app, the API and validation agree. The run
settings objects built from these knobs live in `specviz/settings.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

EMBEDDED_MODEL_ID = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_LAYERS = 30  # its decoder layers (tested against the converted model): an early exit keeps at most 29
AUTO = "auto"  # the value of a knob the decoder sizes itself (`Knob.auto`)


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message is for the user."""


def shown(value, limit: int = 60) -> str:
    """A value as a message quotes it: its repr, cut to about `limit` characters, so a bad value (a
    megabyte of text, a 400-digit number) never becomes a megabyte of message."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} characters written out"
    return f"{text[:limit]}… ({size})"


@dataclass(frozen=True)
class Knob:
    name: str
    default: float
    low: float
    high: float
    help: str
    integer: bool = True
    # a non-empty `choices` makes this a named-option knob (default is one of them);
    # `free_text` also accepts any other non-empty string, e.g. a file path
    choices: tuple = ()
    free_text: bool = False
    # may change mid-run: the running decoder applies it from its next step (tree shape, window)
    live: bool = False
    boolean: bool = False  # an on/off switch: the value is a bool
    # also accepts "auto": the decoder chooses the value every step (the budget, from this machine's costs)
    auto: bool = False

    MAX_TEXT = 10_000  # characters of a free-text value (a tree shape, a corpus path)

    def check(self, value):
        if self.boolean:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "on", "yes", "1"):
                return True
            if text in ("false", "off", "no", "0"):
                return False
            raise ConfigError(f"{self.name} is a switch: use true or false, got {shown(value)}")
        if self.choices:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{self.name} must be text (one of {', '.join(self.choices)}), got {shown(value)}")
            text = value.strip() if value is not None else ""
            if len(text) > self.MAX_TEXT:
                raise ConfigError(f"{self.name} is {len(text):,} characters; the limit is {self.MAX_TEXT:,}")
            if text in self.choices or (self.free_text and text):
                return text
            extra = " or a file path" if self.free_text else ""
            raise ConfigError(f"{self.name}={shown(value)} is not an option: use one of {', '.join(self.choices)}{extra}")
        if self.auto and isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if isinstance(value, bool):
            raise ConfigError(f"{self.name} must be a number{self._or_auto}, got {shown(value)}")
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{self.name} must be a number{self._or_auto}, got {shown(value)}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise ConfigError(f"{self.name} must be a finite number, got {shown(value)}")
        if self.integer and v != int(v):
            raise ConfigError(f"{self.name} must be a whole number, got {shown(value)}")
        if not (self.low <= v <= self.high):
            raise ConfigError(
                f"{self.name}={shown(value)} is out of range: it must lie in [{_fmt(self.low)}, {_fmt(self.high)}]"
            )
        return int(v) if self.integer else v

    @property
    def _or_auto(self) -> str:
        return " or 'auto'" if self.auto else ""


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# knobs shared by every method
MAX_NEW_TOKENS = Knob("max_new_tokens", 64, 1, 1024, "tokens to generate at most")
TEMPERATURE = Knob("temperature", 0.0, 0.0, 2.0, "0 means greedy", integer=False)
TOP_P = Knob("top_p", 1.0, 0.01, 1.0, "nucleus sampling mass", integer=False)
SEED = Knob("seed", 0, 0, 2**31 - 1, "random seed for sampling")

# method knobs
DRAFT_LEN = Knob("draft_len", 3, 1, 16, "tokens drafted per step", live=True)
EXIT_LAYER = Knob("exit_layer", 20, 1, 64, "layers kept by the early-exit self-draft")
NGRAM = Knob("ngram", 3, 1, 8, "longest n-gram matched by prompt lookup (shorter ones down to 2 are tried next)")

# tree-shape knobs: they take effect on the next step of a running decode
TREE_DEPTH = Knob("depth", 5, 1, 16, "deepest draft level of the tree", live=True)
TOP_K = Knob("top_k", 4, 1, 10, "children drafted per expanded node (and nodes expanded per level)", live=True)
BUDGET = Knob("budget", 32, 1, 128, "drafted nodes per step at most (the verify cost); auto: each step verifies "
              "the draft that pays most under this machine's measured costs, down to none", live=True, auto=True)
TREE_PRESET = Knob("preset", "medusa-like-26", 0, 0,
                   "static tree shape: a preset, or your own rank paths such as 0;1;0,0;0,1 (Medusa 'choices')",
                   integer=False, choices=("chain-4", "chain-8", "binary-14", "medusa-like-26", "wide-40", "deep-64"),
                   free_text=True, live=True)
CORPUS = Knob("corpus", "context+shipped", 0, 0, "retrieval datastore: the prompt + text so far, the shipped corpus, or a text file",
              integer=False, choices=("context", "shipped", "context+shipped"), free_text=True)
PRUNE_PROB = Knob("prune_prob", 0.1, 0.0, 1.0, "graft: model nodes below this cumulative draft probability are pruned",
                  integer=False, live=True)
DRAFT_VOCAB = Knob("draft_vocab", 0, 0, 262144,
                   "EAGLE: draft from only the N tokens most frequent in the drafter's training data (FR-Spec); 0 = "
                   "the whole vocabulary. Cuts the drafter's LM-head cost; the target still verifies over every token, "
                   "so the output is unchanged. Ignored by drafters that ship no ranked vocabulary", live=True)
JACOBI_WINDOW = Knob("window", 8, 1, 64, "Jacobi: positions guessed and refined in parallel each step", live=True)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def checked(cls, temperature=0.0, top_p=1.0, seed=0) -> "SamplingConfig":
        return cls(TEMPERATURE.check(temperature), TOP_P.check(top_p), SEED.check(seed))


# lattice (diffusion and Jacobi) knobs ------------------------------------------
SCHEDULE = Knob("schedule", "low_confidence", 0, 0, "which cells a diffusion step reveals (see the schedule notes)",
                integer=False, choices=("low_confidence", "random", "margin", "entropy", "threshold", "prophet",
                                        "remask"))
BLOCK_SIZE = Knob("block_size", 8, 1, 1024, "cells per semi-autoregressive block (the canvas length = one block)")
DIFFUSION_STEPS = Knob("steps", 32, 1, 1024, "step budget of the fixed-count schedules over the whole canvas")
CONF_THRESHOLD = Knob("threshold", 0.9, 0.0, 1.0, "threshold schedule: confidence that reveals a cell in parallel",
                      integer=False)
PROPHET_GAP = Knob("prophet_gap", 5.0, 0.0, 30.0, "prophet: mean top-1 minus top-2 logit gap that triggers all-in "
                   "(×1.5 in the first third of the run, ×0.5 in the last: Prophet's 7.5 / 5 / 2.5)", integer=False)
REMASK_BELOW = Knob("remask_below", 0.2, 0.0, 1.0, "remask: revealed cells of the block committed with less "
                    "confidence than this may return to the mask", integer=False)
ADAPTIVE_BLOCK = Knob("adaptive_block", False, 0, 1, "AdaBlock-style: end each block after a confident delimiter",
                      integer=False, boolean=True)
DELIMITER_THRESHOLD = Knob("delimiter_threshold", 0.3, 0.0, 1.0, "adaptive blocks: confidence a delimiter "
                           "(newline, period, …) needs to end a block", integer=False)
KV_CACHE = Knob("cache", "auto", 0, 0, "auto: reuse finished blocks' KV where exact (block-causal models); "
                "off: recompute the whole canvas every step", integer=False, choices=("auto", "off"))
LATTICE_KNOBS = (SCHEDULE, BLOCK_SIZE, DIFFUSION_STEPS, CONF_THRESHOLD, PROPHET_GAP, REMASK_BELOW, ADAPTIVE_BLOCK,
                 DELIMITER_THRESHOLD, KV_CACHE, JACOBI_WINDOW)
