"""The searches of chapter 2: Algorithms 1-3, our searches, the losses, the yardsticks and the driver."""

import math

import pytest
import torch

from vqtto.search import losses as constraints
from vqtto import search


@pytest.fixture
def setup(tiny_vqvae):
    torch.manual_seed(1)
    model = tiny_vqvae.eval()
    src, tgt = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        z = model.encode(src)
    return model, z, tgt


def _brute_steps(e, d, idx, codebook, limit=500):
    for t in range(1, limit):
        if not torch.equal(search.nearest_exact(e + t * d, codebook), idx):
            return t
    return math.inf


def test_steps_to_change_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    cb = torch.randn(16, 3, generator=gen)
    e = torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64)
    d = 0.01 * torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64)
    d[4] = 0.0  # no movement: never changes
    idx = search.nearest_exact(e, cb)
    t = search.steps_to_change(e, d, idx, cb)
    for i in range(5):
        assert t[i] == _brute_steps(e[i:i + 1], d[i:i + 1], idx[i:i + 1], cb)
    assert math.isinf(t[4])


def test_trace_invariants(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    tr = search.straight_through(model, z, loss, alpha=500.0, lam=50, max_unique=40)
    assert len(tr) == 6 and tr.method == "alg2"
    assert torch.equal(tr.grids[0][0], search.nearest_exact(z[:1], model.codebook)[0])
    for i in range(6):
        g, l, r = tr.grids[i], tr.losses[i], tr.raw_steps[i]
        assert g.dtype == torch.long and g.shape[1:] == (7, 7)
        assert len({bytes(x.numpy().tobytes()) for x in g}) == g.shape[0]  # all distinct
        assert l.shape == r.shape == (g.shape[0],) and r[0] == 0
        assert bool((r[1:] >= 1).all()) and bool((r <= 50).all())
        assert tr.stop_reason[i] in search.STOP_REASONS
        if tr.stop_reason[i] == "loop":
            assert 0 <= tr.loop_to[i] < g.shape[0] - 1 or g.shape[0] == 1
    # the recorded losses are the true losses of the grids
    flat = torch.cat(tr.grids)
    owners = torch.cat([torch.full((g.shape[0],), i) for i, g in enumerate(tr.grids)])
    true = search.quantized_losses(model, constraints.mse_to(tgt[owners]), flat)
    assert torch.allclose(torch.cat(tr.losses), true, atol=1e-6)
    # one decode per distinct grid: repeats of a step cost no decoder call
    assert tr.decoded_images == int(tr.n_unique.sum())
    assert torch.allclose(tr.best_losses, torch.stack([l.min() for l in tr.losses]))


def test_batched_equals_one_pair_at_a_time(setup):
    model, z, tgt = setup
    batched = search.straight_through(model, z, search.mse_to(tgt), alpha=500.0, lam=30)
    for i in range(z.shape[0]):
        single = search.straight_through(model, z[i:i + 1], search.mse_to(tgt[i:i + 1]), alpha=500.0, lam=30)
        assert torch.equal(single.grids[0], batched.grids[i])
        assert single.stop_reason[0] == batched.stop_reason[i]
        assert torch.equal(single.raw_steps[0], batched.raw_steps[i])


def test_loop_replays_from_the_recorded_grids(setup):
    """Re-run Algorithm 2 by hand from the recorded grids and raw steps: every step lands on the next
    grid (and not one repeat earlier), and the closing step from the last grid lands on grids[loop_to]."""
    model, z, tgt = setup
    alpha = 500.0
    tr = search.straight_through(model, z, search.mse_to(tgt), alpha=alpha, lam=100, max_unique=500)
    loops = [i for i, r in enumerate(tr.stop_reason) if r == "loop"]
    assert loops, "expected at least one pair to end in a loop"
    for i in loops:
        loss = search.mse_to(tgt[i:i + 1])
        one = search.straight_through(model, z[i:i + 1], loss, alpha=alpha, lam=100, max_unique=500)
        grids, raw = one.grids[0], one.raw_steps[0]
        assert one.stop_reason == ["loop"] and torch.equal(grids, tr.grids[i]) and one.loop_to[0] == tr.loop_to[i]
        ev = search.Evaluator(model, loss, 1)
        e = z[i:i + 1].double()
        for t in range(grids.shape[0]):
            _, grad = ev.loss_and_grad(grids[t:t + 1], torch.tensor([0]))
            d = -alpha * grad.double()
            closing = t == grids.shape[0] - 1
            steps = one.loop_steps[0] if closing else int(raw[t + 1])
            assert steps >= 1
            assert torch.equal(search.nearest_exact(e + (steps - 1) * d, model.codebook)[0], grids[t])
            e = e + steps * d
            after = search.nearest_exact(e, model.codebook)[0]
            assert torch.equal(after, grids[one.loop_to[0]] if closing else grids[t + 1])
        assert torch.allclose(one.final_latents.double(), e, atol=1e-6)


@pytest.mark.parametrize("mask,m,most", [("single", 1, 1), ("top", 3, 3)])
def test_masked_searches_change_few_positions(setup, mask, m, most):
    model, z, tgt = setup
    tr = search.straight_through(model, z, search.mse_to(tgt), alpha=2000.0, lam=200, mask=mask, m=m)
    assert tr.method == ("alg3" if mask == "single" else "top3")
    changes = [int((g[1:] != g[:-1]).flatten(1).sum(1).max()) for g in tr.grids if g.shape[0] > 1]
    assert changes and max(changes) <= most


def test_budget_and_stall(setup):
    model, z, tgt = setup
    tr = search.straight_through(model, z, search.mse_to(tgt), alpha=500.0, max_unique=2)
    assert bool((tr.n_unique <= 2).all()) and "budget" in tr.stop_reason
    assert all(n == 2 for n, r in zip(tr.n_unique.tolist(), tr.stop_reason) if r == "budget")
    still = search.straight_through(model, z, search.mse_to(tgt), alpha=1e-9, lam=1)
    assert set(still.stop_reason) == {"stalled"} and bool((still.n_unique == 1).all())
    assert still.decoded_images == z.shape[0] and bool((still.total_raw_steps == 0).all())


def test_plain_callable_loss_gives_the_same_trace(setup):
    model, z, tgt = setup
    a = search.straight_through(model, z, search.mse_to(tgt), alpha=500.0, lam=30)
    b = search.straight_through(model, z, lambda x: (x - tgt).pow(2).flatten(1).mean(1), alpha=500.0, lam=30)
    for ga, gb in zip(a.grids, b.grids):
        assert torch.equal(ga, gb)


def _protocol_only(model, codebook=True):
    """The latent-decoder protocol of ``model`` and nothing else (with or without its codebook)."""

    class Wrapped:
        nearest = staticmethod(model.nearest)
        lookup = staticmethod(model.lookup)
        decode = staticmethod(model.decode)

    class WithoutCodebook(Wrapped):
        def decode(self, codes):
            raise AssertionError("a model without a codebook must be refused before any decoding")

    if codebook:
        Wrapped.codebook = model.codebook
        return Wrapped()
    return WithoutCodebook()


def test_any_latent_decoder_with_a_codebook_gives_the_same_trace(setup):
    model, z, tgt = setup
    a = search.straight_through(model, z, search.mse_to(tgt), alpha=500.0, lam=30)
    b = search.straight_through(_protocol_only(model), z, search.mse_to(tgt), alpha=500.0, lam=30)
    for i in range(z.shape[0]):
        assert torch.equal(a.raw_steps[i], b.raw_steps[i])
        assert torch.equal(a.grids[i], b.grids[i])


@pytest.mark.parametrize("run", [search.gradient_descent, search.straight_through, search.greedy_coordinate,
                                 search.relaxed_straight_through])
def test_searches_refuse_a_model_without_codebook(setup, run):
    model, z, tgt = setup
    with pytest.raises(ValueError, match="WithoutCodebook has no codebook"):
        run(_protocol_only(model, codebook=False), z, search.mse_to(tgt))


@pytest.mark.parametrize("kwargs,name", [
    ({"alpha": 0}, "alpha"), ({"alpha": -1.0}, "alpha"), ({"alpha": float("nan")}, "alpha"),
    ({"lam": 0}, "lam"), ({"lam": 2.5}, "lam"), ({"max_unique": 0}, "max_unique"),
    ({"mask": "some"}, "mask"), ({"m": 0}, "m"),
])
def test_bad_values_are_refused(setup, kwargs, name):
    model, z, tgt = setup
    with pytest.raises(ValueError, match=name):
        search.straight_through(model, z, search.mse_to(tgt), **kwargs)


def test_bad_start_is_refused(setup):
    model, z, tgt = setup
    with pytest.raises(ValueError, match="z_start"):
        search.straight_through(model, z[:, :2], search.mse_to(tgt))


def test_gradient_descent_lowers_the_continuous_loss(setup):
    model, z, tgt = setup
    tr = search.gradient_descent(model, z, search.mse_to(tgt), alpha=50.0, tol=0.0, max_steps=30)
    assert tr.method == "alg1" and set(tr.stop_reason) == {"budget"}
    for c in tr.continuous_losses:
        assert c.shape == (31,) and c[-1] < c[0]
    early = search.gradient_descent(model, z, search.mse_to(tgt), alpha=50.0, tol=1.0, max_steps=30)
    assert set(early.stop_reason) == {"stalled"}
    assert all(c.shape == (2,) for c in early.continuous_losses)
    with pytest.raises(ValueError, match="tol"):
        search.gradient_descent(model, z, search.mse_to(tgt), tol=-1.0)


def test_gradient_descent_runs_on_the_shared_driver(setup, monkeypatch):
    from vqtto.search import continuous

    calls = []
    real = continuous.drive

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(continuous, "drive", spy)
    model, z, tgt = setup
    tr = search.gradient_descent(model, z, search.mse_to(tgt), alpha=50.0, tol=0.0, max_steps=3)
    assert len(calls) == 1 and calls[0]["on_revisit"] == "record"
    assert tr.method == "alg1" and all(c.shape == (4,) for c in tr.continuous_losses)


def _alg1_by_hand(model, z, targets, alpha, tol, max_steps):
    """Algorithm 1 written out: the active pairs step together; a pair records nearest(z) whenever it
    changes (with the continuous loss there and the steps since the last change) and stops when its
    loss changes by at most tol ("stalled", checked first) or at step max_steps ("budget")."""
    z = z.detach().clone()
    n = z.shape[0]
    grids, losses, raw, curves = ([[] for _ in range(n)] for _ in range(4))
    stop = [None] * n
    since = [0] * n
    prev = torch.full((n,), math.inf)
    decoded = 0
    for step in range(max_steps + 1):
        rows = [i for i in range(n) if stop[i] is None]
        if not rows:
            break
        zr = z[rows].requires_grad_(True)
        values = search.mse_to(targets[rows])(model.decode(zr))
        (grad,) = torch.autograd.grad(values.sum(), zr)
        values = values.detach()
        decoded += len(rows)
        with torch.no_grad():
            nn = model.nearest(z[rows])
        for j, i in enumerate(rows):
            curves[i].append(float(values[j]))
            if not grids[i] or not torch.equal(nn[j], grids[i][-1]):
                grids[i].append(nn[j])
                losses[i].append(float(values[j]))
                raw[i].append(since[i] + 1 if len(grids[i]) > 1 else 0)
                since[i] = 0
            else:
                since[i] += 1
            if bool((values[j] - prev[i]).abs() <= tol):
                stop[i] = "stalled"
            elif step == max_steps:
                stop[i] = "budget"
            prev[i] = values[j]
            if stop[i] is None:
                z[i] = z[i] - alpha * grad[j]
    return grids, losses, raw, curves, stop, decoded, z


@pytest.mark.parametrize("alpha,tol,max_steps", [(1e3, 1e-5, 16), (1e6, 1e-5, 40), (50.0, 0.0, 5)])
def test_gradient_descent_equals_the_loop_written_by_hand(setup, alpha, tol, max_steps):
    model, z, tgt = setup
    tr = search.gradient_descent(model, z, search.mse_to(tgt), alpha=alpha, tol=tol, max_steps=max_steps)
    grids, losses, raw, curves, stop, decoded, final = _alg1_by_hand(model, z, tgt, alpha, tol, max_steps)
    assert tr.stop_reason == stop and tr.decoded_images == decoded and torch.equal(tr.final_latents, final)
    assert tr.loop_to == [-1] * 6 and tr.loop_steps == [0] * 6
    for i in range(6):
        assert torch.equal(tr.grids[i], torch.stack(grids[i]))
        assert tr.losses[i].tolist() == losses[i] and tr.raw_steps[i].tolist() == raw[i]
        assert tr.continuous_losses[i].tolist() == curves[i]
    if alpha == 1e3:  # a pair that stalls exactly at the last step stops as "stalled", not "budget"
        assert len(curves[0]) == max_steps + 1 and stop[0] == "stalled"
    if alpha == 1e6:  # Algorithm 1 records a grid it comes back to again
        assert any(len({g.numpy().tobytes() for g in gs}) < len(gs) for gs in grids)


def test_greedy_strictly_improves_and_never_loops(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    tr = search.greedy_coordinate(model, z, loss, positions=2, candidates=2, max_width=16, max_unique=15)
    alg2 = search.straight_through(model, z, loss, alpha=500.0)
    assert "loop" not in tr.stop_reason
    for l in tr.losses:
        assert bool((l[1:] < l[:-1]).all())
    assert bool((tr.final_losses < torch.stack([l[0] for l in tr.losses])).any())
    assert float(tr.final_losses.mean()) <= float(alg2.best_losses.mean())
    with pytest.raises(ValueError, match="max_width"):
        search.greedy_coordinate(model, z, loss, positions=4, candidates=4, max_width=8)


def test_masked_and_downscaled_losses():
    x, t = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    mask = torch.zeros(8, 8)
    mask[:4] = 1
    masked = search.masked_mse_to(t, mask)
    x2 = x.clone()
    x2[..., 4:, :] = 5.0  # unknown pixels do not count
    assert torch.allclose(masked(x), masked(x2))
    assert torch.allclose(masked(x), (x - t)[..., :4, :].pow(2).flatten(1).mean(1))
    down = search.downscaled_mse_to(constraints.downscale(t, 2), 2)
    assert torch.allclose(down(x), (constraints.downscale(x, 2) - constraints.downscale(t, 2)).pow(2).flatten(1).mean(1))
    assert torch.allclose(search.downscaled_mse_to(t, 2)(x), down(x))  # full-resolution targets are pooled too
    assert torch.allclose(down.rows(torch.tensor([1, 1]))(x[[1, 1]]), down(x)[[1, 1]])
    with pytest.raises(ValueError, match="factor"):
        search.downscaled_mse_to(t, 0)
    with pytest.raises(ValueError, match="mask"):
        search.masked_mse_to(t, torch.zeros(8, 8))


def test_searches_accept_masked_losses(setup):
    model, z, tgt = setup
    mask = torch.ones(28, 28)
    mask[10:18, 10:18] = 0
    tr = search.straight_through(model, z, search.masked_mse_to(tgt, mask), alpha=500.0)
    assert bool((tr.best_losses <= torch.stack([l[0] for l in tr.losses])).all())


def test_relaxed_search_starts_at_the_source_grid_and_improves(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    tr = search.relaxed_straight_through(model, z, loss, lr=0.2, max_steps=40)
    assert tr.method == "relaxed" and "loop" not in tr.stop_reason
    assert torch.equal(torch.stack([g[0] for g in tr.grids]), model.nearest(z))
    start = torch.stack([l[0] for l in tr.losses])
    assert bool((tr.best_losses <= start).all()) and float(tr.best_losses.mean()) < float(start.mean())
    flat = torch.cat(tr.grids)
    owners = torch.cat([torch.full((g.shape[0],), i) for i, g in enumerate(tr.grids)])
    assert torch.allclose(torch.cat(tr.losses), search.quantized_losses(model, search.mse_to(tgt[owners]), flat), atol=1e-6)
    assert tr.decoded_images <= 6 * 41  # one decode per pair and round, budget respected
    with pytest.raises(ValueError, match="lr"):
        search.relaxed_straight_through(model, z, loss, lr=0.0)


def test_every_search_is_labelled_with_one_of_the_methods(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    labels = [search.gradient_descent(model, z, loss, max_steps=2).method,
              search.greedy_coordinate(model, z, loss, max_width=16, max_unique=2).method,
              search.relaxed_straight_through(model, z, loss, max_steps=2).method]
    labels += [search.straight_through(model, z, loss, lam=2, max_unique=2, mask=mask, m=3).method for mask in search.MASKS]
    assert labels == ["alg1", "greedy", "relaxed", "alg2", "alg3", "top3"]
    assert [l for l in labels if l in search.METHODS] == labels[:-1] and labels[-1].startswith("top")
    assert len(set(search.METHODS)) == len(search.METHODS)


def test_reference_and_relative_losses(setup):
    model, _, tgt = setup
    ref = search.reference_losses(model, tgt)
    own = search.quantized_losses(model, search.mse_to(tgt), model.nearest(model.encode(tgt)))
    assert ref.shape == (6,) and torch.equal(ref, own)
    assert torch.allclose(search.relative_losses(model, tgt, ref), torch.ones(6))
    assert torch.allclose(search.relative_losses(model, tgt, 2 * ref), torch.full((6,), 2.0))
    mask = torch.ones(28, 28)
    mask[:14] = 0
    masked = search.masked_mse_to(tgt, mask)
    assert not torch.equal(search.reference_losses(model, tgt, masked), ref)


def test_package_exports_every_public_name():
    for name in ("mse_to", "masked_mse_to", "downscaled_mse_to", "downscale", "PairLoss", "LossFn", "MASKS",
                 "STOP_REASONS", "METHODS", "SearchTrace", "gradient_descent", "straight_through", "mask_gradient",
                 "greedy_coordinate", "relaxed_straight_through", "nearest_exact", "position_steps",
                 "steps_to_change", "quantized_losses", "reference_losses", "relative_losses", "pair_losses",
                 "Evaluator", "Recorder", "drive", "MOVED", "STALLED", "RETRY", "BUDGET"):
        assert hasattr(search, name), name
    assert callable(search.straight_through) and set(search.__all__) <= set(dir(search))


def test_chapter_summaries_match_the_trace(setup):
    from vqtto.book.chapters import gradient_search as chapter

    model, z, tgt = setup
    tr = search.straight_through(model, z, search.mse_to(tgt), alpha=500.0, lam=100)
    row = chapter.table1_row("x", tr)
    n = tr.n_unique.double()
    assert row["mean"] == round(float(n.mean()), 2) and row["min"] == int(n.min()) and row["max"] == int(n.max())
    cyc = chapter.loop_lengths(tr)
    assert cyc.numel() == sum(r == "loop" for r in tr.stop_reason) and bool((cyc >= 2).all())
    from vqtto.book import plots

    cols = plots._columns(50, 17, 8)
    assert len(cols) <= 8 and 17 in cols and cols[0] == 0 and cols[-1] == 49
    assert plots._columns(5, -1, 8) == [0, 1, 2, 3, 4]
    rows = chapter.relative_rows({"a": torch.tensor([0.5, 1.0, 2.0, 4.0])})
    assert rows[0]["median"] == 1.5 and rows[0]["reaches the target's own code (<= 1)"] == "50% [15%, 85%]"
    assert chapter.ending_share(tr, "loop").value == tr.fraction("loop") and row["ended in a loop"].endswith("]")


@pytest.mark.parametrize("alpha", [1e-12, 1e6])
def test_every_search_terminates_for_extreme_step_sizes(setup, alpha):
    model, z, tgt = setup
    for mask in search.MASKS:
        tr = search.straight_through(model, z, search.mse_to(tgt), alpha=alpha, lam=3, max_unique=30, mask=mask, m=2)
        assert bool((tr.n_unique <= 30).all()) and all(r in search.STOP_REASONS for r in tr.stop_reason)


def test_position_steps_never_negative_with_signed_zero_steps():
    """A step component of -0.0 once gave -inf repeats (a / -0.0) and an endless search loop."""
    from vqtto.search import position_steps

    cb = torch.tensor([[0.0], [1.0]])
    e = torch.tensor([0.3, 0.7, 0.2]).view(1, 1, 1, 3)
    d = torch.tensor([-0.0, 0.1, -0.05]).view(1, 1, 1, 3)
    idx = torch.tensor([[[0, 1, 0]]])
    tp = position_steps(e, d, idx, cb, torch.float32)
    assert (tp >= 1).all()
    assert torch.isinf(tp[0, 0]) and tp[0, 1] == math.inf and torch.isinf(tp[0, 2])


def test_chapter_skips_data_sets_that_are_not_on_the_machine(monkeypatch):
    """The full profile lists CIFAR-10 and Mini-ImageNet; without their data the chapter goes on."""
    from types import SimpleNamespace

    from vqtto import models
    from vqtto.data import pairs
    from vqtto.book.chapters import gradient_search as chapter
    from vqtto.data import DataUnavailable
    from vqtto.models.autoencoder import VQVAE, VQVAEConfig

    tiny = VQVAE(VQVAEConfig(k=4, hidden=8, embedding_dim=2))

    def fake_vqvae(ds, **kw):
        if ds != "fashion-mnist":
            raise DataUnavailable(f"{ds} is not here")
        return SimpleNamespace(model=tiny)

    images = torch.rand(3, 1, 28, 28)
    monkeypatch.setattr(models, "vqvae", fake_vqvae)
    monkeypatch.setattr(pairs, "test_pairs", lambda ds, n, seed: pairs.Pairs(images, images.flip(0), torch.arange(3), torch.arange(3).flip(0)))
    cpu = torch.device("cpu")
    sets, skipped = chapter.pair_sets(["fashion-mnist", "cifar10", "miniimagenet"], 4, "smoke", 3, 0, cpu)
    assert list(sets) == ["fashion-mnist"] and sorted(skipped) == ["cifar10", "miniimagenet"]
    assert sets["fashion-mnist"].z.shape == (3, 2, 7, 7) and sets["fashion-mnist"].reference.shape == (3,)
    with pytest.raises(DataUnavailable, match="none of the data sets"):
        chapter.pair_sets(["cifar10"], 4, "smoke", 3, 0, cpu)


def test_algorithm1_with_adam_matches_a_hand_written_adam_loop(tiny_vqvae):
    torch.manual_seed(3)
    x = torch.rand(3, 1, 28, 28)
    targets = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        z0 = tiny_vqvae.encode(x)
    tr = search.gradient_descent(tiny_vqvae, z0, search.mse_to(targets), alpha=0.05, tol=0.0, max_steps=7,
                                 optimizer="adam")
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(7):
        opt.zero_grad()
        ((tiny_vqvae.decode(z) - targets) ** 2).flatten(1).mean(1).sum().backward()
        opt.step()
    assert torch.allclose(tr.final_latents, z.detach(), atol=1e-5)
    assert all(len(c) == 8 for c in tr.continuous_losses) and tr.stop_reason == ["budget"] * 3
    with pytest.raises(ValueError, match=r"optimizer must be one of \['sgd', 'adam'\]"):
        search.gradient_descent(tiny_vqvae, z0, search.mse_to(targets), optimizer="lbfgs")


def test_relaxed_search_of_a_pair_does_not_depend_on_the_other_pairs_in_its_batch(tiny_vqvae):
    torch.manual_seed(5)
    x, targets = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        z = tiny_vqvae.encode(x)
    batched = search.relaxed_straight_through(tiny_vqvae, z, search.mse_to(targets), max_steps=6)
    alone = search.relaxed_straight_through(tiny_vqvae, z[2:3], search.mse_to(targets[2:3]), max_steps=6)
    assert torch.equal(batched.grids[2], alone.grids[0])
    assert torch.allclose(batched.losses[2], alone.losses[0])
