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
    monkeypatch.setitem(search.local.RELAXED_PHASE, "init_scale", 2.5)
    pair_benchmark.best_known(pb, 40.0)
    assert runs == [40.0, 60.0, 40.0], "a run cached under other default settings is not read back"
    with pytest.raises(ValueError, match="budget"):
        pair_benchmark.best_known(pb, 2.0)


# --- surrogate screening ---------------------------------------------------------------------------

class _LinearDecoder(torch.nn.Module):
    """A latent decoder that is linear in the latents: the surrogate's image model is then exact."""

    def __init__(self, k=32, d=3):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.codebook = torch.nn.Parameter(torch.randn(k, d, generator=g))
        self.up = torch.nn.ConvTranspose2d(d, 1, 4, stride=4, bias=False)
        torch.nn.init.normal_(self.up.weight, generator=g)

    def lookup(self, grids):
        return self.codebook[grids].permute(0, 3, 1, 2)

    def nearest(self, z):
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return torch.cdist(flat, self.codebook).argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def decode(self, z):
        return self.up(z)


def _subproblem(model, m, seed=0, n=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        own = model.nearest(torch.randn(n, model.codebook.shape[1], 7, 7))
        tgt = model.decode(model.lookup(model.nearest(torch.randn(n, model.codebook.shape[1], 7, 7))))
    loss = search.mse_to(tgt + 0.05 * torch.randn_like(tgt))
    pos = search.free_positions(n, 7, 7, m, seed=seed)
    return loss, own, pos, search.free_mask(pos, 7, 7), search.enumerate_subproblem(model, loss, own, pos)


def test_surrogate_is_exact_when_the_decoder_is_linear():
    """Its image model then predicts every assignment exactly: the first screened batch holds the optimum,
    far inside a budget that decodes 40 of the 1,024 assignments."""
    model = _LinearDecoder()
    loss, own, pos, mask, sub = _subproblem(model, m=2)
    start = own.clone()
    start[mask] = (start[mask] + 7) % 32  # start away from the base grid at the free positions
    tr = search.surrogate_screen(model, model.lookup(start), loss, movable=mask, budget=40, probes=6, rounds=2,
                                 focus=0.0)
    assert search.optimum_rate(tr.best_losses, sub)["found"] == 1.0
    assert tr.decoder_equivalents == 3 * 40


def test_surrogate_keeps_frozen_codes_counts_its_budget_and_enumerates_when_it_can(tiny_vqvae):
    model = tiny_vqvae.eval()
    loss, own, pos, mask, sub = _subproblem(model, m=2)
    z = model.lookup(own).detach()
    tr = search.registry.run("surrogate", model, z, loss, budget=20, movable=mask, probes=3, rounds=2)
    assert tr.method == "surrogate" and tr.decoder_equivalents == 3 * 20
    for g, o, mk, l, c in zip(tr.best_indices, own, mask, tr.losses, tr.costs):
        assert torch.equal(g[~mk], o[~mk])
        assert bool((l[1:] < l[:-1]).all()) and float(c[-1]) <= 20  # improvements only, within the budget
    again = search.quantized_losses(model, loss, tr.best_indices)
    assert torch.allclose(again, tr.best_losses, rtol=1e-5)
    full = search.surrogate_screen(model, z, loss, movable=mask, budget=64)  # k**m = 64: every assignment
    assert search.optimum_rate(full.best_losses, sub)["found"] == 1.0
    assert full.stop_reason == ["stalled"] * 3 and full.decoder_equivalents == 3 * 64


def test_surrogate_refuses_what_it_cannot_do(tiny_vqvae):
    model = tiny_vqvae.eval()
    loss, own, pos, mask, sub = _subproblem(model, m=2)
    z = model.lookup(own).detach()
    with pytest.raises(ValueError, match="needs movable="):
        search.surrogate_screen(model, z, loss)
    with pytest.raises(ValueError, match=r"k\*\*m = 8\*\*7 .* max_grids"):
        search.surrogate_screen(model, z, loss, movable=search.free_mask(search.free_positions(3, 7, 7, 7), 7, 7))
    with pytest.raises(ValueError, match="probes"):
        search.surrogate_screen(model, z, loss, movable=mask, probes=0)


def test_spread_codes_start_far_and_skip_the_first():
    cb = torch.tensor([[0.0], [1.0], [10.0], [-5.0], [4.0]])
    assert search.spread_codes(cb, 3, first=0).tolist() == [2, 3, 4]
    assert len(search.spread_codes(cb, 10, first=1)) == 4
