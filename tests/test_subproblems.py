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
