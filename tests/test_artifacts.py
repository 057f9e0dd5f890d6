"""The cache: keys, atomic writes, digests, mismatches, and loading that never runs code from a file."""

import io
import json
import pickle

import pytest
import torch

from vqtto import cache as artifacts


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VQTTO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class _Exploit:
    """Unpickling this creates the file ``marker``: stands in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_blob(marker) -> bytes:
    buf = io.BytesIO()
    torch.save({"0": _Exploit(marker)}, buf)
    return buf.getvalue()


def test_key_depends_on_every_config_field():
    a = artifacts.config_key("m", {"k": 4, "lr": 0.1})
    assert a == artifacts.config_key("m", {"lr": 0.1, "k": 4})
    assert a != artifacts.config_key("m", {"k": 5, "lr": 0.1})
    assert a != artifacts.config_key("other", {"k": 4, "lr": 0.1})


def test_build_once_then_load(cache):
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(3)}

    a = artifacts.load_or_build("m", {"k": 4}, build)
    b = artifacts.load_or_build("m", {"k": 4}, build)
    assert len(calls) == 1 and torch.equal(a["w"], b["w"])
    assert not list(cache.glob(".*tmp")), "no temporary file is left behind"


def test_payload_round_trips_exactly_and_the_header_is_json(cache):
    sd = {"layer.weight": torch.randn(3, 2), "codes": torch.arange(6, dtype=torch.int16).view(2, 3)[:, 1:]}
    payload = {"state_dict": sd, "history": {"step": [1, 2], "loss": [0.1, float("nan")], "seconds": 1.5},
               "test": {"codes_used": 7, "ok": True, "note": None, "name": "x"}, "list": [torch.ones(2), 3]}
    path = artifacts.path_for("m", {"k": (7, 7)})
    artifacts.save(path, "m", {"k": (7, 7)}, payload)
    out = artifacts.read(path, "m", {"k": (7, 7)})  # a tuple in the config compares as its JSON list
    assert out["state_dict"].keys() == sd.keys() and all(torch.equal(out["state_dict"][n], sd[n]) for n in sd)
    assert out["state_dict"]["codes"].dtype == torch.int16
    assert out["history"]["step"] == [1, 2] and out["history"]["loss"][0] == 0.1 and out["history"]["loss"][1] != 0.1
    assert out["test"] == payload["test"] and type(out["test"]["codes_used"]) is int
    assert torch.equal(out["list"][0], torch.ones(2)) and out["list"][1] == 3
    header = json.loads(path.read_bytes().partition(b"\n")[0])
    assert header["format"] == artifacts.CACHE_FORMAT == 2 and header["kind"] == "m"
    assert header["meta"]["test"] == payload["test"]


def test_payloads_of_anything_but_plain_data_are_refused_before_writing(cache):
    for bad in ({"f": lambda: 0}, {1: torch.zeros(1)}, {"t": (1, 2)}, {"$tensor": "0"}):
        with pytest.raises(TypeError):
            artifacts.load_or_build("m", {"k": 4}, lambda bad=bad: bad)
    assert not cache.exists() or not list(cache.iterdir())


def test_corrupt_file_is_reported_and_rebuilt(cache):
    artifacts.load_or_build("m", {"k": 4}, lambda: {"w": torch.ones(100)})
    path = artifacts.path_for("m", {"k": 4})
    path.write_bytes(path.read_bytes()[:-100])  # truncated, as after a crash mid-copy
    with pytest.warns(UserWarning, match="rebuilding"):
        out = artifacts.load_or_build("m", {"k": 4}, lambda: {"w": 2})
    assert out == {"w": 2} and artifacts.read(path, "m", {"k": 4}) == {"w": 2}


@pytest.mark.parametrize("where", ["blob", "meta"])
def test_tampered_contents_fail_the_digest(cache, where):
    path = artifacts.path_for("m", {"k": 4})
    artifacts.save(path, "m", {"k": 4}, {"w": torch.ones(4), "test": {"mse": 0.5}})
    line, _, blob = path.read_bytes().partition(b"\n")
    if where == "blob":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    else:
        line = line.replace(b"0.5", b"0.4")
    path.write_bytes(line + b"\n" + blob)
    with pytest.raises(artifacts.CorruptArtifact, match="sha256"):
        artifacts.read(path, "m", {"k": 4})


def test_mismatched_config_is_refused(cache):
    path = artifacts.path_for("m", {"k": 4})
    artifacts.save(path, "m", {"k": 5}, {"w": 1})  # a file under the wrong key
    with pytest.raises(artifacts.ArtifactMismatch, match="delete the file to rebuild it"):
        artifacts.load_or_build("m", {"k": 4}, lambda: {"w": 0})


def test_failed_build_writes_nothing(cache):
    def build():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        artifacts.load_or_build("m", {"k": 4}, build)
    assert not cache.exists() or not list(cache.iterdir())


def test_weights_only_loading_accepts_plain_data_and_refuses_objects(tmp_path):
    """What the cache relies on: torch.load(weights_only=True) rebuilds tensors and plain
    containers, and refuses to rebuild any other object (so it cannot run its code)."""
    plain = {"t": torch.arange(3), "l": [1, 2.5, "s", None, True], "b": b"bytes"}
    buf = io.BytesIO()
    torch.save(plain, buf)
    out = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert torch.equal(out["t"], plain["t"]) and out["l"] == plain["l"] and out["b"] == b"bytes"
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(_malicious_blob(marker)), weights_only=True)
    assert not marker.exists()


def test_a_pickle_that_runs_code_is_refused_and_never_run(cache, tmp_path):
    """A file at an artifact's path whose unpickling would run code (here: create a marker file),
    as a format-1 file or a tampered download could be: refused, not run, then rebuilt."""
    marker = tmp_path / "pwned"
    path = artifacts.path_for("m", {"k": 4})
    path.parent.mkdir(parents=True)
    torch.save({"kind": "m", "config": {"k": 4}, "payload": _Exploit(marker)}, path)
    pickle.loads(pickle.dumps(_Exploit(tmp_path / "control")))  # the same object does run code when unpickled
    assert (tmp_path / "control").exists()
    with pytest.raises(artifacts.CorruptArtifact, match="not a cache file|unreadable"):
        artifacts.read(path, "m", {"k": 4})
    with pytest.warns(UserWarning, match="rebuilding"):
        out = artifacts.load_or_build("m", {"k": 4}, lambda: {"w": torch.zeros(2)})
    assert torch.equal(out["w"], torch.zeros(2)) and not marker.exists()


def test_a_well_formed_file_whose_blob_runs_code_is_refused_and_never_run(cache, tmp_path):
    """Even with a correct header and digest (someone who knows the format), the blob is only
    read with weights_only=True: the object is refused before it can run."""
    marker = tmp_path / "pwned"
    path = artifacts.path_for("m", {"k": 4})
    artifacts.save(path, "m", {"k": 4}, {"w": torch.zeros(2)})
    header = json.loads(path.read_bytes().partition(b"\n")[0])
    blob = _malicious_blob(marker)
    header["size"] = len(blob)
    header["sha256"] = artifacts._digest(header, blob)
    path.write_bytes(json.dumps(header).encode() + b"\n" + blob)
    with pytest.raises(artifacts.CorruptArtifact, match="not plain data"):
        artifacts.read(path, "m", {"k": 4})
    with pytest.warns(UserWarning, match="rebuilding"):
        artifacts.load_or_build("m", {"k": 4}, lambda: {"w": torch.ones(2)})
    assert not marker.exists()
    assert torch.equal(artifacts.read(path, "m", {"k": 4})["w"], torch.ones(2))


def _build_slowly(cache_dir: str, log: str, seconds: float):
    """In a child process: load_or_build one key with a build that logs itself and sleeps."""
    import os
    import time

    os.environ["VQTTO_CACHE"] = cache_dir
    from vqtto import cache

    def build():
        with open(log, "a") as fh:
            fh.write("built\n")
        time.sleep(seconds)
        return {"x": torch.arange(3)}

    return cache.load_or_build("slow", {"n": 3}, build)["x"].tolist()


def test_processes_sharing_the_cache_build_a_key_once(tmp_path):
    """Chapters run side by side share the cache: the second process asking for a key waits for the first
    one's build and reads it, instead of training the same model again."""
    import multiprocessing as mp

    log = tmp_path / "builds.log"
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_build_slowly, [(str(tmp_path / "cache"), str(log), 1.5)] * 2)
    assert results == [[0, 1, 2], [0, 1, 2]]
    assert log.read_text().splitlines() == ["built"]
