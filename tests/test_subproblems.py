"""Exact optima of sub-problems and the radius-1 certificate, on a tiny model."""

import pytest
import torch

from vqtto import search


@pytest.fixture
def setup(tiny_vqvae):
    torch.manual_seed(2)
    model = tiny_vqvae.eval()
    src, tgt = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        z = model.encode(src)
        own = model.nearest(model.encode(tgt))
    return model, z, tgt, own


def test_enumeration_finds_the_brute_force_optimum(setup):
    model, z, tgt, own = setup
    loss = search.mse_to(tgt)
    pos = search.free_positions(2, 7, 7, 2, seed=0)
    sub = search.enumerate_subproblem(model, loss, own, pos, chunk=10)
    assert sub.n_grids == 64
    for i in range(2):
        best = float("inf")
        for a in range(8):
            for b in range(8):
                g = own[i].clone().flatten()
                g[pos[i, 0]], g[pos[i, 1]] = a, b
                best = min(best, float(search.quantized_losses(model, search.mse_to(tgt[i:i + 1]), g.view(1, 7, 7))[0]))
        assert sub.best_losses[i].item() == pytest.approx(best, rel=1e-6)
        assert float(search.quantized_losses(model, search.mse_to(tgt[i:i + 1]), sub.best_grids[i:i + 1])[0]) == pytest.approx(best, rel=1e-6)
    assert bool((sub.second_losses >= sub.best_losses).all())


def test_a_restricted_search_is_measured_against_the_optimum(setup):
    model, z, tgt, own = setup
    loss = search.mse_to(tgt)
    pos = search.free_positions(2, 7, 7, 2, seed=1)
    sub = search.enumerate_subproblem(model, loss, own, pos)
    mask = search.free_mask(pos, 7, 7)
    tr = search.screened_annealing(model, z, loss, start=own, movable=mask, m=8, budget=200, chains=2)
    out = search.optimum_rate(tr.best_losses, sub)
    assert 0.0 <= out["found"] <= 1.0 and bool((out["gaps"] >= -1e-6).all())
    for g, o, mk in zip(tr.best_indices, own, mask):
        assert torch.equal(g[~mk], o[~mk])


def test_enumeration_refuses_what_it_cannot_hold(setup):
    model, z, tgt, own = setup
    with pytest.raises(ValueError, match=r"k\*\*m = 8\*\*7 = 2,097,152 grids .* max_grids=262,144"):
        search.enumerate_subproblem(model, search.mse_to(tgt), own, search.free_positions(2, 7, 7, 7))
    with pytest.raises(ValueError, match="m must be <= h\\*w"):
        search.free_positions(2, 7, 7, 50)


def test_radius1_certificate(setup):
    model, z, tgt, own = setup
    loss = search.mse_to(tgt)
    polished = search.screened_polish(model, z, loss, m=400, max_rounds=200, screen="global")  # all 49 * 7 neighbours
    cert = search.radius1_certificate(model, loss, polished.best_indices, chunk=100)
    assert cert.neighbours == 49 * 7
    stalled = torch.tensor([r == "stalled" for r in polished.stop_reason])
    assert bool(cert.local_optimum[stalled].all())
    assert torch.allclose(cert.loss, polished.best_losses, rtol=1e-5)
    start = search.radius1_certificate(model, loss, model.nearest(z))
    assert bool((start.improvement[~start.local_optimum] > 0).all())


def _problem(model, z, tgt):
    from vqtto.tasks.pair_benchmark import Problem

    return Problem(model, torch.zeros_like(tgt), tgt, z, search.mse_to(tgt), torch.ones(len(tgt)), [(0, 1), (2, 3)])


@pytest.mark.parametrize("method", ["relaxed-local", "screened-sa"])
def test_a_subproblem_run_starts_from_its_grid_and_moves_only_the_free_positions(setup, method):
    from vqtto.book.chapters.reaching_target import run_on_subproblem

    model, z, tgt, own = setup
    pos = search.free_positions(2, 7, 7, 2, seed=0)
    mask = search.free_mask(pos, 7, 7)
    start = torch.where(mask, model.nearest(z), own)
    tr = run_on_subproblem(method, _problem(model, z, tgt), start, mask, 40.0, {}, 2)
    for i in range(2):
        for g in tr.grids[i]:
            assert torch.equal(g[~mask[i]], own[i][~mask[i]]), "frozen positions keep the start's codes"
        assert torch.equal(tr.grids[i][0], start[i]), "the run starts at the sub-problem's grid"


def test_the_best_known_loss_is_computed_once_then_read_from_the_cache(setup, tmp_path, monkeypatch):
    from vqtto.tasks import pair_benchmark

    model, z, tgt, _ = setup
    monkeypatch.setenv("VQTTO_CACHE", str(tmp_path))
    runs = []
    real = search.registry.run
    monkeypatch.setattr(search.registry, "run", lambda *a, **kw: runs.append(kw["budget"]) or real(*a, **kw))
    pb = _problem(model, z, tgt)
    first = pair_benchmark.best_known(pb, 40.0)
    again = pair_benchmark.best_known(pb, 40.0)
    assert runs == [40.0] and first.dtype == torch.float64 and first.shape == (2,)
    assert torch.equal(first, again) and len(list(tmp_path.glob("best-known-*.artifact"))) == 1
    pair_benchmark.best_known(pb, 60.0)
    assert runs == [40.0, 60.0], "another budget is another reference"
    with pytest.raises(ValueError, match="budget"):
        pair_benchmark.best_known(pb, 2.0)
