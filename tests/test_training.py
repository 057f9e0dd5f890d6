"""The training loop: RNG order, evaluation points, reproducibility, time budget; the VQ-VAE and prior uses."""

import math

import pytest
import torch
from torch import nn

from vqtto.data import ImageSet
from vqtto.models.training import (Loop, PriorTrainConfig, TrainConfig, cosine_decay, fit, train_prior, vqvae_metrics,
    train_vqvae)
from vqtto.models.autoencoder import VQVAE, VQVAEConfig

CPU = torch.device("cpu")


def _toy(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    # blobs: easy to reconstruct, so a few steps lower the loss
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        r, c = torch.randint(0, 20, (2,), generator=g)
        x[i, 0, r : r + 8, c : c + 8] = 1.0
    return ImageSet(x, torch.zeros(n, dtype=torch.long), "toy")


def _vqvae(seed=0):
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig(k=8, hidden=8, embedding_dim=4, n_res=1))


def test_training_lowers_test_loss_and_records_history(tiny_vqvae):
    train, test = _toy(256), _toy(64)
    before = vqvae_metrics(tiny_vqvae, test.images, CPU)["recon"]
    hist = train_vqvae(tiny_vqvae, train, test, TrainConfig(epochs=3, batch_size=32, restart_every=4,
                                                             evals_per_epoch=2), CPU, progress=False)
    assert hist.test_recon[-1] < before
    n = len(hist.step)
    assert n >= 6 and all(len(getattr(hist, f)) == n for f in ("train_recon", "test_quant", "codes_used"))
    assert hist.epoch[-1] == 3.0


def test_test_metrics_do_not_depend_on_the_evaluation_batch(tiny_vqvae):
    """The default CPU evaluation batch (EVAL_BATCH) measures what any other batch size measures."""
    from vqtto.models.training import EVAL_BATCH

    images = _toy(600).images
    default = vqvae_metrics(tiny_vqvae, images, CPU)
    for size in (EVAL_BATCH["cpu"], 500, 37):
        other = vqvae_metrics(tiny_vqvae, images, CPU, batch_size=size)
        assert other["codes_used"] == default["codes_used"]
        for key in ("recon", "quant", "perplexity"):
            assert abs(other[key] - default[key]) <= 1e-6 * abs(default[key])


def test_fit_draws_batches_then_hook_draws_from_one_generator_in_order():
    """One randperm per epoch, then whatever on_step draws, all from Generator(seed): the order the
    VQ-VAE's dead-code restarts rely on for reproducible weights."""
    data = torch.arange(10.0)[:, None]  # (N, 1): row i holds i, so a batch shows which rows it took
    seen, drawn = [], []

    def loss_fn(x):
        seen.append(x[:, 0].long().tolist())
        return model(x).sum(), {}

    def on_step(step, batch, gen):
        drawn.append(float(torch.rand(1, generator=gen)))

    model = nn.Linear(1, 1)
    fit(model, (data,), loss_fn, Loop(batch_size=4, lr=0.1, seed=7, epochs=2), CPU, on_step=on_step, progress=False)
    gen = torch.Generator().manual_seed(7)
    want_seen, want_drawn = [], []
    for _ in range(2):
        order = torch.randperm(10, generator=gen)
        for start in range(0, 10, 4):
            want_seen.append(order[start:start + 4].tolist())
            want_drawn.append(float(torch.rand(1, generator=gen)))
    assert seen == want_seen and drawn == want_drawn


def test_evaluation_points_and_running_means():
    """5 steps per epoch (100 rows, batches of 24), evals_per_epoch=2: a point every 2 steps and one
    after the last step; the train curve averages the steps since the previous point."""
    data = torch.arange(100.0)[:, None]
    losses, evals = [], iter(range(100))

    def loss_fn(x):
        losses.append(float(x.mean()))
        return model(x).mean() * 0, {"batch_mean": x.mean()}

    model = nn.Linear(1, 1)
    c = fit(model, (data,), loss_fn, Loop(batch_size=24, lr=0.1, epochs=3, evals_per_epoch=2), CPU,
            evaluate=lambda: {"n": next(evals)}, progress=False)
    assert c.step == [2, 4, 6, 8, 10, 12, 14, 15] and c.steps == 15 and c.examples == 300
    assert c.epoch == [s / 5 for s in c.step] and c.evals == {"n": list(range(8))}
    bounds = [0, *c.step]
    want = [sum(losses[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:])]
    assert c.train["batch_mean"] == pytest.approx(want, rel=1e-6)
    assert not model.training


def test_vqvae_training_is_reproducible_and_follows_the_seed():
    """Same config and seed (restarts included): identical weights and curves; another seed differs."""
    def run(seed):
        model = _vqvae()
        cfg = TrainConfig(epochs=2, batch_size=24, restart_every=2, evals_per_epoch=2, seed=seed, test_limit=20)
        hist = train_vqvae(model, _toy(60), _toy(30, 1), cfg, CPU, progress=False).as_dict()
        hist.pop("seconds")
        return model.state_dict(), hist

    (a, ha), (b, hb), (c, _) = run(0), run(0), run(1)
    assert all(torch.equal(a[n], b[n]) for n in a) and ha == hb
    assert not all(torch.equal(a[n], c[n]) for n in a)
    assert ha["step"] == [1, 2, 3, 4, 5, 6] and ha["epoch"][-1] == 2.0  # 3 steps per epoch, eval_every = 1


