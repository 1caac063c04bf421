"""Gradio UI: one builder per tab, assembled by `build_demo`."""
from .app import CSS, build_demo, launch

__all__ = ["CSS", "build_demo", "launch"]
