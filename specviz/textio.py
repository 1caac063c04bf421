"""The text boundary: prompts to ids and ids to display pieces.

Only the CLI and the UI import this; decoding and viz never see text.
"""
from __future__ import annotations

import numpy as np

from .config import ConfigError
from .trace import DiffusionStep, Trace, TraceError

MAX_PROMPT_CHARS = 20_000


def encode_prompt(tokenizer, text: str, chat: bool = True) -> list:
    """Token ids of a user prompt, wrapped in the model's chat template when it has one."""
    if text is not None and not isinstance(text, str):
        raise ConfigError(f"the prompt must be text, got {type(text).__name__}")
    if text is None or not text.strip():
        raise ConfigError("the prompt is empty: type a question or pick an example")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("the prompt contains characters that are not valid text (an unpaired surrogate); "
                          "remove them") from None
    if len(text) > MAX_PROMPT_CHARS:
        raise ConfigError(f"the prompt is {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
    if chat and getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
        ids = enc["input_ids"] if hasattr(enc, "keys") else enc
    else:
        ids = tokenizer(text)["input_ids"]
    return [int(i) for i in ids]


def check_prompt_fits(n_prompt: int, max_new_tokens: int, max_positions: int) -> None:
    if n_prompt + max_new_tokens > max_positions:
        raise ConfigError(
            f"the prompt is {n_prompt:,} tokens; with max_new_tokens={max_new_tokens} it exceeds the model's "
            f"context of {max_positions:,} tokens. Shorten the prompt or lower max_new_tokens."
        )


class PieceDecoder:
    """Per-token display text that concatenates to the decoded string, decoded incrementally.

    Decoding tokens one at a time breaks multi-byte characters and drops SentencePiece spaces, and
    re-decoding the whole output for every token costs O(n) per token. So each token decodes a short
    window: the tokens since the last piece that ended cleanly (`_read`), behind the piece before it
    (`_prefix`) as context, and its piece is what that window adds. A token that ends inside a
    multi-byte character gets an empty piece; the character arrives with the token that completes it.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list = []
        self.pieces: list = []
        self._text = ""
        self._prefix = 0  # context tokens start here
        self._read = 0  # tokens before this have been emitted

    def _decode(self, ids: list) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def extend(self, ids) -> list:
        new = []
        for i in ids:
            self.ids.append(int(i))
            before = self._decode(self.ids[self._prefix : self._read])
            after = self._decode(self.ids[self._prefix :])
            piece = ""
            if len(after) > len(before) and not after.endswith("\ufffd"):
                piece = after[len(before) :] if after.startswith(before) else after
                self._prefix, self._read = self._read, len(self.ids)
            self._text += piece
            self.pieces.append(piece)
            new.append(piece)
        return new

    @property
    def text(self) -> str:
        return self._text


def token_label(tokenizer, token_id: int) -> str:
    """A short visible label for one token (tree nodes, hover)."""
    text = tokenizer.decode([int(token_id)], skip_special_tokens=False)
    text = text.replace("\n", "⏎").replace("\t", "⇥")
    if text == "":
        return f"#{token_id}"
    if text.strip() == "":
        # ␣ (U+2423), not ␠ (U+2420): the fonts a Debian machine has (DejaVu, Liberation) lack ␠, which then
        # renders as an empty box in the browser
        return "␣" * len(text)
    return text


MAX_TOKEN_CHARS = 100  # no single token is longer


def single_token(tokenizer, text, knows=lambda token_id: True, what: str = "the token") -> int:
    """The id of `text` when it is exactly one token (no special tokens added; a leading space is part of the
    token, so ' the' and 'the' differ), or of `#<id>`: a token to pin on a diffusion canvas, or to put in a draft.
    Otherwise a ConfigError that says how many tokens it is. `knows(id)`: whether the model has that token (a
    sub-vocabulary model does not have them all); `what` names the field in messages."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} is text, not {type(text).__name__}")
    if text == "":
        raise ConfigError(f"type {what} (exactly one token, e.g. ' water': a leading space is part of a word inside a "
                          "sentence), or #id")
    if len(text) > MAX_TOKEN_CHARS:
        raise ConfigError(f"{what} is {len(text):,} characters: one token is a word or a piece of one")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} contains characters that are not valid text (an unpaired surrogate)") from None
    if text.startswith("#") and text[1:].isdigit():
        token = int(text[1:])
        if not 0 <= token < len(tokenizer) or not knows(token):
            raise ConfigError(f"token id {token} is outside the model's vocabulary")
        return token
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # a word inside a sentence starts with a space: say so when the spaced form is the one token
    spaced = [] if text.startswith(" ") else tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    hint = f"; did you mean {' ' + text!r}, with a leading space?" if len(spaced) == 1 and knows(spaced[0]) else ""
    if len(ids) != 1:
        pieces = " + ".join(repr(tokenizer.decode([i])) for i in ids[:8]) + (" + …" if len(ids) > 8 else "")
        raise ConfigError(f"{shown_text(text)} is {len(ids)} tokens ({pieces}), not one{hint}")
    if not knows(int(ids[0])):
        raise ConfigError(f"{shown_text(text)} (token {ids[0]}) is not in the model's vocabulary{hint}")
    return int(ids[0])


