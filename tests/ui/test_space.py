"""Where the app listens (locally and on a Hugging Face Space) and the ZeroGPU decorator off a Space."""
import sys
import types

import pytest

from specviz.ui.gpu import on_gpu
from specviz.ui.space import listen_address, on_space

SPACE = {"SPACE_ID": "user/specviz", "SYSTEM": "spaces"}


@pytest.mark.parametrize("environ, expected", [
    ({}, ("127.0.0.1", 7860)),
    ({"SPACE_ID": "user/specviz"}, ("0.0.0.0", 7860)),
    ({"SPACE_ID": ""}, ("127.0.0.1", 7860)),
    ({**SPACE, "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}, ("0.0.0.0", 7861)),
    ({"GRADIO_SERVER_NAME": "::", "GRADIO_SERVER_PORT": "8000"}, ("::", 8000)),
    ({**SPACE, "SPECVIZ_HOST": "127.0.0.1", "GRADIO_SERVER_NAME": "0.0.0.0"}, ("127.0.0.1", 7860)),
    ({"SPECVIZ_PORT": "9000", "GRADIO_SERVER_PORT": "8000"}, ("127.0.0.1", 9000)),
    ({"SPECVIZ_HOST": " ", "SPECVIZ_PORT": "", "GRADIO_SERVER_PORT": " 8001 "}, ("127.0.0.1", 8001)),
])
def test_listen_address(environ, expected):
    assert listen_address(environ) == expected


@pytest.mark.parametrize("environ, message", [
    ({"SPECVIZ_PORT": "http"}, "SPECVIZ_PORT='http' is not a port number"),
    ({"GRADIO_SERVER_PORT": "70000"}, "GRADIO_SERVER_PORT='70000' is not a port number"),
    ({"SPECVIZ_PORT": "0"}, "SPECVIZ_PORT='0'"),
])
def test_a_bad_port_names_its_variable(environ, message):
    with pytest.raises(ValueError, match=message):
        listen_address(environ)


def test_on_gpu_is_the_identity_here(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not on_space()

    def step(x):
        return x + 1

    assert on_gpu(30)(step) is step


def test_on_gpu_is_the_identity_on_a_space_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError

    def step(x):
        return x

    assert on_gpu(30, SPACE)(step) is step


def test_on_gpu_asks_spaces_for_the_duration_on_a_space(monkeypatch):
    asked = []

    def gpu(duration):
        asked.append(duration)
        return lambda fn: ("on gpu", fn)

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))

    def step(x):
        return x

    assert on_gpu(45, SPACE)(step) == ("on gpu", step) and asked == [45]
    assert on_gpu(45, {})(step) is step and asked == [45]  # off a Space `spaces` is not even looked at
