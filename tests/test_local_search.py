"""Exact local search: exact budgets, improving records, a true 1-move certificate, determinism, batching."""

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


def test_spends_the_budget_exactly_and_only_improves(setup):
    model, z, tgt = setup
    tr = search.exact_local_search(model, z, search.mse_to(tgt), budget=123, batch=16)
    assert tr.method == "local" and tr.stop_reason == ["budget"] * 3
    spent = torch.tensor(tr.params["spent"])
    assert bool((spent <= 123).all()) and bool((spent > 122).all())   # within one equivalent
    assert tr.decoder_equivalents == pytest.approx(float(spent.sum()))
    for l, c in zip(tr.losses, tr.costs):
        assert bool((l[1:] < l[:-1]).all()) and bool((c[1:] >= c[:-1]).all())
        assert float(c.max()) <= 123
    again = search.quantized_losses(model, search.mse_to(tgt), tr.best_indices)
    assert torch.allclose(again, tr.best_losses, rtol=1e-5)


def test_stalled_pairs_are_true_one_move_optima(setup):
    """With budget to spare every pair tries every single move of its final grid: none improves (brute force)."""
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    tr = search.exact_local_search(model, z, loss, budget=5000, batch=64)
    assert tr.stop_reason == ["stalled"] * 3
    k = model.codebook.shape[0]
    g = tr.final_indices
    p = g.shape[1] * g.shape[2]
    moves = torch.arange(p * k).expand(3, -1)
    ev = search.Evaluator(model, loss, 3)
    neighbours = ev.losses(search.apply_moves(g, moves, k), torch.arange(3))
    assert bool((neighbours >= tr.final_losses[:, None] - 1e-7).all())


def test_deterministic_and_batched_equals_alone(setup):
    model, z, tgt = setup
    a = search.exact_local_search(model, z, search.mse_to(tgt), budget=80, batch=8, seed=[4, 5, 6])
    b = search.exact_local_search(model, z, search.mse_to(tgt), budget=80, batch=8, seed=[4, 5, 6])
    assert all(torch.equal(x, y) for x, y in zip(a.grids, b.grids))
    one = search.exact_local_search(model, z[1:2], search.mse_to(tgt[1:2]), budget=80, batch=8, seed=[5])
    assert torch.equal(one.grids[0], a.grids[1])



def test_a_pair_at_the_end_of_its_budget_searches_as_it_would_alone(setup):
    """Pairs with different budgets left in one round: each one's moves depend on its own budget only."""
    model, z, tgt = setup
    budgets = torch.tensor([37.0, 200.0, 61.0])
    a = search.exact_local_search(model, z, search.mse_to(tgt), budget=budgets, batch=16, seed=[4, 5, 6])
    for i in range(3):
        one = search.exact_local_search(model, z[i:i + 1], search.mse_to(tgt[i:i + 1]), budget=float(budgets[i]),
                                        batch=16, seed=[4 + i])
        assert torch.equal(one.grids[0], a.grids[i]), f"pair {i}"

def test_movable_and_radius_are_kept(setup):
    model, z, tgt = setup
    movable = torch.zeros(7, 7, dtype=torch.bool)
    movable[1:4, 2:5] = True
    start = model.nearest(z)
    tr = search.exact_local_search(model, z, search.mse_to(tgt), budget=200, batch=16, movable=movable, radius=2)
    for g, s in zip(tr.grids, start):
        assert torch.equal(g[:, ~movable], s[~movable].expand(g.shape[0], -1))
        assert int((g != s).flatten(1).sum(1).max()) <= 2


def test_relaxed_then_local_is_one_trace_within_the_budget(setup):
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    tr = search.relaxed_then_local(model, z, loss, budget=150, share=0.4)
    assert tr.method == "relaxed-local"
    assert tr.decoder_equivalents <= 3 * 150 and all(float(c.max()) <= 150 for c in tr.costs)
    relaxed = search.relaxed_straight_through(model, z, loss, max_steps=tr.params["relaxed_steps"])
    assert bool((tr.best_losses <= relaxed.best_losses + 1e-7).all())


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=3), "budget"), (dict(batch=0), "batch"), (dict(per_position=0), "per_position"),
    (dict(radius=0), "radius"), (dict(budget=torch.tensor([10.0, 2.0, 10.0])), "budget"),
])
def test_bad_input_is_refused(setup, kwargs, match):
    model, z, tgt = setup
    with pytest.raises(ValueError, match=match):
        search.exact_local_search(model, z, search.mse_to(tgt), **kwargs)


