"""Import rules of the design: viz never imports torch; decoding never imports gradio, plotly or text; kernels import
nothing above them; models never import decoding; runs never import the UI; the UI never drives decoders itself;
and no two packages import each other, directly or through others."""
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
    # weights, caches and loaders: below decoding, never above it
    "models": {"gradio", "plotly", "specviz.decoding", "specviz.runs", "specviz.settings", "specviz.viz", "specviz.ui",
               "specviz.textio"},
    # settings in, prepared runs out: shared by the CLI, the app and the benchmarks, so nothing of the app
    "runs": {"gradio", "plotly", "networkx", "specviz.viz", "specviz.ui", "specviz.bench"},
    "settings.py": {"torch", "transformers", "gradio", "plotly", "specviz.models", "specviz.runs", "specviz.ui",
                    "specviz.viz"},
    "textio.py": {"torch", "gradio", "plotly", "specviz.decoding", "specviz.models"},
    # the UI prepares runs through specviz.runs and replays records; it never builds decoders or kernels itself
    "ui": {"transformers", "specviz.kernels", "specviz.train", "specviz.bench", "specviz.decoding.engine",
           "specviz.decoding.diffusion", "specviz.decoding.jacobi"},
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


def _node(module: str) -> str | None:
    """The package (or top-level module) of specviz an import names: specviz.decoding.engine -> decoding."""
    parts = module.split(".")
    return parts[1] if parts[0] == "specviz" and len(parts) > 1 else None


def test_no_import_cycle_between_packages():
    graph: dict = {}
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT).parts
        src = rel[0].removesuffix(".py")
        for name in imports(f):
            dst = _node(name or "")
            if dst and dst != src and dst != "__main__":
                graph.setdefault(src, set()).add(dst)
    # depth-first search for a back edge
    state: dict = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle between packages: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
