"""Import rules of the design: viz never imports torch; decoding never imports gradio, plotly or text; kernels import
nothing above them."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "specviz"
RULES = {
    "viz": {"torch", "transformers", "gradio", "specviz.decoding", "specviz.models"},
    "decoding": {"gradio", "plotly", "networkx", "specviz.viz", "specviz.ui", "specviz.textio", "tokenizers"},
    "trace.py": {"torch", "transformers", "gradio", "plotly"},
    # kernels sit below decoding and models: tensors in, tensors out
    # training reads the target and writes weights; it never touches the app
    "train": {"gradio", "plotly", "specviz.viz", "specviz.ui"},
    "kernels": {"transformers", "gradio", "plotly", "specviz.decoding", "specviz.models", "specviz.viz", "specviz.ui"},
}


def imports(path: Path):
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


@pytest.mark.parametrize("area", list(RULES))
def test_layer_imports(area):
    files = [ROOT / area] if area.endswith(".py") else sorted((ROOT / area).rglob("*.py"))
    assert files
    for f in files:
        for name in imports(f):
            for banned in RULES[area]:
                assert not (name == banned or name.startswith(banned + ".")), f"{f.name} imports {name}"
