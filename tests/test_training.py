import torch

from vqtto.data import ImageSet
from vqtto.training import TrainConfig, evaluate, train_vqvae


def _toy(n):
    g = torch.Generator().manual_seed(0)
    # blobs: easy to reconstruct, so a few steps lower the loss
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        r, c = torch.randint(0, 20, (2,), generator=g)
        x[i, 0, r : r + 8, c : c + 8] = 1.0
    return ImageSet(x, torch.zeros(n, dtype=torch.long), "toy")


def test_training_lowers_test_loss_and_records_history(tiny_vqvae):
    train, test = _toy(256), _toy(64)
    before = evaluate(tiny_vqvae, test.images, torch.device("cpu"))["recon"]
    hist = train_vqvae(tiny_vqvae, train, test, TrainConfig(epochs=3, batch_size=32, restart_every=4,
                                                             evals_per_epoch=2), torch.device("cpu"),
                       progress=False)
    assert hist.test_recon[-1] < before
    n = len(hist.step)
    assert n >= 6 and all(len(getattr(hist, f)) == n for f in ("train_recon", "test_quant", "codes_used"))
    assert hist.epoch[-1] == 3.0


def test_restart_verdict_follows_the_numbers():
    from types import SimpleNamespace

    from vqtto.chapters.training import gap_verdict, restart_verdict

    def tv(mse, used):
        return SimpleNamespace(k=512, test={"recon": mse, "codes_used": used, "perplexity": used * 0.8})

    assert "also lower the test MSE" in restart_verdict(tv(0.008, 510), tv(0.009, 70))
    assert "does not profit" in restart_verdict(tv(0.0081, 510), tv(0.0078, 73))
    assert "agree with its claim" in gap_verdict("fashion-mnist", 0.0081, 0.0091, 512, 40)
    assert "do not reproduce" in gap_verdict("fashion-mnist", 0.008, 0.012, 512, 40)
    assert "not directly comparable" in gap_verdict("fashion-mnist", 0.15, 0.16, 32, 8)
