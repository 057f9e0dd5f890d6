"""Index-grid data sets: encoding, the cache, uniform grids; the prior chapter's verdict."""

import math

import pytest
import torch

from vqtto import cache as artifacts
from vqtto.data import codes
from vqtto.book.chapters import prior as chapter
from vqtto.models import TrainedVQVAE
from vqtto.models.training import History


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


def test_cached_codes_are_loaded_safely(tiny_vqvae, tmp_path):
    """A codes file replaced by a pickle that would run code: refused (never run) and re-encoded."""
    trained = _trained(tiny_vqvae, tag=2)
    first = codes.index_dataset(trained, "test", limit=5, device="cpu", progress=False)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = artifacts.path_for("codes", codes.codes_config(trained.config, "test", 5))
    torch.save({"indices": Exploit()}, path)
    with pytest.warns(UserWarning, match="rebuilding"):
        again = codes.index_dataset(trained, "test", limit=5, device="cpu", progress=False)
    assert not marker.exists() and torch.equal(again.indices, first.indices)


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


def test_drift_and_verdict_follow_the_numbers():
    gen = torch.Generator().manual_seed(0)
    real = -49 * (2.0 + 0.1 * torch.randn(2000, generator=gen))
    random = -49 * (6.0 + 0.1 * torch.randn(500, generator=gen))
    start = real[:100]
    near = real[100:200]
    far = start - 49 * 0.5  # every search loses 0.5 nats per position
    same = chapter.search_drift(real, random, start, near, 49)
    assert same["tail_fraction"] < 0.12 and abs(same["drift"]) < 0.05
    assert "does not clearly leave" in chapter.drift_verdict(same, 512)
    gone = chapter.search_drift(real, random, start, far, 49)
    assert gone["drift"] == pytest.approx(0.5, abs=1e-4) and gone["tail_fraction"] > 0.9
    assert gone["found"] == pytest.approx(gone["start"] + 0.5, abs=1e-4) and gone["random"] > 5.9
    assert "supports the paper" in chapter.drift_verdict(gone, 512)
    rows = chapter.loglik_rows({"real": real}, 49, 512)
    assert rows[-1]["NLL (nats / position)"] == round(math.log(512), 3)
    assert rows[0]["NLL (nats / position)"] == pytest.approx(float(-real.mean()) / 49, abs=1e-3)


def test_prior_controls_blend_codes_and_compare_searches_at_equal_steps():
    from vqtto.book.chapters import prior as chapter

    start, target = torch.zeros(200, 2, 2, dtype=torch.long), torch.ones(200, 2, 2, dtype=torch.long)
    half = chapter.mixed_grids(start, target, 0.5, seed=1)
    assert 0.4 < chapter.changed_fraction(start, half) < 0.6
    assert torch.equal(chapter.mixed_grids(start, target, 1.0), target)
    logliks = [torch.tensor([-10.0, -12.0, -14.0]), torch.tensor([-10.0, -11.0])]
    rows = chapter.drift_at_steps(logliks, [1, 2, 5], positions=2)
    assert [r["searches that got there"] for r in rows] == [2, 1]
    assert rows[0]["median NLL gained (nats / position)"] == 0.75 and rows[1]["median NLL gained (nats / position)"] == 2.0
    real = -torch.arange(100.0)  # log p of 100 real codes: the least likely 5% are below -94.05
    start = torch.full((40,), -10.0)

    def group(label, kind, lost):  # every pair loses ``lost`` nats per position, plus a little spread
        found = start - 2 * (lost + 0.01 * torch.arange(40.0))
        return chapter.control(label, kind, "alg2", start, found, real, positions=2, changed=0.5)

    alg2 = group("Algorithm 2, final grid", "search", 0.3)
    assert alg2.gained.low > 0 and alg2.gained.value == pytest.approx(0.3 + 0.195)
    assert alg2.tail.value == 0.0 and alg2.tail.high > 0, "a share of 0 of 40 still has an interval"
    controls = [alg2, group("blend, 50% target codes", "blend", 0.1)]
    assert chapter.beyond_blends(controls)
    controls[1] = group("blend, 50% target codes", "blend", 0.4)
    assert not chapter.beyond_blends(controls)
    assert "less than any such blend" in chapter.controls_sentence(controls)
    controls.append(group("screened annealing (ch. 3), best grid", "search", 50.0))
    text = chapter.controls_sentence(controls)
    assert "Their intervals lie above Algorithm 2's for screened annealing" in text and "below it" not in text
    assert chapter.control_rows(controls)[2]["in the real codes' least likely 5%"].startswith("100% [")
    fig = chapter.controls_figure(controls, "t")
    assert len(fig.axes[0].patches) == 3
