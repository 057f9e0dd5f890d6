"""The gated PixelCNN: autoregressive property, no blind spot, normalisation, sampling, metrics, training."""

import itertools
import math

import pytest
import torch

from vqtto.models import prior_config
from vqtto.models.pixelcnn import GatedPixelCNN, PixelCNNConfig, bits_per_image, evaluate, nll_per_position, score
from vqtto.models.training import PriorTrainConfig, train_prior


def _model(k=5, h=4, w=5, channels=8, n_layers=4, kernel_size=3, n_classes=0, seed=0):
    torch.manual_seed(seed)
    model = GatedPixelCNN(PixelCNNConfig(k=k, height=h, width=w, channels=channels, n_layers=n_layers,
                                         kernel_size=kernel_size, n_classes=n_classes))
    return model.eval()


# Enough layers for the receptive field to cover every earlier position of a 4 x 5 grid.
FULL_VIEW = [dict(kernel_size=3, n_layers=4), dict(kernel_size=5, n_layers=2)]


@pytest.mark.parametrize("arch", FULL_VIEW)
def test_changing_position_i_never_changes_distributions_at_or_before_i(arch):
    """For every position i: a new value at i leaves every p(. | z_<j), j <= i, unchanged and
    (the model sees all earlier positions) changes every p(. | z_<j), j > i, including the first
    position of the next row after a right-edge i, which a blind-spot PixelCNN would miss."""
    model = _model(**arch)
    k, h, w = model.cfg.k, model.cfg.height, model.cfg.width
    gen = torch.Generator().manual_seed(1)
    z = torch.randint(k, (1, h, w), generator=gen)
    with torch.no_grad():
        base = model.log_probs_all(z).flatten(2)  # (1, k, h*w) in raster order
        for i in range(h * w):
            r, c = divmod(i, w)
            z2 = z.clone()
            z2[0, r, c] = (z[0, r, c] + 1) % k
            diff = (model.log_probs_all(z2).flatten(2) - base).abs().amax(dim=1)[0]  # (h*w,)
            assert torch.all(diff[: i + 1] <= 1e-6), f"position {i} leaked into positions {torch.nonzero(diff[: i + 1] > 1e-6).flatten().tolist()}"
            assert torch.all(diff[i + 1:] > 1e-7), f"position {i} is invisible to later positions {(i + 1 + torch.nonzero(diff[i + 1:] <= 1e-7).flatten()).tolist()}"


@pytest.mark.parametrize("arch", FULL_VIEW)
def test_dependency_set_is_exactly_the_raster_past(arch):
    """Gradient check: the logits at position j depend on exactly the positions before j."""
    model = _model(**arch)
    k, h, w = model.cfg.k, model.cfg.height, model.cfg.width
    soft = torch.softmax(torch.randn(1, k, h, w, generator=torch.Generator().manual_seed(2)), dim=1)
    for j in range(h * w):
        r, c = divmod(j, w)
        x = soft.clone().requires_grad_(True)
        model.logits(x)[0, :, r, c].sum().backward()
        touched = x.grad.abs().sum(1).flatten() > 0  # (h*w,)
        expected = torch.arange(h * w) < j
        assert torch.equal(touched, expected), f"position {j} depends on {torch.nonzero(touched).flatten().tolist()}"


def test_a_shallow_model_is_still_causal():
    """Too few layers to see everything, but never anything from the future."""
    model = _model(kernel_size=3, n_layers=1)
    soft = torch.full((1, 5, 4, 5), 0.2)
    for j in range(20):
        x = soft.clone().requires_grad_(True)
        r, c = divmod(j, 5)
        model.logits(x)[0, :, r, c].sum().backward()
        touched = torch.nonzero(x.grad.abs().sum(1).flatten() > 0).flatten()
        assert touched.numel() == 0 or int(touched.max()) < j


def test_log_prob_sums_to_one_over_all_grids():
    model = _model(k=3, h=2, w=2, channels=8, n_layers=2)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 2, 2)
    with torch.no_grad():
        total = model.log_prob(grids).exp().sum()
    assert abs(float(total) - 1.0) < 1e-5


