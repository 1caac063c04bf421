"""Controls never offer values the model cannot take."""
from specviz.config import EMBEDDED_LAYERS, EMBEDDED_MODEL_ID, EXIT_LAYER
from specviz.ui.speculative import exit_layer_range


def test_the_embedded_layer_count_is_the_models(embedded):
    assert EMBEDDED_LAYERS == embedded.model.config.num_hidden_layers


def test_the_early_exit_slider_stops_below_the_targets_layers():
    assert exit_layer_range(EMBEDDED_MODEL_ID)["maximum"] == EMBEDDED_LAYERS - 1
    assert exit_layer_range("  ")["maximum"] == EMBEDDED_LAYERS - 1
    # another model's depth is known once it loads: the knob's own range, and the run names the limit
    assert exit_layer_range("HuggingFaceTB/SmolLM2-360M-Instruct")["maximum"] == EXIT_LAYER.high
