"""The first-order table and the samplers on it: shapes, exactness, MH, determinism, batching, costs."""

import math

import pytest
import torch

from vqtto import search


@pytest.fixture
def setup(tiny_vqvae):
    torch.manual_seed(1)
    model = tiny_vqvae.eval()
    src, tgt = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        z = model.encode(src)
    return model, z, tgt


SAMPLERS = {
    "gwg": lambda m, z, l, **kw: search.gibbs_with_gradients(m, z, l, **kw),
    "dmala": lambda m, z, l, **kw: search.discrete_langevin(m, z, l, **kw),
    "dula-codebook": lambda m, z, l, **kw: search.discrete_langevin(m, z, l, mh=False, dist="codebook", **kw),
    "pas-sa": lambda m, z, l, **kw: search.path_annealing(m, z, l, **kw),
    "screened-sa": lambda m, z, l, **kw: search.screened_annealing(m, z, l, m=4, **kw),
}


def test_table_shape_and_zero_at_current_code(setup):
    model, z, tgt = setup
    idx = model.nearest(z)
    grads = torch.randn(z.shape)
    d = search.first_order_table(model.codebook, grads, idx)
    assert d.shape == (3, idx.shape[1] * idx.shape[2], model.codebook.shape[0])
    assert torch.all(d.gather(2, idx.flatten(1)[..., None]) == 0)