def shown_text(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def encode_documents(tokenizer, documents: list) -> list:
    """Token ids of plain documents (no chat template, no special tokens), e.g. a retrieval corpus."""
    return [tokenizer(d, add_special_tokens=False)["input_ids"] for d in documents]


# single tokens that end a phrase: AdaBlock-style blocks end after one of them
DELIMITER_TEXTS = (".", "\n", "!", "?", ";", ":", ",", ".\n", "\n\n", ".\n\n")


def delimiter_ids(tokenizer) -> tuple:
    """The ids of the delimiter texts that the tokenizer encodes as one token."""
    ids = set()
    for text in DELIMITER_TEXTS:
        enc = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.add(int(enc[0]))
    return tuple(sorted(ids))


# A trace holds token ids only (decoding knows nothing of text). The app's and the CLI's exports add the text of
# every id they hold under this key, so the file replays with its words on a machine without the model (or its
# tokenizer: a GPU run of a Hub model, opened on a laptop offline).
TOKEN_TEXT_KEY = "token_text"
PROMPT_TEXT_KEY = "prompt_text"
MAX_TOKEN_TEXT = 300_000  # entries
MAX_PIECE_CHARS = 256


def trace_token_ids(trace: Trace) -> set:
    """Every token id a view of this trace may show."""
    ids = set(trace.prompt_ids.tolist())
    for s in trace.steps:
        if isinstance(s, DiffusionStep):
            arrays = (s.canvas, s.proposal, s.topk_ids)
        else:
            arrays = (s.tree.token_ids, s.committed_ids, s.target_topk_ids, s.draft_topk_ids, s.residual_topk_ids,
                      np.asarray([s.bonus_token]))
        for a in arrays:
            ids.update(int(x) for x in np.asarray(a).reshape(-1) if x >= 0)
    return ids


def token_text(tokenizer, trace: Trace) -> dict:
    """{id as text: the token's own text} for every id in the trace."""
    return {str(i): tokenizer.decode([i], skip_special_tokens=False) for i in sorted(trace_token_ids(trace))}


def trace_file_dict(trace: Trace, tokenizer=None, prompt: str | None = None) -> dict:
    """The JSON object of a trace file: the trace, plus its tokens' text when the tokenizer is at hand and the
    prompt as typed (the ids hold it wrapped in the chat template; a rerun needs it unwrapped)."""
    d = trace.to_dict()
    if tokenizer is not None:
        d[TOKEN_TEXT_KEY] = token_text(tokenizer, trace)
    if prompt is not None:
        d[PROMPT_TEXT_KEY] = prompt
    return d


def read_prompt_text(d: dict) -> str | None:
    """The prompt as typed, from a trace file that has it (checked as a prompt is), else None."""
    prompt = d.get(PROMPT_TEXT_KEY)
    if prompt is None:
        return None
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise TraceError(f"{PROMPT_TEXT_KEY} must be text of at most {MAX_PROMPT_CHARS:,} characters")
    return prompt


class TokenText:
    """Decodes ids from a trace file's own token text, standing in for the tokenizer when replaying (the views
    call `decode` as they would a tokenizer's). An id the file does not name shows as `#id`."""

    def __init__(self, pieces: dict):
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.pieces.get(int(i), f"#{int(i)}") for i in ids)


def read_token_text(d: dict) -> TokenText | None:
    """The file's token text, checked (an id → text object of bounded size), or None when it has none."""
    raw = d.get(TOKEN_TEXT_KEY)
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > MAX_TOKEN_TEXT:
        raise TraceError(f"{TOKEN_TEXT_KEY} must be an object of at most {MAX_TOKEN_TEXT:,} id → text entries")
    pieces = {}
    for key, text in raw.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) < 11) or not isinstance(text, str):
            raise TraceError(f"{TOKEN_TEXT_KEY}: each entry maps a token id to its text (found {key[:20]!r})")
        pieces[int(key)] = text[:MAX_PIECE_CHARS]
    return TokenText(pieces)


