"""The text boundary: incremental per-token pieces that add up to the decoded text."""
import pytest

from specviz.textio import PieceDecoder


@pytest.mark.parametrize("text", [
    "Hello, world! The sky is blue.\nNew line here.",
    "Ünïcödé: 東京タワー, emoji 🙂🚀 and math ∑ x² ≤ ∞",
    "  leading spaces and\ttabs  ",
])
def test_pieces_concatenate_to_the_decoded_text(embedded, text):
    tok = embedded.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    dec = PieceDecoder(tok)
    for i in range(0, len(ids), 3):  # committed a few at a time, as steps do
        out = dec.extend(ids[i : i + 3])
        assert len(out) == len(ids[i : i + 3])
    assert len(dec.pieces) == len(ids)
    assert "".join(dec.pieces) == dec.text == tok.decode(ids, skip_special_tokens=False)


def test_decoding_stays_incremental(embedded):
    """Each token decodes a short window, not the whole output: the cost per token does not grow."""
    tok = embedded.tokenizer
    calls = []

    class Counting:
        def decode(self, ids, **kw):
            calls.append(len(ids))
            return tok.decode(ids, **kw)

    ids = tok("word " * 400, add_special_tokens=False)["input_ids"]
    dec = PieceDecoder(Counting())
    dec.extend(ids)
    assert dec.text == tok.decode(ids) and max(calls) <= 4


@pytest.mark.parametrize("text,message", [
    ("caf\ud800e", "not valid text"),
    (12, "the prompt must be text"),
    ("\t \n", "the prompt is empty"),
    ("x" * 20_001, "limit is 20,000"),
])
def test_bad_prompts_get_a_clear_message(embedded, text, message):
    from specviz.config import ConfigError
    from specviz.textio import encode_prompt

    with pytest.raises(ConfigError, match=message):
        encode_prompt(embedded.tokenizer, text)
    assert encode_prompt(embedded.tokenizer, "ok\x00 with a NUL") # control characters are text
