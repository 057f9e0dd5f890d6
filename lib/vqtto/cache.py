"""A cache of built things keyed by the hash of their kind and full configuration; loading runs no code.

A payload is plain data: dicts with ``str`` keys, lists, ``str``, ``int``, ``float``, ``bool``,
``None`` and tensors. An artifact file is one line of JSON, the header, followed by a blob:

    {"format": 2, "kind": ..., "config": {...}, "meta": ..., "size": ..., "sha256": ...}\\n<blob>

``meta`` is the payload with each tensor replaced by ``{"$tensor": "<i>"}``, ``blob`` the
``torch.save`` bytes of ``{"<i>": tensor}`` and ``sha256`` the digest of the rest of the header
and the blob. Reading a file never executes code from it: the header is parsed as JSON and the
blob is read only with ``torch.load(..., weights_only=True)``, which rebuilds tensors and plain
containers and refuses anything else.

Files are written to a temporary name in the cache folder and renamed into place, so a crash
never leaves a half-written file under a real key. On load the digest and the stored config are
checked: a corrupt or unreadable file (:class:`CorruptArtifact`) is reported and rebuilt by
:func:`load_or_build`; a file whose kind or config differs from the one asked for
(:class:`ArtifactMismatch`) is refused. Processes sharing the cache build each key once (a lock
per key while it is built; the others wait and read it).

The cache folder is ``$VQTTO_CACHE`` when set, else ``.cache/vqtto`` at the repository root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

CACHE_FORMAT = 2
_TENSOR = "$tensor"


class ArtifactMismatch(RuntimeError):
    """A cache file holds something built with another kind or configuration than the one asked for."""


class CorruptArtifact(RuntimeError):
    """A cache file could not be read, does not match its digest, or holds more than plain data."""


def cache_dir() -> Path:
    env = os.environ.get("VQTTO_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "vqtto"


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_key(kind: str, config: dict) -> str:
    """A short stable hash of ``kind`` and the JSON form of ``config``."""
    text = json.dumps({"kind": kind, "config": config, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def path_for(kind: str, config: dict) -> Path:
    return cache_dir() / f"{kind}-{config_key(kind, config)}.artifact"


# --- payload <-> (JSON meta, tensors) ------------------------------------------------------------

def _split(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON form of ``obj``, each tensor moved into ``tensors`` and replaced by a reference."""
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().clone(memory_format=torch.contiguous_format)
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if not all(isinstance(name, str) for name in obj) or _TENSOR in obj:
            raise TypeError(f"payload dicts need str keys other than {_TENSOR!r}, got {list(obj)!r}")
        return {name: _split(value, tensors) for name, value in obj.items()}
    if isinstance(obj, list):
        return [_split(value, tensors) for value in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot cache a {type(obj).__name__}: payloads hold dicts with str keys, lists, str, "
                    "int, float, bool, None and tensors")


