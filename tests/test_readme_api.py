"""The README's API examples run as written (against the test app instead of port 7860)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def api_examples() -> list:
    text = README.read_text()
    section = text[text.index("## API (gradio_client)"): text.index("## Kernels and the GPU")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_api_examples_run(app_url, embedded, capsys):
    blocks = api_examples()
    assert len(blocks) >= 4
    scope: dict = {}
    for block in blocks:
        exec(compile(block.replace('"http://127.0.0.1:7860/"', repr(app_url)), str(README), "exec"), scope)
    out = capsys.readouterr().out
    assert "'method': 'retrieval'" in out and "tiny-mdm" in out
    assert scope["jacobi"]["settings"]["method"] == "jacobi" and scope["jacobi"]["lossless"] is True
    assert scope["trace"].settings["method"] == "ngram_tree" and 0 < len(scope["trace"].output_ids) <= 32
    assert [r["schedule"] for r in scope["result"]] == ["low_confidence", "threshold"]
    assert scope["branch_summary"]["speedup_vs_ar"]["matches_ar"] is True  # /intervene's branch equals AR
    assert scope["branch_summary"]["output_ids"] == scope["original"]["output_ids"]
    assert scope["pinned"]["summary"]["pinned"] == 1 and scope["pinned"]["summary"]["sent_back"] == 1
    ar, tree, diffusion = scope["lanes"]  # the Compare tab's /compare
    assert tree["equals_ar"] is True and ar["speedup_vs_ar"] == 1.0 and diffusion["label"].startswith("3 · diffusion")
