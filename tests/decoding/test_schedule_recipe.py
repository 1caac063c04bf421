"""The recipe for a new schedule, followed by a test: one select function and one `register_schedule` call,
then a real decode with it (the tiny random diffusion model of tests/test_diffusion.py)."""
import numpy as np
import pytest

from specviz.decoding.diffusion import DiffusionConfig, DiffusionDecoder
from specviz.decoding.schedules import (
    NO_CELLS, SCHEDULE_HELP, SCHEDULES, CellView, Schedule, ScheduleParams, Selection, register_schedule,
    transfer_count,
)
from specviz.models.diffusion import tiny_family_model
from specviz.trace import REVEALED, check_diffusion_invariants

PROMPT = np.array([1, 5, 7, 9, 3, 11])


def leftmost(view: CellView, params: ScheduleParams, rng: np.random.Generator) -> Selection:
    """Reveal the k leftmost eligible cells (k spreads the block over its step budget): left-to-right decoding."""
    k = transfer_count(view)
    return Selection(np.flatnonzero(view.eligible)[:k], NO_CELLS, f"{k} leftmost")


@pytest.fixture
def registered():
    schedule = register_schedule(Schedule("leftmost", leftmost, "reveal the k leftmost masked cells of the block",
                                          params=(), source="a test"))
    yield schedule
    SCHEDULES.pop(schedule.name)


def test_a_new_schedule_is_one_registry_entry(registered):
    assert "leftmost" in SCHEDULES and SCHEDULE_HELP["leftmost"] == registered.help
    lm = tiny_family_model("tiny", eos_ids=(7,))
    dec = DiffusionDecoder(lm, PROMPT, DiffusionConfig(schedule="leftmost", gen_length=16, block_size=8, steps=8))
    steps = list(dec.steps())
    check_diffusion_invariants(steps, eos_ids=(7,))
    assert dec.finish_reason in ("eos", "length") and all(s.rule == "2 leftmost" for s in steps)
    # left to right, two cells a step: each step reveals the first two still-masked cells
    order = [np.flatnonzero(s.cell_state == REVEALED).tolist() for s in steps]
    assert order == [[2 * i, 2 * i + 1] for i in range(len(steps))]
    tr = dec.trace()
    assert tr.method == "diffusion:leftmost" and tr.steps == steps


def test_the_fixture_unregisters_it():
    assert "leftmost" not in SCHEDULES and "leftmost" not in SCHEDULE_HELP
    with pytest.raises(ValueError, match="unknown schedule"):
        DiffusionConfig(schedule="leftmost")
