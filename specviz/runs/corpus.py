"""Retrieval datastores: the shipped corpus or a user's text file, tokenised with the target's tokenizer
once and cached in the model store."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import ConfigError, shown
from ..decoding.retrieval import SuffixArray, corpus_tokens
from ..textio import encode_documents

SHIPPED_CORPUS_DIR = Path(__file__).resolve().parents[2] / "assets" / "corpus"
MAX_CORPUS_BYTES = 50 << 20


def shipped_documents() -> list:
    """The texts of the shipped retrieval corpus (assets/corpus/*.jsonl, one {"text": ...} per line)."""
    docs = []
    for path in sorted(SHIPPED_CORPUS_DIR.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            docs += [json.loads(line)["text"] for line in f if line.strip()]
    return docs


def load_datastores(store, target, corpus: str) -> dict:
    """Suffix-array datastores for a corpus setting. "context" needs none (the drafter indexes the
    context itself each step)."""
    stores = {}
    if corpus in ("shipped", "context+shipped"):
        stores["retrieval:shipped"] = _datastore(store, target, "shipped", shipped_documents)
    elif corpus != "context":
        named = f"corpus file {shown(corpus)}"  # as the request spelled it, never the resolved path
        path = Path(os.path.expanduser(corpus))
        try:
            if not path.is_file():
                raise ConfigError(f"{named} does not exist (use context, shipped, context+shipped or a text file path)")
            stat = path.stat()
            resolved = path.resolve()
        except OSError as err:  # a name too long for a path, a folder that cannot be read
            raise ConfigError(f"{named} cannot be read ({err.strerror or 'unreadable'})") from None
        if stat.st_size > MAX_CORPUS_BYTES:
            raise ConfigError(f"{named} is larger than {MAX_CORPUS_BYTES >> 20} MB")

        def read():
            try:
                return [path.read_text(encoding="utf-8")]
            except UnicodeDecodeError:
                raise ConfigError(f"{named} is not UTF-8 text") from None
            except OSError as err:
                raise ConfigError(f"{named} cannot be read ({err.strerror or 'unreadable'})") from None

        stores["retrieval:file"] = _datastore(store, target, f"{resolved}:{stat.st_mtime_ns}:{stat.st_size}", read,
                                              named)
    return stores


def _datastore(store, target, key: str, documents, named: str = "") -> SuffixArray:
    def build():
        docs = documents()
        if not docs or not any(d.strip() for d in docs):
            raise ConfigError(f"{named or 'the ' + key.split(':')[0] + ' corpus'} is empty")
        return SuffixArray(corpus_tokens(encode_documents(target.tokenizer, docs)))

    return store.cached("datastore", (target.model_id, key), build)