def test_log_prob_is_the_sum_of_log_probs_all_and_soft_one_hot_agrees():
    model = _model()
    z = torch.randint(5, (3, 4, 5), generator=torch.Generator().manual_seed(3))
    lp_all = model.log_probs_all(z)
    assert lp_all.shape == (3, 5, 4, 5)
    assert torch.allclose(lp_all.exp().sum(1), torch.ones(3, 4, 5), atol=1e-5)
    picked = lp_all.gather(1, z[:, None]).squeeze(1).sum((1, 2))
    assert torch.allclose(model.log_prob(z), picked)
    one_hot = torch.nn.functional.one_hot(z, 5).permute(0, 3, 1, 2).float()
    assert torch.allclose(model.log_probs_all(one_hot), lp_all, atol=1e-5)
    assert torch.allclose(model.loss(z), -model.log_prob(z).mean() / 20, atol=1e-5)


def test_log_prob_over_several_head_blocks_is_the_sum_of_log_probs_all(monkeypatch):
    """The head reduces its logits a block of positions at a time: blocks that split grids change nothing."""
    from vqtto.models import pixelcnn

    model = _model()
    z = torch.randint(5, (7, 4, 5), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        want = model.log_probs_all(z).gather(1, z[:, None]).squeeze(1).sum((1, 2))
        monkeypatch.setattr(pixelcnn, "HEAD_BLOCK", 13)  # 140 positions: 11 blocks, none a whole grid
        assert torch.allclose(model.log_prob(z), want, atol=1e-5)


@pytest.mark.parametrize("n_classes", [0, 3])
def test_logits_at_one_position_are_the_whole_grids_logits_there(n_classes):
    """``logits_at`` runs the rows up to the position and one head: the same logits as the whole grid's."""
    model = _model(n_classes=n_classes)
    z = torch.randint(5, (4, 4, 5), generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2, 0]) if n_classes else None
    with torch.no_grad():
        full = model.logits(z, labels)
        for r, c in itertools.product(range(4), range(5)):
            assert torch.allclose(model.logits_at(z, r, c, labels), full[:, :, r, c], atol=1e-6), (r, c)


@pytest.mark.parametrize("arch", FULL_VIEW)
def test_a_row_context_gives_every_position_of_its_row_the_whole_grids_logits(arch):
    """The sampler's row-at-a-time path: one vertical pass per row, then the row's horizontal stack."""
    model = _model(**arch)
    z = torch.randint(5, (3, 4, 5), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = model.logits(z)
        for r in range(4):
            context = model.row_context(z, r)
            for c in range(5):
                assert torch.allclose(model.logits_in_row(z, r, c, context), full[:, :, r, c], atol=1e-5), (r, c)


@pytest.mark.parametrize("arch", FULL_VIEW + [dict(kernel_size=5, n_layers=3)])
def test_log_prob_from_a_base_is_the_whole_grids_log_prob(arch):
    """Grids changed from some row on (one move, several moves, none, a change in the first row) score
    as :meth:`log_prob` scores them, while rows above the first change come from the base's cache."""
    model = _model(**arch)
    gen = torch.Generator().manual_seed(8)
    base = torch.randint(5, (3, 4, 5), generator=gen)
    which = torch.arange(3).repeat_interleave(20)
    grids = base[which].clone()
    for i in range(grids.shape[0]):
        for _ in range(i % 4):  # 0 to 3 moves
            p = int(torch.randint(20, (1,), generator=gen))
            grids[i].view(-1)[p] = int(torch.randint(5, (1,), generator=gen))
    grids[0, 0, 0] = (base[0, 0, 0] + 1) % 5
    with torch.no_grad():
        fast = model.log_prob_from(grids, model.row_cache(base), which)
        assert torch.allclose(fast, model.log_prob(grids), atol=1e-4)
    with pytest.raises(ValueError, match="unconditional"):
        _model(n_classes=3).row_cache(base)


def test_samples_follow_the_model_distribution():
    """Raster-order sampling draws grids with the frequencies exp(log_prob) says."""
    model = _model(k=2, h=2, w=2, channels=8, n_layers=2, seed=4)
    with torch.no_grad():
        for p in model.head[-1].parameters():  # sharpen the random model so frequencies differ
            p.mul_(6.0)
        grids = torch.tensor(list(itertools.product(range(2), repeat=4))).view(-1, 2, 2)
        probs = model.log_prob(grids).exp()
    samples = model.sample(6000, generator=torch.Generator().manual_seed(0))
    codes = (samples.flatten(1) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=16).double() / 6000
    assert probs.max() > 0.15  # the check is not between two near-uniform histograms
    assert torch.allclose(freq, probs.double(), atol=0.02), (freq, probs)


def test_sample_is_reproducible_and_temperature_sharpens():
    model = _model()
    a = model.sample(4, generator=torch.Generator().manual_seed(0))
    b = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 4, 5) and a.dtype == torch.long and torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < 5
    with torch.no_grad():
        cold = model.log_prob(model.sample(64, temperature=0.3, generator=torch.Generator().manual_seed(1))).mean()
        warm = model.log_prob(model.sample(64, temperature=1.0, generator=torch.Generator().manual_seed(1))).mean()
    assert cold > warm
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            model.sample(2, temperature=bad)