class _Grids:
    def __init__(self, indices, labels):
        self.indices, self.labels = indices, labels


@pytest.mark.parametrize("n_classes", [0, 3])
def test_prior_training_is_reproducible(n_classes):
    from vqtto.models.pixelcnn import GatedPixelCNN, PixelCNNConfig

    g = torch.Generator().manual_seed(0)
    z, y = torch.randint(5, (90, 3, 3), generator=g), torch.randint(3, (90,), generator=g)

    def run():
        torch.manual_seed(0)
        model = GatedPixelCNN(PixelCNNConfig(k=5, height=3, width=3, channels=8, n_layers=1, n_classes=n_classes))
        cfg = PriorTrainConfig(epochs=2, batch_size=16, evals_per_epoch=2, val_limit=10)
        hist = train_prior(model, _Grids(z[:70], y[:70]), _Grids(z[70:], y[70:]), cfg, CPU, progress=False)
        return model.state_dict(), hist

    (a, ha), (b, hb) = run(), run()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert ha.train_nats == hb.train_nats and ha.val_nats == hb.val_nats
    assert ha.step == [2, 4, 6, 8, 10]  # 5 steps per epoch: a point every 2 steps and after the last


def test_cosine_decay_and_time_budget():
    assert [cosine_decay(s, 10) for s in (0, 5, 10, 12)] == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-12)
    assert cosine_decay(3, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    model = nn.Linear(1, 1)
    data = torch.zeros(8, 1)
    c = fit(model, (data,), lambda x: (model(x).pow(2).mean(), {}), Loop(batch_size=4, lr=0.1, epochs=None,
                                                                       seconds=0.05), CPU, progress=False)
    assert c.steps >= 1 and c.seconds >= 0.05 and c.examples == 4 * c.steps
    with pytest.raises(ValueError, match="seconds"):
        Loop(batch_size=4, lr=0.1, epochs=None)
    with pytest.raises(ValueError, match="fixed number of epochs"):
        fit(model, (data,), lambda x: (model(x).sum(), {}), Loop(batch_size=4, lr=0.1, epochs=None, seconds=1.0),
            CPU, lr_schedule=cosine_decay, progress=False)
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"evals_per_epoch": 0}, {"restart_every": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="val_limit"):
        PriorTrainConfig(val_limit=0)


def test_restart_verdict_follows_the_numbers():
    from types import SimpleNamespace

    from vqtto.book.chapters.training import gap_verdict, restart_verdict

    def tv(mse, used):
        return SimpleNamespace(k=512, test={"recon": mse, "codes_used": used, "perplexity": used * 0.8})

    assert "also lower the test MSE" in restart_verdict(tv(0.008, 510), tv(0.009, 70))
    assert "does not profit" in restart_verdict(tv(0.0081, 510), tv(0.0078, 73))

    def rows(*gaps):
        return [{"gap": g, "relative gap": g / 0.008} for g in gaps]

    assert "Under either reading ours is no larger" in gap_verdict("fashion-mnist", rows(0.0003, 0.0004), 512, 40)
    assert "std 0.0001 over 2 seeds" in gap_verdict("fashion-mnist", rows(0.0003, 0.0004), 512, 40)
    assert "only if the paper's pixels were in [0, 1]" in gap_verdict("fashion-mnist", rows(0.0010), 512, 40)
    assert "we do not reproduce" in gap_verdict("fashion-mnist", rows(0.004), 512, 40)
    assert "not comparable" in gap_verdict("fashion-mnist", rows(0.01), 32, 8)


def test_flatness_is_measured_from_the_recorded_curves():
    from types import SimpleNamespace

    from vqtto.book.chapters import training as chapter

    epochs = [0.1 * i for i in range(1, 21)]
    flat = [0.01] * 20
    rising = [0.01 * (1 + 0.5 * e) for e in epochs]  # +50% per epoch: about +14% over the last 0.4 epoch
    h = {"k=512": SimpleNamespace(epoch=epochs, test_recon=flat, test_quant=flat),
         "k=40": SimpleNamespace(epoch=epochs, test_recon=flat, test_quant=rising)}
    ends = chapter.curve_ends(h)
    quant40 = next(e for e in ends if e.model == "k=40" and e.curve == "test quantisation loss")
    assert quant40.points == 4 and quant40.epochs == pytest.approx(0.3)
    assert quant40.change == pytest.approx(0.5 * 0.3 / (1 + 0.5 * 1.85), rel=1e-6) and not quant40.flat
    assert all(e.flat for e in ends if e is not quant40)
    text = chapter.flat_verdict(ends)
    assert "k=40: test quantisation loss +7.8%" in text and "k=512" not in text and "still rises" in text
    rows = chapter.curve_end_rows(ends)
    assert [r["flattened"] for r in rows] == [True, False]
    assert chapter.flat_verdict(ends[:2]).startswith("Every test curve changed by at most 2%")
    short = chapter.curve_end("m", "test reconstruction MSE", [0.5, 1.0], [0.2, 0.1])
    assert short.change is None and not short.flat