def test_relaxed_then_local_refuses_a_bad_share(setup):
    model, z, tgt = setup
    with pytest.raises(ValueError, match="share"):
        search.relaxed_then_local(model, z, search.mse_to(tgt), share=1.0)


def test_exact_coordinate_matches_brute_force_on_two_free_positions(setup):
    """m=2 free positions, k=8: with top=k the product is the whole sub-problem (the enumerated optimum);
    with top=3 it is never better than the optimum and costs 1 + 2 * 7 + 9 decodes per pair."""
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    base = model.nearest(z)
    positions = search.free_positions(3, 7, 7, 2, seed=1)
    exact = search.enumerate_subproblem(model, loss, base, positions)
    mask = search.free_mask(positions, 7, 7)
    full = search.exact_coordinate(model, loss, base, top=8, movable=mask)
    assert torch.allclose(full.best_losses, exact.best_losses, rtol=1e-5)
    few = search.exact_coordinate(model, loss, base, top=3, movable=mask)
    assert bool((few.best_losses >= exact.best_losses - 1e-7).all())
    assert bool((few.best_losses <= search.quantized_losses(model, loss, base) + 1e-7).all())
    assert few.equivalents.tolist() == [24.0] * 3
    with pytest.raises(ValueError, match="top"):
        search.exact_coordinate(model, loss, base, top=9, movable=mask)


def test_candidates_decoded_in_blocks_score_as_in_one_call(setup):
    """The evaluator decodes candidates a block at a time (256 per call on a CPU): any block size gives
    the same losses and the same charge, for a loss that takes rows and for a plain callable."""
    model, z, tgt = setup
    cands = torch.randint(model.codebook.shape[0], (3, 10, *z.shape[2:]), generator=torch.Generator().manual_seed(2))
    rows = torch.arange(3)
    for loss in (search.mse_to(tgt), lambda x: (x - tgt).pow(2).flatten(1).mean(1)):
        whole = search.Evaluator(model, loss, 3, chunk=4096)
        blocks = search.Evaluator(model, loss, 3, chunk=7)  # blocks that split the candidates of a pair
        assert search.Evaluator(model, loss, 3).chunk == 256
        want, got = whole.losses(cands, rows), blocks.losses(cands, rows)
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
        assert blocks.equivalents == whole.equivalents == 30 and torch.equal(blocks.spent, whole.spent)


def test_relaxed_then_local_runs_its_relaxed_phase_at_the_tuned_settings_unless_told(setup):
    """The relaxed phase starts from the validation-tuned initial logits; a caller's keyword wins."""
    model, z, tgt = setup
    loss = search.mse_to(tgt)
    tuned = search.relaxed_then_local(model, z, loss, budget=60)
    assert tuned.params["relaxed"]["init_scale"] == search.local.RELAXED_PHASE["init_scale"] != 3.0
    told = search.relaxed_then_local(model, z, loss, budget=60, init_scale=3.0)
    assert told.params["relaxed"]["init_scale"] == 3.0
    assert not all(torch.equal(a[-1], b[-1]) for a, b in zip(tuned.grids, told.grids))


def test_the_registry_hands_relaxed_local_its_relaxed_phase_settings_and_refuses_bad_ones_before_work(setup):
    """``lr``, ``tau``, ``init_scale`` and ``lam`` reach the relaxed phase through the registry (so through
    ``tasks.solve`` and ``vqtto search``), with the tuned defaults listed; a bad value is refused without a model."""
    model, z, tgt = setup
    listed = search.registry.settings_of("relaxed-local")
    assert listed["init_scale"] == search.local.RELAXED_PHASE["init_scale"] and listed["tau"] == 1.0
    tr = search.registry.run("relaxed-local", model, z, search.mse_to(tgt), budget=60, init_scale=2.0, tau=0.5)
    assert tr.params["relaxed"]["init_scale"] == 2.0 and tr.params["relaxed"]["tau"] == 0.5
    for bad, name in (({"init_scale": -1.0}, "init_scale"), ({"tau": 0.0}, "tau"), ({"lam": 0}, "lam")):
        with pytest.raises(ValueError, match=name):
            search.registry.check_settings("relaxed-local", bad)
