"""Trained models from the cache: configs, one training then loads, the prior's code sets."""

import pytest
import torch

from vqtto import cache as artifacts, models
from vqtto.data import codes
from vqtto.models import training
from vqtto import data as data_mod


@pytest.fixture
def toy_data(monkeypatch, tmp_path):
    """A fresh cache, and Fashion-MNIST replaced by blobs (no files needed, seconds to train)."""
    monkeypatch.setenv("VQTTO_CACHE", str(tmp_path / "cache"))

    def load(dataset, split="train", root=None, limit=None):
        n = min(limit or 10_000, 96 if split == "train" else 40)
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        x = torch.zeros(n, 1, 28, 28)
        for i, (r, c) in enumerate(torch.randint(0, 20, (n, 2), generator=g).tolist()):
            x[i, 0, r:r + 8, c:c + 8] = 1.0
        return data_mod.ImageSet(x, torch.arange(n) % 10, dataset)

    monkeypatch.setattr(data_mod, "load", load)


SMALL = {"train_limit": 96, "test_limit": 40}


def test_vqvae_config_validates_overrides():
    cfg = models.vqvae_config("fashion-mnist", 40, "smoke", epochs=3)
    assert cfg["model"]["k"] == 40 and cfg["train"]["epochs"] == 3 and cfg["model"]["in_channels"] == 1
    with pytest.raises(ValueError, match="unknown VQ-VAE option 'epoch'"):
        models.vqvae_config("fashion-mnist", 40, "smoke", epoch=3)
    with pytest.raises(ValueError, match="profile"):
        models.vqvae_config("fashion-mnist", 40, "medium")
    with pytest.raises(ValueError, match="dataset"):
        models.vqvae_config("mnist", 40, "smoke")


def test_prior_config_is_keyed_by_the_vqvae_config_and_profile():
    vq = models.vqvae_config("fashion-mnist", 16, "smoke")
    cfg = models.prior_config(vq, "smoke", channels=24, epochs=3)
    assert cfg["vqvae"] == vq and cfg["model"]["k"] == 16 and cfg["model"]["channels"] == 24
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["n_classes"] == 0
    assert models.prior_config(vq, "smoke", class_conditional=True)["model"]["n_classes"] == 10
    other = models.vqvae_config("fashion-mnist", 16, "smoke", seed=1)
    assert artifacts.config_key("pixelcnn", models.prior_config(other, "smoke")) != artifacts.config_key(
        "pixelcnn", models.prior_config(vq, "smoke"))
    with pytest.raises(ValueError, match="profile"):
        models.prior_config(vq, "huge")
    with pytest.raises(ValueError, match="unknown prior option 'chanels'"):
        models.prior_config(vq, "smoke", chanels=3)


def test_prior_trains_once_then_loads_with_its_codes(toy_data, monkeypatch):
    first = models.prior("fashion-mnist", k=8, profile="smoke", device="cpu", progress=False,
                         vqvae_options=SMALL, **SMALL)
    assert first.k == 8 and first.vqvae.k == 8 and first.config["vqvae"] == first.vqvae.config
    assert len(first.train_codes) == 96 and len(first.test_codes) == 40 and first.test_codes.grid_shape == (7, 7)
    same = codes.index_dataset(first.vqvae, "test", limit=40, device="cpu", progress=False)
    assert torch.equal(first.test_codes.indices, same.indices)
    assert first.history.step and first.history.val_nats and first.test["nats_per_position"] > 0
    assert not first.model.training and not first.vqvae.model.training

    def refuse(*args, **kwargs):
        raise AssertionError("trained again although the model was cached")

    monkeypatch.setattr(models, "train_vqvae", refuse)
    monkeypatch.setattr(models, "train_prior", refuse)
    again = models.prior("fashion-mnist", k=8, profile="smoke", device="cpu", progress=False,
                         vqvae_options=SMALL, **SMALL)
    a, b = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert again.history == first.history and again.test == first.test
    assert again.vqvae.history == first.vqvae.history and again.vqvae.test == first.vqvae.test
    assert torch.equal(again.train_codes.indices, first.train_codes.indices)


def test_vqvae_matches_a_direct_training_run(toy_data):
    """The cached factory trains exactly what train_vqvae trains from the same seed."""
    tv = models.vqvae("fashion-mnist", k=8, profile="smoke", device="cpu", progress=False, **SMALL)
    cfg = training.TrainConfig(**tv.config["train"])
    torch.manual_seed(cfg.seed)
    from vqtto.models.autoencoder import VQVAE, VQVAEConfig

    model = VQVAE(VQVAEConfig(**tv.config["model"]))
    hist = training.train_vqvae(model, data_mod.load("fashion-mnist", "train", limit=96),
                                data_mod.load("fashion-mnist", "test", limit=40), cfg, torch.device("cpu"), progress=False)
    a, b = model.state_dict(), tv.model.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert hist.test_recon == tv.history.test_recon and hist.restarted == tv.history.restarted
