"""Index-grid data sets: encoding, the cache, uniform grids; the prior chapter's verdict."""

import math

import pytest
import torch

from vqtto import artifacts, codes
from vqtto.artifacts import TrainedVQVAE
from vqtto.chapters import prior as chapter
from vqtto.training import History


def _trained(model, dataset="fashion-mnist", tag=0):
    config = {"dataset": dataset, "model": model.cfg.as_dict(), "train": {"tag": tag}}
    return TrainedVQVAE(model=model.eval(), history=History(), test={}, config=config)


def test_encode_matches_the_models_own_indices(tiny_vqvae):
    x = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    idx = codes.encode(tiny_vqvae, x, torch.device("cpu"), batch_size=3)
    assert idx.shape == (7, 7, 7) and idx.dtype == torch.long
    assert torch.equal(idx, tiny_vqvae.encode_indices(x))
    with pytest.raises(ValueError, match="batch_size"):
        codes.encode(tiny_vqvae, x, torch.device("cpu"), batch_size=0)


def test_index_dataset_is_cached_under_the_vqvae_config(tiny_vqvae, monkeypatch):
    trained = _trained(tiny_vqvae)
    first = codes.index_dataset(trained, "test", limit=12, device="cpu", progress=False)
    assert first.indices.shape == (12, 7, 7) and first.indices.dtype == torch.long
    assert first.labels.shape == (12,) and first.k == 8 and first.grid_shape == (7, 7)
    assert int(first.indices.max()) < 8
    assert artifacts.path_for("codes", codes.codes_config(trained.config, "test", 12)).exists()

    def refuse(*args, **kwargs):
        raise AssertionError("encoded again although the codes were cached")

    monkeypatch.setattr(codes, "encode", refuse)
    again = codes.index_dataset(trained, "test", limit=12, device="cpu", progress=False)
    assert torch.equal(again.indices, first.indices) and torch.equal(again.labels, first.labels)
    # another VQ-VAE config is another key: it must encode (and here, refuse)
    with pytest.raises(AssertionError, match="encoded again"):
        codes.index_dataset(_trained(tiny_vqvae, tag=1), "test", limit=12, device="cpu", progress=False)


def test_bad_split_and_limit_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        codes.codes_config({}, "valid", None)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        codes.codes_config({}, "test", 0)


def test_uniform_grids_cover_all_codes_evenly():
    g = codes.uniform_grids(2000, 5, (3, 4), seed=1)
    assert g.shape == (2000, 3, 4) and g.dtype == torch.long
    counts = torch.bincount(g.flatten(), minlength=5).double()
    assert counts.numel() == 5 and (counts / counts.sum() - 0.2).abs().max() < 0.02
    assert torch.equal(g, codes.uniform_grids(2000, 5, (3, 4), seed=1))


def test_verdict_follows_the_numbers():
    gen = torch.Generator().manual_seed(0)
    real = -49 * (2.0 + 0.1 * torch.randn(500, generator=gen))
    random = -49 * (6.0 + 0.1 * torch.randn(500, generator=gen))
    near = -49 * (2.0 + 0.1 * torch.randn(100, generator=gen))
    far = -49 * (5.0 + 0.1 * torch.randn(100, generator=gen))
    assert "does not clearly leave" in chapter.verdict(real, random, near, 49, 512)
    text = chapter.verdict(real, random, far, 49, 512)
    assert "supports the paper" in text and "closer to random grids" in text
    rows = chapter.loglik_rows({"real": real}, 49, 512)
    assert rows[-1]["NLL (nats / position)"] == round(math.log(512), 3)
    assert rows[0]["NLL (nats / position)"] == pytest.approx(float(-real.mean()) / 49, abs=1e-3)
