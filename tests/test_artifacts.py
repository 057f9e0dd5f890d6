import pytest
import torch

from vqtto import artifacts


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VQTTO_CACHE", str(tmp_path))
    return tmp_path


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


def test_corrupt_file_is_reported_and_rebuilt(cache):
    artifacts.load_or_build("m", {"k": 4}, lambda: {"w": 1})
    path = artifacts.path_for("m", {"k": 4})
    path.write_bytes(path.read_bytes()[:100])  # truncated, as after a crash mid-copy
    with pytest.warns(UserWarning, match="rebuilding"):
        out = artifacts.load_or_build("m", {"k": 4}, lambda: {"w": 2})
    assert out == {"w": 2}


def test_tampered_contents_fail_the_digest(cache):
    artifacts.save(artifacts.path_for("m", {"k": 4}), "m", {"k": 4}, {"w": 1})
    path = artifacts.path_for("m", {"k": 4})
    record = torch.load(path, weights_only=False)
    record["blob"] = record["blob"][:-1] + bytes([record["blob"][-1] ^ 1])
    torch.save(record, path)
    with pytest.raises(artifacts.CorruptArtifact, match="sha256"):
        artifacts.load(path, "m", {"k": 4})


def test_mismatched_config_is_refused(cache):
    path = artifacts.path_for("m", {"k": 4})
    artifacts.save(path, "m", {"k": 5}, {"w": 1})  # a file under the wrong key
    with pytest.raises(artifacts.ArtifactMismatch, match="asked for"):
        artifacts.load_or_build("m", {"k": 4}, lambda: {"w": 0})


def test_failed_build_writes_nothing(cache):
    def build():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        artifacts.load_or_build("m", {"k": 4}, build)
    assert not list(cache.iterdir())


def test_vqvae_config_validates_overrides():
    cfg = artifacts.vqvae_config("fashion-mnist", 40, "smoke", epochs=3)
    assert cfg["model"]["k"] == 40 and cfg["train"]["epochs"] == 3 and cfg["model"]["in_channels"] == 1
    with pytest.raises(ValueError, match="unknown VQ-VAE option 'epoch'"):
        artifacts.vqvae_config("fashion-mnist", 40, "smoke", epoch=3)
    with pytest.raises(ValueError, match="profile"):
        artifacts.vqvae_config("fashion-mnist", 40, "medium")
    with pytest.raises(ValueError, match="dataset"):
        artifacts.vqvae_config("mnist", 40, "smoke")
