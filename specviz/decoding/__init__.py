"""Decoding: sampling, verification, tree buffers, KV surgery and strategies.

Knows nothing of text, plots or gradio: it moves token ids and tensors and
yields `specviz.trace` records.
"""
