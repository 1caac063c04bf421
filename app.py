"""specviz app entry point: `python app.py` serves the app on http://127.0.0.1:7860 (on 0.0.0.0:7860 on a
Hugging Face Space; `specviz.ui.space.listen_address` decides, SPECVIZ_HOST / SPECVIZ_PORT override).

The environment decides the server (`specviz.ui.app.server_from_env`): where it listens, and whether it is
public (on a Space, beyond localhost, or SPECVIZ_PUBLIC=1: allow-listed models only, no file paths, caps).
The module-level `demo` builds without loading any weights; under __main__ the embedded model is loaded
(converted once, then cached) before the server starts, so the first Run does not wait for it.
"""
import time

T0 = time.perf_counter()

from specviz.ui import launch  # noqa: E402
from specviz.ui.app import server_from_env  # noqa: E402

store, demo, host, port = server_from_env()

if __name__ == "__main__":
    policy = demo.sharing.policy
    print(f"specviz: {'public' if policy.public else 'local'} server ({policy.why}), listening on {host}:{port}",
          flush=True)
    loaded = store.get(None)
    print(f"embedded model ready ({loaded.load_s:.1f} s to load); app ready in {time.perf_counter() - T0:.1f} s", flush=True)
    launch(demo, server_name=host, server_port=port)
