"""specviz app entry point: `python app.py` serves the app on http://127.0.0.1:7860 (on 0.0.0.0:7860 on a
Hugging Face Space; `specviz.ui.space.listen_address` decides, SPECVIZ_HOST / SPECVIZ_PORT override).

The module-level `demo` builds without loading any weights; under __main__ the
embedded model is loaded (converted once, then cached) before the server starts,
so the first Run does not wait for it.
"""
import os
import time

T0 = time.perf_counter()

from specviz.models import ModelStore  # noqa: E402
from specviz.ui import build_demo, launch  # noqa: E402
from specviz.ui.space import listen_address  # noqa: E402

store = ModelStore()
demo = build_demo(store)

if __name__ == "__main__":
    host, port = listen_address(os.environ)
    loaded = store.get(None)
    print(f"embedded model ready ({loaded.load_s:.1f} s to load); app ready in {time.perf_counter() - T0:.1f} s", flush=True)
    launch(demo, server_name=host, server_port=port)
