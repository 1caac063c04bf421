"""The first decode of a process no longer pays one-time set-up inside its timed prefill: `prepare_run` warms each
loaded target once, untimed, so neither a method nor the AR baseline timed after it carries that cost."""
from specviz.models import ModelStore
from specviz.runs import prepare_run


def test_a_target_is_warmed_once_when_its_first_run_is_prepared(embedded):
    store = ModelStore(loader=lambda model_id: embedded)  # a fresh store serving the session's loaded model
    forwards = []
    hook = embedded.model.register_forward_hook(lambda *a: forwards.append(1))
    try:
        prepare_run(store, {"method": "ar", "max_new_tokens": 4})
        warmed = len(forwards)
        prepare_run(store, {"method": "ngram_tree", "max_new_tokens": 4})
    finally:
        hook.remove()
    assert warmed >= 2  # the warm-up's prefill and its steps went through the model
    assert len(forwards) == warmed  # and only once per loaded target
    assert store.cached("warm", (embedded.model_id, id(embedded.model)), lambda: False) is True
