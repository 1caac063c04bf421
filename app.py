"""specviz app entry point: `python app.py` serves the app on http://127.0.0.1:7860.

The module-level `demo` builds without loading any weights; under __main__ the
embedded model is loaded (converted once, then cached) before the server starts,
so the first Run does not wait for it.
"""
import os
import time

T0 = time.perf_counter()

from specviz.models import ModelStore  # noqa: E402
from specviz.ui import build_demo, launch  # noqa: E402

store = ModelStore()
demo = build_demo(store)

if __name__ == "__main__":
    loaded = store.get(None)
    print(f"embedded model ready ({loaded.load_s:.1f} s to load); app ready in {time.perf_counter() - T0:.1f} s", flush=True)
    launch(
        demo,
        server_name=os.environ.get("SPECVIZ_HOST", "127.0.0.1"),
        server_port=int(os.environ.get("SPECVIZ_PORT", "7860")),
    )
