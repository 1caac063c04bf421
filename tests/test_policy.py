"""Public mode: when it is on, and what it refuses (with a message naming the field)."""
import pytest

from specviz.config import ConfigError
from specviz.policy import PUBLIC_CAPS, ServerPolicy
from specviz.settings import LatticeSettings, RunSettings


@pytest.mark.parametrize("env, host, public", [
    ({}, "127.0.0.1", False),
    ({}, "localhost", False),
    ({}, None, False),
    ({}, "0.0.0.0", True),  # a teacher serving a class on the network
    ({}, "192.168.1.20", True),
    ({"SPACE_ID": "someone/specviz"}, "127.0.0.1", True),
    ({"SPECVIZ_PUBLIC": "1"}, "127.0.0.1", True),
    ({"SPECVIZ_PUBLIC": "0"}, "0.0.0.0", False),  # the operator's explicit choice wins
    ({"SPECVIZ_PUBLIC": "0", "SPACE_ID": "a/b"}, None, False),
])
def test_public_mode_switch(env, host, public):
    policy = ServerPolicy.from_env(env, host)
    assert policy.public is public
    assert policy.why


def test_operator_lists_models_and_remote_code_with_pinned_revisions():
    policy = ServerPolicy.from_env({"SPECVIZ_PUBLIC": "1", "SPECVIZ_MODELS": "org/a, org/b",
                                    "SPECVIZ_REMOTE_CODE_MODELS": "GSAI-ML/LLaDA-8B-Instruct@0123abc",
                                    "SPECVIZ_CAPS": "max_new_tokens=32"})
    assert policy.models == {"org/a", "org/b", "GSAI-ML/LLaDA-8B-Instruct"}
    assert policy.remote_code_revision("GSAI-ML/LLaDA-8B-Instruct") == "0123abc"
    assert policy.remote_code_revision("org/a") is None
    assert policy.caps["max_new_tokens"] == 32
    with pytest.raises(ValueError, match="pinned revision"):
        ServerPolicy.from_env({"SPECVIZ_REMOTE_CODE_MODELS": "GSAI-ML/LLaDA-8B-Instruct"})
    with pytest.raises(ValueError, match="unknown cap"):
        ServerPolicy.from_env({"SPECVIZ_CAPS": "everything=1"})


PUBLIC = ServerPolicy(public=True, models=frozenset({"HuggingFaceTB/SmolLM2-360M-Instruct"}))
LOCAL = ServerPolicy()


def _refusal(policy, settings) -> str:
    with pytest.raises(ConfigError) as info:
        policy.check_settings(settings)
    return str(info.value)


def test_public_mode_refuses_the_file_system(tmp_path):
    local_dir = str(tmp_path)
    for settings, field in [
        (RunSettings.from_dict({"target": local_dir}), "target"),
        (RunSettings.from_dict({"method": "sps", "draft": local_dir}), "draft"),
        (RunSettings.from_dict({"method": "medusa", "draft": local_dir}), "draft"),  # a head directory
        (LatticeSettings.from_dict({"model": local_dir}), "model"),
        (LatticeSettings.from_dict({"method": "jacobi", "model": "./models/x"}), "model"),
    ]:
        msg = _refusal(PUBLIC, settings)
        assert msg.startswith(field) and "listed" in msg, msg
        LOCAL.check_settings(settings)  # a local user keeps the freedom
    for corpus in ("/etc/passwd", "/proc/self/environ", "~/notes.txt", "corpus.txt"):
        msg = _refusal(PUBLIC, RunSettings.from_dict({"method": "retrieval", "corpus": corpus}))
        assert msg.startswith("corpus:") and "does not read files" in msg
        assert "exist" not in msg  # says nothing about whether the path exists
    for corpus in ("context", "shipped", "context+shipped"):
        PUBLIC.check_settings(RunSettings.from_dict({"method": "retrieval", "corpus": corpus}))


def test_public_mode_allows_shipped_and_listed_models_only():
    PUBLIC.check_settings(RunSettings.from_dict({}))
    PUBLIC.check_settings(RunSettings.from_dict({"target": "embedded"}))
    PUBLIC.check_settings(LatticeSettings.from_dict({}))  # tiny-mdm
    PUBLIC.check_settings(RunSettings.from_dict({"target": "HuggingFaceTB/SmolLM2-360M-Instruct"}))
    msg = _refusal(PUBLIC, RunSettings.from_dict({"target": "someone/any-model"}))
    assert "HuggingFaceTB/SmolLM2-360M-Instruct" in msg and "someone/any-model" in msg
    assert _refusal(PUBLIC, LatticeSettings.from_dict({"model": "GSAI-ML/LLaDA-8B-Instruct"})).startswith("model")


def test_public_mode_caps_sizes_whatever_a_client_sends():
    for data, name in [({"max_new_tokens": 1024}, "max_new_tokens"),
                       ({"method": "dynamic_tree", "budget": 128}, "budget"),
                       ({"method": "dynamic_tree", "depth": 16}, "depth"),
                       ({"method": "jacobi", "window": 64}, "window")]:
        msg = _refusal(PUBLIC, RunSettings.from_dict(data))
        assert msg.startswith(f"{name}=") and f"cap of {PUBLIC_CAPS[name]}" in msg
        LOCAL.check_settings(RunSettings.from_dict(data))
    assert _refusal(PUBLIC, LatticeSettings.from_dict({"gen_length": 256})).startswith("gen_length=")
    assert _refusal(PUBLIC, LatticeSettings.from_dict({"steps": 1024})).startswith("steps=")
    big_tree = ";".join(f"{i}" for i in range(20)) + ";" + ";".join(f"{i},{j}" for i in range(8) for j in range(8))
    msg = _refusal(PUBLIC, RunSettings.from_dict({"method": "static_tree", "preset": big_tree}))
    assert msg.startswith("preset:") and "84 nodes" in msg
    PUBLIC.check_settings(RunSettings.from_dict({"method": "static_tree", "preset": "medusa-like-26"}))
    PUBLIC.check_prompt("x" * PUBLIC_CAPS["prompt_chars"])
    with pytest.raises(ConfigError, match="^prompt: 4,001 characters"):
        PUBLIC.check_prompt("x" * (PUBLIC_CAPS["prompt_chars"] + 1))
    LOCAL.check_prompt("x" * 100_000)


def test_public_messages_carry_no_server_paths():
    msg = "cannot load '/home/someone/.cache/specviz/x' as a model: /srv/app/.venv/lib/site-packages/y.py failed"
    clean = PUBLIC.scrub(msg)
    assert "/home" not in clean and "/srv" not in clean and "[server path]" in clean
    assert PUBLIC.scrub("top_p must be in 0.01..1 (got 3/4)") == "top_p must be in 0.01..1 (got 3/4)"
    assert LOCAL.scrub(msg) == msg