def test_table_is_the_linearised_change_of_the_loss(setup):
    """D[p, j] equals the directional derivative of L along c_j - c_cur at p (autograd vs finite difference)."""
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    idx = model.nearest(z)
    ev = search.Evaluator(model, loss, 3)
    rows = torch.arange(3)
    _, grads = ev.loss_and_grad(idx, rows)
    d = search.first_order_table(model.codebook, grads, idx)
    codes = model.lookup(idx).double()
    model = model.double()
    p, j = 5, 3
    h, w = idx.shape[1:]
    direction = torch.zeros_like(codes)
    cur = idx.flatten(1)[:, p]
    direction[:, :, p // w, p % w] = model.codebook[j].double()[None] - model.codebook[cur].double()
    eps = 1e-6
    with torch.no_grad():
        fd = (loss(model.decode(codes + eps * direction)) - loss(model.decode(codes - eps * direction))) / (2 * eps)
    model.float()
    assert torch.allclose(d[:, p, j].double(), fd, rtol=1e-3, atol=1e-9)


def test_greedy_uses_the_shared_table_without_changing_numbers(setup):
    """The greedy search's inline table, as it was computed before first_order_table existed."""
    model, z, tgt = setup
    idx = model.nearest(z)
    grads = torch.randn(z.shape)
    n, dim, h, w = grads.shape
    g = grads.permute(0, 2, 3, 1).reshape(n, h * w, dim)
    flat = idx.reshape(n, h * w)
    old = g @ model.codebook.detach().t() - (g * model.codebook.detach()[flat]).sum(-1, keepdim=True)
    old.scatter_(2, flat[..., None], math.inf)
    new = search.first_order_table(model.codebook, grads, idx).scatter_(2, flat[..., None], math.inf)
    assert torch.equal(old, new)


def test_linearisation_check_shapes(setup):
    model, z, tgt = setup
    out = search.linearisation_check(model, search.mse_to(tgt), model.nearest(z), n_moves=7)
    assert out["predicted"].shape == out["true"].shape == out["rank"].shape == (3, 7)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_improves_and_is_deterministic(setup, name):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    a = SAMPLERS[name](model, z, loss, budget=60, chains=2, seed=3)
    b = SAMPLERS[name](model, z, loss, budget=60, chains=2, seed=3)
    assert a.method == name and len(a) == 3
    start = search.quantized_losses(model, loss, model.nearest(z))
    assert bool((a.best_losses <= start + 1e-7).all())
    for ga, gb in zip(a.grids, b.grids):
        assert torch.equal(ga, gb)
    assert all(bool((c[1:] >= c[:-1]).all()) for c in a.costs)      # found in order of cost
    assert all(bool((l[1:] < l[:-1]).all()) for l in a.losses)      # a best-so-far path
    assert a.decoder_equivalents <= 60 * 3 + 1e-9


def test_batched_equals_one_pair_at_a_time(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    seeds = [11, 12, 13]
    batched = search.gibbs_with_gradients(model, z, loss, budget=45, chains=2, seed=seeds)
    for i in range(3):
        one = search.gibbs_with_gradients(model, z[i:i + 1], search.mse_to(tgt[i:i + 1]), budget=45, chains=2,
                                          seed=[seeds[i]])
        assert torch.equal(one.grids[0], batched.grids[i])
        assert torch.allclose(one.losses[0], batched.losses[i], rtol=1e-5)


def test_cost_accounting_is_exact(setup):
    """GWG, budget 40 over 2 chains (20 each): the start costs 3 once per pair, 1.5 charged to each
    chain, which then takes 6 steps of 3 each: 3 + 12 * 3 = 39 per pair, within one step of 40."""
    model, z, tgt = setup
    tr = search.gibbs_with_gradients(model, z, search.mse_to(tgt), budget=40, chains=2)
    assert tr.decoded_images == 3 * 13
    assert tr.decoder_equivalents == pytest.approx(3 * 39)
    assert all(float(c.max()) <= 39 for c in tr.costs)


def test_screened_annealing_spends_its_budget_to_within_one_per_chain(setup):
    """m=4 over 2 chains, budget 50: a step costs 4 + 2 (the gradient's backward), the last one shrinks
    to fit; the old steps of m + 3 left up to m + 2 per chain unspent."""
    model, z, tgt = setup
    tr = search.screened_annealing(model, z, search.mse_to(tgt), m=4, budget=50, chains=2)
    per_pair = tr.decoder_equivalents / 3
    assert 48 < per_pair <= 50 + 1e-9
    assert all(float(c.max()) <= 50 + 1e-9 for c in tr.costs)


class _Linear:
    """A latent decoder for exact tests: 1 x 2 grids, k=3 codes in D=2, image = a fixed linear map of the codes."""

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.codebook = torch.tensor([[0.0, 0.0], [1.0, 0.2], [-0.4, 0.9]])
        self.w = torch.randn(4, 4, generator=gen)

    def lookup(self, idx):
        return self.codebook[idx].permute(0, 3, 1, 2)

    def nearest(self, z):
        d = (z.permute(0, 2, 3, 1)[..., None, :] - self.codebook).pow(2).sum(-1)
        return d.argmin(-1)

    def decode(self, codes):
        return (codes.flatten(1) @ self.w).view(-1, 1, 2, 2)


def _chain_states(cls, model, loss, steps, **kw):
    """Run one chain of sampler class ``cls`` for ``steps`` steps and return its grid after every step."""
    from vqtto.search import samplers

    z = torch.zeros(1, 2, 1, 2)
    seen = []
    orig = cls.step

    def step(self, rows):
        orig(self, rows)
        seen.append(tuple(self.idx[0].flatten().tolist()))

    search_ = cls(model, z, loss, chains=1, budget=3 * steps + 3, seed=0, start=None, movable=None, **kw)
    search_.step = step.__get__(search_)
    search_.run("gwg", {})
    return seen, search_


@pytest.mark.parametrize("name", ["gwg", "dmala"])
def test_sampler_visits_grids_as_often_as_the_enumerated_distribution(name):
    """2 positions x k=3: the fraction of steps a chain spends on each of the 9 grids matches exp(-L / T) / Z."""
    from vqtto.search import samplers

    model = _Linear()
    target = torch.tensor([[[[0.3, -0.8], [1.1, 0.2]]]])
    loss = search.mse_to(target)
    grids = torch.tensor([[[a, b]] for a in range(3) for b in range(3)])
    with torch.no_grad():
        losses = loss.rows(torch.zeros(9, dtype=torch.long))(model.decode(model.lookup(grids)))
    if name == "gwg":
        cls, kw = samplers._GibbsWithGradients, dict(temperature=0.0, anneal=False, floor=0.0)
    else:
        cls, kw = samplers._DiscreteLangevin, dict(temperature=0.0, alpha=1.0, mh=True, dist="onehot", anneal=False,
                                                   floor=0.0)
    start_loss = float(losses[0])  # the chain starts at nearest(0) = grid (0, 0)
    temp = 0.3 * float(losses.std()) / start_loss
    kw["temperature"] = temp
    seen, _ = _chain_states(cls, model, loss, 1500, **kw)
    p = torch.softmax(-losses / (temp * start_loss), 0)
    counts = torch.zeros(9)
    for a, b in seen[100:]:
        counts[a * 3 + b] += 1
    freq = counts / counts.sum()
    tv = float((freq - p).abs().sum()) / 2
    assert tv < 0.08, (freq, p)


def test_a_rejected_proposal_that_beats_the_best_is_kept(setup):
    """A step that proposes a better grid and always rejects it: the trace still reports that grid."""
    from vqtto.search.chains import ChainSearch

    model, z, tgt = setup
    loss = search.mse_to(tgt)
    polished = search.screened_polish(model, z, loss, m=8, max_rounds=5).best_indices
    better = search.quantized_losses(model, loss, polished)

    class Reject(ChainSearch):
        def step(self, rows):
            value, grad = self.ev.loss_and_grad(polished[self.pair_of[rows]], rows)
            self.accept(rows, polished[self.pair_of[rows]], value, grad, torch.full_like(value, -math.inf))

    tr = Reject(model, z, loss, chains=1, budget=9, seed=0, start=None, movable=None).run("gwg", {})
    assert tr.params["acceptance_rate"] == 0
    assert torch.allclose(tr.best_losses, better, rtol=1e-5)
    assert all(torch.equal(g[-1], p) for g, p in zip(tr.grids, polished))


def test_annealed_gibbs_keeps_proposing_new_moves_as_t_falls():
    """2 positions x k=3: near the end of an annealed run the chain, stuck at its optimum, does not propose the
    same grid step after step (with the proposal annealed to T -> 0 it did: 33 repeats out of 33)."""
    model = _Linear()
    target = torch.tensor([[[[0.3, -0.8], [1.1, 0.2]]]])
    proposed = []
    orig = search.Evaluator.loss_and_grad

    def spy(self, idx, rows):
        proposed.append(idx.clone())
        return orig(self, idx, rows)

    search.Evaluator.loss_and_grad = spy
    try:
        search.gibbs_with_gradients(model, torch.zeros(1, 2, 1, 2), search.mse_to(target), budget=300, chains=1,
                                    anneal=True)
    finally:
        search.Evaluator.loss_and_grad = orig
    tail = proposed[len(proposed) * 2 // 3:]
    repeats = sum(torch.equal(a, b) for a, b in zip(tail[1:], tail[:-1]))
    assert repeats < 0.8 * (len(tail) - 1), repeats
    assert len({t.numpy().tobytes() for t in tail}) >= 2


def test_dmala_distance_term_scales_with_the_temperature(setup):
    """At a temperature far below the start one, a position jumps only where the table beats the
    distance energy (D / 2 + T0 / alpha < 0); before the fix every position with a negative entry jumped."""
    from vqtto.search import samplers

    model, z, tgt = setup
    loss = search.mse_to(tgt)
    s = samplers._DiscreteLangevin(model, z, loss, chains=1, budget=30, seed=0, start=None, movable=None,
                                   temperature=0.02, alpha=1.0, mh=True, dist="onehot", anneal=True, floor=0.0)
    rows = torch.arange(3)
    s.value, s.grad = s.ev.loss_and_grad(s.idx, rows)
    s.scale = s.value.clamp_min(1e-12)
    cold = 1e-4 * 0.02 * s.scale
    lq = s.log_proposal(rows, s.idx, s.grad, cold)
    stay = lq.gather(2, s.idx.flatten(1)[..., None])[..., 0].exp()
    d = search.first_order_table(model.codebook, s.grad, s.idx).scatter_(2, s.idx.flatten(1)[..., None], math.inf)
    should_move = (d.min(2).values / 2 + 0.02 * s.scale[:, None] < 0).sum(1).float()
    assert torch.allclose((1 - stay).sum(1), should_move, atol=0.5)
    assert bool((should_move < (d.min(2).values < 0).sum(1)).any())   # the old rule moved more


def test_alg2_costs_three_per_distinct_grid(setup):
    model, z, tgt = setup
    tr = search.straight_through(model, z, search.mse_to(tgt), max_unique=20)
    assert tr.decoder_equivalents == 3 * tr.decoded_images == 3 * int(tr.n_unique.sum())
    assert all(float(c[0]) == 0 for c in tr.costs)
    assert all(torch.equal(c[1:], 3.0 * torch.arange(1, len(c), dtype=torch.float64)) for c in tr.costs)


def test_mh_accepts_everything_at_infinite_temperature(setup):
    """With T huge the target is flat and the proposals symmetric enough: every move is accepted (DULA always)."""
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    hot = search.discrete_langevin(model, z, loss, temperature=1e9, alpha=1e9, budget=30, chains=1)
    assert hot.params["acceptance_rate"] == pytest.approx(1.0, abs=1e-6)
    dula = search.discrete_langevin(model, z, loss, mh=False, budget=30, chains=1)
    assert dula.params["acceptance_rate"] == 1.0


def test_movable_mask_freezes_positions(setup):
    model, z, tgt = setup
    movable = torch.zeros(7, 7, dtype=torch.bool)
    movable[2, 3] = movable[4, 4] = True
    start = model.nearest(z)
    for name in sorted(SAMPLERS):
        tr = SAMPLERS[name](model, z, search.mse_to(tgt), budget=45, chains=2, movable=movable)
        for g, s in zip(tr.grids, start):
            assert torch.equal(g[:, ~movable], s[~movable].expand(g.shape[0], -1))


def test_polish_certifies_among_screened_moves(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    tr = search.screened_polish(model, z, loss, m=6, max_rounds=50)
    assert all(bool((l[1:] < l[:-1]).all()) for l in tr.losses)
    for i, reason in enumerate(tr.stop_reason):
        if reason == "stalled":
            ev = search.Evaluator(model, loss, 3)
            g = tr.final_indices[i:i + 1]
            rows = torch.tensor([i])
            value, grad = ev.loss_and_grad(g, rows)
            d = search.first_order_table(model.codebook, grad, g)
            d.scatter_(2, g.flatten(1)[..., None], math.inf)
            cands = search.apply_moves(g, search.best_per_position(d, 6), model.codebook.shape[0])
            assert bool((ev.losses(cands, rows) >= value[:, None]).all())


def test_polish_screens_distinct_positions():
    """One position with the most negative entries takes every slot of the global screen, none of the per-position one."""
    table = torch.zeros(1, 5, 4)
    table[0, 2] = torch.tensor([-9.0, -8.0, -7.0, 0.0])
    table[0, 0, 1], table[0, 4, 3] = -1.0, -2.0
    assert set((search.best_moves(table, 3) // 4).tolist()[0]) == {2}
    moves = search.best_per_position(table, 3)[0]
    assert (moves // 4).tolist() == [2, 4, 0] and (moves % 4).tolist() == [0, 3, 1]


def test_restarts_spend_at_most_the_budget(setup):
    model, z, tgt = setup
    tr = search.restarted_straight_through(model, z, search.mse_to(tgt), budget=60, seed=2)
    assert tr.method == "alg2-restarts" and tr.decoder_equivalents <= 3 * 60
    assert all(float(c.max()) <= 60 for c in tr.costs)


@pytest.mark.parametrize("call, match", [
    (lambda m, z, l: search.gibbs_with_gradients(m, z, l, temperature=-1.0), "temperature"),
    (lambda m, z, l: search.gibbs_with_gradients(m, z, l, budget=-5), "budget"),
    (lambda m, z, l: search.discrete_langevin(m, z, l, dist="hamming"), r"dist must be one of \['onehot', 'codebook'\]"),
    (lambda m, z, l: search.path_annealing(m, z, l, chains=0), "chains"),
    (lambda m, z, l: search.path_annealing(m, z, l, path=20, max_path=4), "max_path"),
    (lambda m, z, l: search.screened_annealing(m, z, l, m=0), "m must"),
    (lambda m, z, l: search.restarted_straight_through(m, z, l, noise=-0.1), "noise"),
    (lambda m, z, l: search.gibbs_with_gradients(m, z, lambda x: x.flatten(1).mean(1)), "PairLoss"),
])
def test_bad_input_is_refused_with_the_argument_named(setup, call, match):
    model, z, tgt = setup
    with pytest.raises(ValueError, match=match):
        call(model, z, search.mse_to(tgt))


def test_straight_through_remedies(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    plain = search.straight_through(model, z, loss, max_unique=30)
    tabu = search.straight_through(model, z, loss, max_unique=30, tabu=True)
    adaptive = search.straight_through(model, z, loss, max_unique=30, adaptive=True, max_rounds=60)
    assert tabu.method == "alg2-tabu" and adaptive.method == "alg2-adaptive"
    assert "loop" not in tabu.stop_reason and "loop" not in adaptive.stop_reason
    for g in tabu.grids:   # never the same grid twice
        assert len({bytes(x.numpy().tobytes()) for x in g}) == g.shape[0]
    assert bool((tabu.n_unique >= plain.n_unique).all())
    again = search.straight_through(model, z, loss, max_unique=30, adaptive=False, tabu=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.grids, again.grids))


def test_relaxed_schedules(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    kw = dict(max_steps=15, tau_end=0.1, noise=1.0, noise_until=2 / 3, pull=0.1, seed=4)
    a = search.relaxed_straight_through(model, z, loss, **kw)
    b = search.relaxed_straight_through(model, z, loss, **kw)
    assert a.method == "relaxed-annealed" and all(torch.equal(x, y) for x, y in zip(a.grids, b.grids))
    assert bool((a.best_losses <= torch.stack([l[0] for l in a.losses])).all())
    assert search.relaxed_straight_through(model, z, loss, max_steps=5).method == "relaxed"
    with pytest.raises(ValueError, match="noise_until must be in"):
        search.relaxed_straight_through(model, z, loss, noise_until=1.5)
    with pytest.raises(ValueError, match="noise"):
        search.relaxed_straight_through(model, z, loss, noise=-1.0)