def test_class_conditioning_changes_the_distribution_and_checks_labels():
    model = _model(n_classes=3)
    z = torch.randint(5, (2, 4, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for layer in model.layers:
            layer.cond.weight.normal_()
        a = model.log_prob(z, torch.tensor([0, 0]))
        b = model.log_prob(z, torch.tensor([1, 2]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class-conditional"):
        model.log_prob(z)
    with pytest.raises(ValueError, match="unconditional"):
        _model().log_prob(z, torch.tensor([0, 1]))
    assert model.sample(3, labels=torch.tensor([0, 1, 2])).shape == (3, 4, 5)


def test_bad_inputs_are_refused_with_the_value():
    model = _model()
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        model.log_prob(torch.full((1, 4, 5), 5))
    with pytest.raises(ValueError, match="indices must be"):
        model.log_prob(torch.zeros(1, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="kernel_size"):
        PixelCNNConfig(kernel_size=4)
    with pytest.raises(ValueError, match="k "):
        PixelCNNConfig(k=1)
    with pytest.raises(ValueError, match="unknown prior option 'chanels'"):
        prior_config({"model": {"k": 8}}, "smoke", chanels=3)


class _Grids:
    def __init__(self, indices):
        self.indices, self.labels = indices, torch.zeros(indices.shape[0], dtype=torch.long)


def test_training_learns_structured_grids_below_log_k():
    """Grids whose rows repeat one random value: much more predictable than uniform."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(6, (600, 3, 1), generator=gen)
    z = rows.expand(600, 3, 4).contiguous()
    model = _model(k=6, h=3, w=4, channels=16, n_layers=2)
    dev = torch.device("cpu")
    before = evaluate(model, z[500:], None, dev)
    hist = train_prior(model, _Grids(z[:500]), _Grids(z[500:]), PriorTrainConfig(epochs=6, batch_size=50, lr=1e-2,
                                                                                     evals_per_epoch=2), dev, progress=False)
    after = evaluate(model, z[500:], None, dev)
    assert before["uniform_nats"] == pytest.approx(math.log(6))
    # the ideal is log(6) per row, i.e. log(6)/4 per position
    assert after["nats_per_position"] < 0.5 * math.log(6) < before["nats_per_position"]
    assert len(hist.val_nats) == len(hist.train_nats) == len(hist.epoch) >= 12
    assert after["bits_per_image"] == pytest.approx(bits_per_image(after["nats_per_position"], 3, 4))


def test_batched_metrics_match_the_model():
    model = _model(n_classes=3)
    z = torch.randint(5, (7, 4, 5), generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    with torch.no_grad():
        lp = model.log_prob(z, y)
        per_pos = -model.log_probs_all(z, y).gather(1, z[:, None]).squeeze(1).mean(0)
    assert torch.allclose(score(model, z, y, batch_size=3), lp, atol=1e-5)
    assert torch.allclose(nll_per_position(model, z, y, batch_size=3), per_pos, atol=1e-5)
    ev = evaluate(model, z, y, torch.device("cpu"), batch_size=3)
    assert ev["nats_per_position"] == pytest.approx(float(-lp.mean() / 20), rel=1e-5)


def test_the_prior_benchmark_prints_both_ways_side_by_side_and_they_agree(capsys):
    """``python -m vqtto.bench prior`` on the smoke models: both scorings, both head reductions, both
    decode blockings, both drawings and the guided search with and without the kept pass, one run,
    each pair agreeing."""
    from vqtto import bench

    bench.main(["prior", "--profile", "smoke", "--bases", "3", "--moves", "4", "--draws", "6", "--search-images", "2",
                "--device", "cpu"])
    out = capsys.readouterr().out
    assert "a pass per question" in out and "one kept pass per grid" in out
    same = float(out.split("same answer on ")[1].split("%")[0])   # rounding may part a tie, rarely
    assert same >= 50
    assert "whole pass" in out and "from the base's rows" in out and "same completions (greedy): True" in out
    assert "one pass over all positions" in out and "positions at a time" in out
    assert "one call over all candidates" in out and "256 grids per call" in out
    diffs = [float(part.split()[0]) for part in out.split("largest difference ")[1:]]
    assert len(diffs) == 3 and max(diffs) < 1e-3