def _join(meta: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`_split`."""
    if isinstance(meta, dict):
        if meta.keys() == {_TENSOR}:
            return tensors[meta[_TENSOR]]
        return {name: _join(value, tensors) for name, value in meta.items()}
    if isinstance(meta, list):
        return [_join(value, tensors) for value in meta]
    return meta


def _digest(header: dict, blob: bytes) -> str:
    """sha256 of the header (without its digest) and the blob."""
    body = _json({name: value for name, value in header.items() if name != "sha256"})
    return hashlib.sha256(body.encode() + b"\n" + blob).hexdigest()


# --- files -----------------------------------------------------------------------------------------

def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(path: Path, kind: str, config: dict, payload: Any) -> None:
    """Write ``payload`` with its kind, config and digest to ``path`` atomically.

    Raises:
        TypeError: the payload holds something other than plain data and tensors (nothing is written).
    """
    tensors: dict[str, torch.Tensor] = {}
    meta = _split(payload, tensors)
    buf = io.BytesIO()
    torch.save(tensors, buf)
    blob = buf.getvalue()
    header = {"format": CACHE_FORMAT, "kind": kind, "config": json.loads(_json(config)), "meta": meta,
              "size": len(blob)}
    header["sha256"] = _digest(header, blob)
    write_atomically(path, _json(header).encode() + b"\n" + blob)


def _read_header(path: Path) -> tuple[dict, bytes]:
    try:
        line, _, blob = path.read_bytes().partition(b"\n")
        header = json.loads(line)
    except (OSError, ValueError) as err:
        raise CorruptArtifact(f"{path} is unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
        raise CorruptArtifact(f"{path} is not a cache file of format {CACHE_FORMAT}")
    if header.get("size") != len(blob) or header.get("sha256") != _digest(header, blob):
        raise CorruptArtifact(f"{path}: stored sha256 does not match its contents")
    return header, blob


def _read_tensors(path: Path, blob: bytes) -> dict[str, torch.Tensor]:
    try:
        tensors = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused or unreadable: either way not loadable
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CorruptArtifact(f"{path}: its tensors are unreadable or not plain data ({type(err).__name__}: {first})") from err
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise CorruptArtifact(f"{path}: its blob is not a dict of tensors")
    return tensors


def read(path: Path, kind: str, config: dict) -> Any:
    """Read and verify the artifact at ``path``; no code stored in it can run.

    Raises:
        CorruptArtifact: unreadable file, another cache format, digest mismatch, or a blob that
            holds anything but tensors.
        ArtifactMismatch: the stored kind or config differs from the one asked for.
    """
    header, blob = _read_header(path)
    if header.get("kind") != kind or header.get("config") != json.loads(_json(config)):
        raise ArtifactMismatch(
            f"{path} holds a {header.get('kind')!r} built with config {header.get('config')!r}, "
            f"not the {kind!r} with config {config!r} that was asked for; delete the file to rebuild it"
        )
    tensors = _read_tensors(path, blob)
    try:
        return _join(header["meta"], tensors)
    except (KeyError, TypeError) as err:
        raise CorruptArtifact(f"{path}: its header names a tensor the blob lacks ({err})") from err


def load_or_build(kind: str, config: dict, build: Callable[[], Any], rebuild: bool = False) -> Any:
    """Return the cached payload for ``(kind, config)``, building and saving it when absent.

    A corrupt file is reported with a warning and rebuilt; a mismatched one raises
    :class:`ArtifactMismatch`. ``build()`` must return plain data and tensors (see the module's
    docstring); tensors come back on the CPU.

    Processes that share the cache (chapters run side by side) build each key once: the builder
    holds the key's lock file, and another process asking for the same key waits for it and then
    reads what it saved.
    """
    path = path_for(kind, config)
    if not rebuild and (payload := _read_if_there(path, kind, config)) is not None:
        return payload
    with _key_lock(path, kind):
        if not rebuild and (payload := _read_if_there(path, kind, config)) is not None:
            return payload  # another process built it while this one waited
        payload = build()
        save(path, kind, config, payload)
    return payload


def _read_if_there(path: Path, kind: str, config: dict) -> Any | None:
    """The payload at ``path``, or None when there is none or it is corrupt (reported with a warning)."""
    if not path.exists():
        return None
    try:
        return read(path, kind, config)
    except CorruptArtifact as err:
        warnings.warn(f"{err}; rebuilding it", stacklevel=3)
        return None


@contextmanager
def _key_lock(path: Path, kind: str) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` while inside: a file in the system's temporary folder named by
    the hash of ``path``, so the cache folder itself gets nothing but finished artifacts.

    Says so once on stderr when another process holds it. Where ``fcntl`` is missing (Windows) there
    is no lock: two processes may then build the same key, and the last rename wins.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    locks = Path(tempfile.gettempdir()) / "vqtto-cache-locks"
    locks.mkdir(exist_ok=True)
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    with open(locks / f"{name}.lock", "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[vqtto.cache] waiting for another process building the {kind} {path.name}", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
