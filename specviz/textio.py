"""The text boundary: prompts to ids and ids to display pieces.

Only the CLI and the UI import this; decoding and viz never see text.
"""
from __future__ import annotations

from .config import ConfigError

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
        return "␠" * len(text)
    return text


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
