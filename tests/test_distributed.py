"""torch.distributed on 2 CPU processes (gloo): data-parallel training, sharded searches, a crashing rank.

The ranks are started by :func:`vqtto.distributed.spawn` (the variables torchrun sets, a free
localhost port, a timeout); the one-process runs they are compared with run in this process.
"""

import os

import pytest
import torch

from vqtto import distributed, search
from vqtto.data import ImageSet
from vqtto.models.training import PriorTrainConfig, TrainConfig, train_prior, train_vqvae
from vqtto.models.autoencoder import VQVAE, VQVAEConfig

CPU = torch.device("cpu")
N_IMAGES, BATCH = 90, 21  # 5 steps per epoch: shares of 11 and 10 images, and the last step 3 and 3
N_PAIRS = 5  # 3 + 2 pairs on two ranks
SEARCHES = {
    "alg2": lambda m, z, loss: search.straight_through(m, z, loss, alpha=500.0, lam=30),
    "alg1": lambda m, z, loss: search.gradient_descent(m, z, loss, alpha=5.0, max_steps=15),
    "greedy": lambda m, z, loss: search.greedy_coordinate(m, z, loss, positions=2, candidates=2, max_unique=6),
    "relaxed": lambda m, z, loss: search.relaxed_straight_through(m, z, loss, max_steps=8),
}


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 16, 16)
    for i, (r, c) in enumerate(torch.randint(0, 10, (n, 2), generator=g).tolist()):
        x[i, 0, r:r + 6, c:c + 6] = 1.0
    return x


def _train():
    """A few steps of a tiny VQ-VAE (dead-code restarts every 2 steps) and a class-conditional prior."""
    x = _images(N_IMAGES, 0)
    data = ImageSet(x, torch.arange(N_IMAGES) % 3, "toy")
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(k=16, hidden=8, embedding_dim=4))
    hist = train_vqvae(vq, data, data, TrainConfig(epochs=2, batch_size=BATCH, restart_every=2, evals_per_epoch=2),
                       CPU, progress=False)
    grids = torch.randint(16, (N_IMAGES, 4, 4), generator=torch.Generator().manual_seed(2))
    codes = type("Codes", (), {"indices": grids, "labels": data.labels})
    from vqtto.models.pixelcnn import GatedPixelCNN, PixelCNNConfig

    torch.manual_seed(1)
    prior = GatedPixelCNN(PixelCNNConfig(k=16, height=4, width=4, channels=8, n_layers=1, n_classes=3))
    prior_hist = train_prior(prior, codes, codes, PriorTrainConfig(epochs=1, batch_size=BATCH, evals_per_epoch=1), CPU,
                             progress=False)
    params = {f"vq.{n}": t.clone() for n, t in vq.state_dict().items()}
    params.update({f"prior.{n}": t.clone() for n, t in prior.state_dict().items()})
    return params, hist.restarted, hist.train_recon, prior_hist.train_nats


def _search_setup():
    torch.manual_seed(3)
    model = VQVAE(VQVAEConfig(k=16, hidden=8, embedding_dim=4)).eval()
    return model, _images(N_PAIRS, 1), _images(N_PAIRS, 2)


def _search(name):
    model, sources, targets = _search_setup()
    loss = search.mse_to(targets)

    def run(rows):
        with torch.no_grad():
            z = model.encode(sources[rows])
        return SEARCHES[name](model, z, loss.rows(rows))

    return distributed.sharded(run, N_PAIRS, search.join_traces)


def _worker():
    """What each rank does: train, then run every search on its share of the pairs."""
    return {"world": distributed.world(), "train": _train(), "traces": {name: _search(name) for name in SEARCHES}}


@pytest.fixture(scope="module")
def two_ranks():
    return distributed.spawn(_worker, 2, timeout=240, threads=1)


@pytest.fixture(scope="module")
def one_process():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank has: the same kernels, so the searches agree bit for bit
    try:
        return {"train": _train(), "traces": {name: _search(name) for name in SEARCHES}}
    finally:
        torch.set_num_threads(threads)


