"""specviz: watch parallel decoding of language models step by step."""

__version__ = "0.1.0"
