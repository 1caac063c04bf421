"""Device-to-host reads per decoding step, per method, counted as tests/decoding/test_host_syncs.py counts them.

    .venv/bin/python scripts/host_reads.py

On a GPU every such read stalls the host until the queued kernels finish; the budget is one read per step
(the verdict, with the record riding along) plus one per drafted tree level for model drafters."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _pytest.monkeypatch import MonkeyPatch  # noqa: E402

from specviz.config import SamplingConfig  # noqa: E402
from specviz.decoding.registry import METHODS  # noqa: E402
from specviz.models import tiny_random_llama  # noqa: E402
from tests.decoding.test_host_syncs import count_steps, patch_reads  # noqa: E402


def main() -> None:
    tiny = tiny_random_llama(vocab_size=96, n_layers=4, hidden=32, seed=0)
    patches = MonkeyPatch()
    reads = patch_reads(patches)
    print(f"{'method':<16}{'reads/step':>12}{'recorded':>10}{'drafter forwards/step':>24}")
    try:
        for name in METHODS:
            row, forwards = [], 0.0
            for record in (False, True):
                per_step, _ = count_steps(reads, tiny, name, record, SamplingConfig(), n_new=24)
                row.append(np.mean([n for n, _ in per_step]))
                forwards = np.mean([f for _, f in per_step])
            print(f"{name:<16}{row[0]:>12.2f}{row[1]:>10.2f}{forwards:>24.2f}")
    finally:
        patches.undo()


if __name__ == "__main__":
    main()