def test_two_ranks_train_identical_parameters_that_match_one_process(two_ranks, one_process):
    assert [r["world"].rank for r in two_ranks] == [0, 1] and two_ranks[0]["world"].size == 2
    (p0, restarts0, recon0, nats0), (p1, restarts1, recon1, nats1) = two_ranks[0]["train"], two_ranks[1]["train"]
    assert p0.keys() == p1.keys() and all(torch.equal(p0[n], p1[n]) for n in p0), "ranks diverged"
    assert restarts0 == restarts1 and recon0 == recon1 and nats0 == nats1
    p, restarts, recon, nats = one_process["train"]
    assert restarts0 == restarts and restarts[-1] > 0, "the same dead codes were restarted"
    for name in p:
        # Adam divides by the gradient's running magnitude, so where a gradient is ~0 its float noise
        # moves a weight by up to lr per step: the prior (5 steps at lr 2e-3) is compared at 1e-3.
        atol = 1e-5 if name.startswith("vq.") else 1e-3
        assert torch.allclose(p0[name].float(), p[name].float(), atol=atol, rtol=1e-4), \
            f"{name}: max difference {(p0[name].float() - p[name].float()).abs().max():.3g}"
    assert recon0 == pytest.approx(recon, rel=1e-4) and nats0 == pytest.approx(nats, rel=1e-4)



@pytest.mark.parametrize("name", list(SEARCHES))
def test_sharded_search_equals_the_unsharded_run(two_ranks, one_process, name):
    assert two_ranks[1]["traces"][name] is None, "only rank 0 gets the joined trace"
    sharded, whole = two_ranks[0]["traces"][name], one_process["traces"][name]
    assert len(sharded) == len(whole) == N_PAIRS and sharded.method == whole.method
    for field in ("grids", "losses", "raw_steps"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(sharded, field), getattr(whole, field))), field
    assert sharded.stop_reason == whole.stop_reason and sharded.loop_to == whole.loop_to
    assert sharded.decoded_images == whole.decoded_images


def _crash_worker(cache):
    """Train a cached VQ-VAE on both ranks; rank 1 raises at its second dead-code check."""
    os.environ["VQTTO_CACHE"] = cache
    from vqtto import data as data_mod
    from vqtto import models
    from vqtto.models import training

    data_mod.load = lambda dataset, split="train", root=None, limit=None: ImageSet(
        torch.zeros(64, 1, 28, 28), torch.zeros(64, dtype=torch.long), dataset)
    hook = training.DeadCodeRestarts.__call__

    def failing(self, step, batch, gen):
        if distributed.world().rank == 1 and step >= 2:
            raise RuntimeError("injected failure")
        hook(self, step, batch, gen)

    training.DeadCodeRestarts.__call__ = failing
    with distributed.staged_cache():
        models.vqvae("fashion-mnist", k=8, profile="smoke", device="cpu", progress=False, restart_every=1,
                     batch_size=16, train_limit=64, test_limit=16)


def test_a_crashing_rank_fails_the_run_naming_it_and_leaves_no_cache_file(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(distributed.RankFailed, match=r"rank 1 failed: RuntimeError: injected failure"):
        distributed.spawn(_crash_worker, 2, str(cache), timeout=120, threads=1)
    assert not list(cache.glob("*.artifact")), "a failed run left a file under a cache key"


def test_one_process_needs_no_process_group():
    assert distributed.world() == distributed.World(rank=0, size=1, local_rank=0)
    rows = torch.arange(7)
    assert torch.equal(distributed.rank_share(rows), rows)
    t = torch.ones(3)
    assert distributed.sum_(t) is t and torch.equal(distributed.gather_rows(t), t)
    assert distributed.from_rank0(lambda: 5) == 5 and distributed.any_rank(True)


def test_batches_too_small_for_the_ranks_are_refused():
    distributed.check_split(90, 20, size=2)
    with pytest.raises(ValueError, match="every global batch needs at least 3 examples"):
        distributed.check_split(61, 20, size=3)  # the last batch has 1 image
