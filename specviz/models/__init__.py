"""Model loading: the embedded GGUF default, any Hugging Face id, tiny random models for tests."""
from .loading import (
    LoadedModel,
    ModelLoadError,
    ModelStore,
    check_tokenizers_match,
    load_model,
    tiny_random_llama,
)
from .embedded import load_embedded

__all__ = [
    "LoadedModel",
    "ModelLoadError",
    "ModelStore",
    "check_tokenizers_match",
    "load_embedded",
    "load_model",
    "tiny_random_llama",
]
