"""Constrained tasks, their anchors, the prior in the search's energy, the prior-only baseline,
the Hamming ball and the guided search: exactness, bad input, batching."""

import math

import pytest
import torch

from vqtto import search, tasks
from vqtto.tasks import baselines as anchors
from vqtto.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqtto.tasks.guided import guided_search


@pytest.fixture
def world(tiny_vqvae):
    torch.manual_seed(3)
    model = tiny_vqvae.eval()
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        grid = tuple(model.nearest(model.encode(images[:1])).shape[1:])
    prior = GatedPixelCNN(PixelCNNConfig(k=8, height=grid[0], width=grid[1], channels=8, n_layers=1)).eval()
    return model, prior, images, grid


# --- bad input ----------------------------------------------------------------------------------

def test_masks_that_hide_everything_or_nothing_are_refused(world):
    model, _, images, _ = world
    with pytest.raises(ValueError, match="hides every pixel"):
        tasks.inpainting(images, torch.ones(28, 28, dtype=torch.bool), model)
    with pytest.raises(ValueError, match="hides no pixel"):
        tasks.inpainting(images, torch.zeros(28, 28, dtype=torch.bool), model)
    with pytest.raises(ValueError, match="mask must be one of"):
        tasks.inpainting(images, "left-half", model)
    with pytest.raises(ValueError, match="mask must be one of"):
        tasks.inpainting(images, torch.ones(7, 7, dtype=torch.bool), model)


@pytest.mark.parametrize("factor", [1, 3, 2.0, True])
def test_factors_that_do_not_divide_the_image_are_refused(world, factor):
    with pytest.raises(ValueError, match=r"factor must be an integer >= 2 .*one of \[2, 4, 7, 14, 28\]"):
        tasks.super_resolution(world[2], factor)


def test_editing_refuses_negative_radius_unknown_edit_and_missing_donors(world):
    model, _, images, _ = world
    grids = anchors.encoder_grids(model, images)
    with pytest.raises(ValueError, match="radius must be an integer >= 0"):
        tasks.editing(images, grids, "erase", -1)
    with pytest.raises(ValueError, match="edit must be one of"):
        tasks.editing(images, grids, "blur", 2)
    with pytest.raises(ValueError, match="needs donors"):
        tasks.editing(images, grids, "paste", 2)


def test_grid_prior_refuses_negative_weight_and_a_prior_of_another_k_or_grid(world):
    model, prior, _, grid = world
    with pytest.raises(ValueError, match="lambda"):
        search.GridPrior(prior, -0.1, 8, grid)
    with pytest.raises(ValueError, match="k=8 codes but the searched model has k=16"):
        search.GridPrior(prior, 0.1, 16, grid)
    with pytest.raises(ValueError, match="grids"):
        search.GridPrior(prior, 0.1, 8, (grid[0] + 1, grid[1]))
    conditional = GatedPixelCNN(PixelCNNConfig(k=8, height=grid[0], width=grid[1], channels=8, n_layers=1, n_classes=2))
    with pytest.raises(ValueError, match="class-conditional"):
        search.GridPrior(conditional, 0.1, 8, grid)


# --- the tasks ----------------------------------------------------------------------------------

def test_inpainting_loss_sees_only_visible_pixels_and_measure_only_hidden(world):
    model, _, images, _ = world
    task = tasks.inpainting(images, "bottom-half", model, fields=tasks.receptive_fields(model, (7, 7), draws=2))
    answer = images.clone()
    answer[..., 14:, :] = 1 - answer[..., 14:, :]  # wrong only where hidden
    assert torch.allclose(task.loss(answer), torch.zeros(3))
    m = tasks.measure(task, answer)
    expected = (answer - images)[..., 14:, :].pow(2).flatten(1).mean(1)
    assert torch.allclose(m["mse"], expected)
    assert torch.allclose(m["psnr"], 10 * torch.log10(1 / expected))
    assert bool((task.observed[..., 14:, :] == 0).all())


def test_touching_positions_follows_the_fields():
    fields = torch.zeros(4, 4, 4, dtype=torch.bool)
    for p in range(4):  # position p covers pixel row p
        fields[p, p] = True
    hidden = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    hidden[0, 0, 3, 0] = True
    hidden[1, 0, 0:2, 2] = True
    got = tasks.touching_positions(fields, hidden, (2, 2))
    assert got.flatten(1).tolist() == [[False, False, False, True], [True, True, False, False]]


def test_receptive_fields_grow_as_the_share_falls(world):
    model, _, _, grid = world
    strict = tasks.receptive_fields(model, grid, share=0.0, draws=4)
    loose = tasks.receptive_fields(model, grid, share=0.5, draws=4)
    assert strict.shape == (grid[0] * grid[1], 28, 28)
    assert bool((loose <= strict).all()) and int(loose.sum()) < int(strict.sum())
    assert bool(loose.flatten(1).any(1).all())  # every position draws some pixel
    with pytest.raises(ValueError, match="share"):
        tasks.receptive_fields(model, grid, share=1.0)


def test_super_resolution_residual_is_the_pooled_mse(world):
    task = tasks.super_resolution(world[2], 4)
    assert task.observed.shape == world[2].shape
    assert torch.allclose(task.residual(world[2]), torch.zeros(3), atol=1e-12)
    assert bool((task.residual(task.observed) > 0).all())


def test_editing_changes_one_square_per_image(world):
    model, _, images, _ = world
    donors = torch.rand_like(images)
    task = tasks.editing(images, anchors.encoder_grids(model, images), "paste", 3, donors=donors, size=5)
    changed = (task.truth != images).flatten(1).sum(1)
    assert bool((changed > 0).all()) and bool((changed <= 25).all())
    assert task.radius == 3 and task.start_grids.shape[0] == 3


# --- anchors ------------------------------------------------------------------------------------

def test_nearest_training_finds_the_image_itself_and_matches_brute_force(world):
    model, _, images, _ = world
    train = torch.cat([torch.rand(40, 1, 28, 28), images[1:2]])
    task = tasks.inpainting(images, "centre-square", model, fields=tasks.receptive_fields(model, (7, 7), draws=2))
    near = anchors.nearest_training(task, train, n=3, chunk=16)  # chunks: the merge across chunks is tested
    assert int(near[1, 0]) == 40
    vis = (~task.measured).float()
    brute = ((train[None] - images[:, None]).pow(2) * vis[:, None]).flatten(2).sum(2) / vis.flatten(1).sum(1, keepdim=True)
    assert torch.equal(near, brute.topk(3, 1, largest=False).indices)
    nn1, mean = anchors.neighbour_answers(train, near)
    assert torch.allclose(mean[0], train[near[0]].mean(0))
    with pytest.raises(ValueError, match="neighbours"):
        anchors.nearest_training(task, train, n=0)


# --- the prior in the energy, the ball, per-chain starts -----------------------------------------

def test_penalty_table_is_exact_at_the_last_position(world):
    """Changing the last position in raster order changes no other conditional: the table is exact there."""
    model, prior, images, grid = world
    gp = search.GridPrior(prior, 0.5, 8, grid)
    idx = anchors.encoder_grids(model, images)
    table = gp.penalty_table(idx)
    last = grid[0] * grid[1] - 1
    for j in range(8):
        moved = idx.clone()
        moved.view(3, -1)[:, last] = j
        assert torch.allclose(gp.penalty(moved) - gp.penalty(idx), table[:, last, j], atol=1e-5)


def test_penalty_from_a_base_is_the_penalty_and_local_search_values_are_energies(world):
    """Moves scored from their base grid's cache cost what a full pass says, and the local search with a
    prior (which scores its candidates that way) reports each best grid's exact energy."""
    model, prior, images, grid = world
    gp = search.GridPrior(prior, 0.5, 8, grid)
    idx = anchors.encoder_grids(model, images)
    gen = torch.Generator().manual_seed(3)
    cands = idx[:, None].repeat(1, 6, 1, 1)
    flat = cands.view(3, 6, -1)
    flat.scatter_(2, torch.randint(grid[0] * grid[1], (3, 6, 1), generator=gen), torch.randint(8, (3, 6, 1), generator=gen))
    assert torch.allclose(gp.penalty_from(cands, idx), gp.penalty(cands.flatten(0, 1)), atol=1e-5)
    assert torch.equal(search.GridPrior(prior, 0.0, 8, grid).penalty_from(cands, idx), torch.zeros(18))
    loss = search.mse_to(torch.rand_like(images))
    tr = search.exact_local_search(model, model.encode(images).detach(), loss, budget=120, batch=8, prior=gp)
    with torch.no_grad():
        energy = loss(model.decode(model.lookup(tr.best_indices))) + gp.penalty(tr.best_indices)
    assert torch.allclose(tr.best_losses, energy, atol=1e-5)


def test_the_prior_term_makes_one_pass_per_grid_and_says_what_separate_passes_say(world, monkeypatch):
    """A grid's energy, first-order table and candidates' shared rows come from one kept PixelCNN pass,
    with the numbers of separate passes; a batch larger than the memo is scored by a pass of its own."""
    from vqtto.search import energy as energy_mod

    _, prior, _, grid = world
    idx = torch.randint(8, (3, *grid), generator=torch.Generator().manual_seed(5))
    idx[:, 0, 0] = torch.arange(3)            # three different grids
    table, cache = prior.table_and_cache(idx)
    assert torch.allclose(table, prior.log_probs_all(idx).flatten(2).transpose(1, 2), atol=1e-5)
    assert torch.allclose(cache.row_lp, prior.row_cache(idx).row_lp, atol=1e-5)
    passes = []
    real = prior.table_and_cache
    monkeypatch.setattr(prior, "table_and_cache", lambda base: passes.append(base.shape[0]) or real(base))
    gp = search.GridPrior(prior, 0.5, 8, grid)
    both = torch.cat([idx, idx[:1]])          # a grid twice in one batch is passed once
    expect = 0.5 * -prior.log_prob(both) / (grid[0] * grid[1])
    assert torch.allclose(gp.penalty(both), expect, atol=1e-6)
    cands = idx[:, None].repeat(1, 2, 1, 1)
    cands[:, 1, -1, -1] = (cands[:, 1, -1, -1] + 1) % 8
    assert torch.allclose(gp.penalty_from(cands, idx), gp.penalty(cands.flatten(0, 1)), atol=1e-5)
    first = gp.penalty_table(idx)
    assert passes == [3, 3]                   # the bases once, the candidates' grids not yet seen once
    monkeypatch.setattr(energy_mod, "MEMO_GRIDS", 2)
    fresh = search.GridPrior(prior, 0.5, 8, grid)
    assert torch.allclose(fresh.penalty_table(idx), first, atol=1e-6)
    assert torch.allclose(fresh.penalty(idx), gp.penalty(idx), atol=1e-6)
    assert passes == [3, 3] and not fresh._memo   # over the memo's size: its own pass, nothing kept


def test_sampler_values_are_energies_and_chains_stay_in_the_ball(world):
    model, prior, images, grid = world
    tgt = torch.rand_like(images)
    loss = search.mse_to(tgt)
    z = model.encode(images).detach()
    gp = search.GridPrior(prior, 0.2, 8, grid)
    tr = search.screened_annealing(model, z, loss, m=4, chains=2, budget=80, prior=gp, radius=2)
    best = tr.best_indices
    with torch.no_grad():
        energy = loss(model.decode(model.lookup(best))) + gp.penalty(best)
    assert torch.allclose(tr.best_losses, energy, atol=1e-5)
    start = model.nearest(z)
    assert int((tr.chain_indices != start[:, None]).flatten(2).sum(2).max()) <= 2
    tr = search.gibbs_with_gradients(model, z, loss, chains=2, budget=60, radius=1)
    assert int((tr.chain_indices != start[:, None]).flatten(2).sum(2).max()) <= 1
    with pytest.raises(ValueError, match="radius"):
        search.gibbs_with_gradients(model, z, loss, budget=60, radius=0)


def test_chains_may_start_on_their_own_grids(world):
    model, _, images, grid = world
    z = model.encode(images).detach()
    starts = torch.randint(8, (3, 2) + grid)
    tr = search.gibbs_with_gradients(model, z, search.mse_to(images), chains=2, budget=3.0, start=starts)
    assert torch.equal(tr.chain_indices, starts)  # a budget of one evaluation: nothing moved
    with pytest.raises(ValueError, match="start must be"):
        search.gibbs_with_gradients(model, z, search.mse_to(images), chains=2, budget=3.0, start=starts[:, :1, :1])


# --- the prior alone and the guided search -------------------------------------------------------

def test_prior_resample_keeps_frozen_codes_and_draws_alike_batched_or_alone(world):
    model, prior, images, grid = world
    start = anchors.encoder_grids(model, images)
    movable = torch.zeros((3,) + grid, dtype=torch.bool)
    movable[:, -1] = True
    loss = search.mse_to(images)
    tr = search.prior_resample(model, prior, loss, start, movable=movable, samples=5, seed=[7, 8, 9])
    draws = tr.chain_indices
    assert draws.shape == (3, 5) + grid
    assert torch.equal(draws[:, :, :-1], start[:, None, :-1].expand(-1, 5, -1, -1))
    alone = search.prior_resample(model, prior, search.mse_to(images[1:2]), start[1:2], movable=movable[1:2],
                                  samples=5, seed=[8])
    assert torch.equal(alone.chain_indices[0], draws[1])
    assert tr.decoder_equivalents == 15
    with pytest.raises(ValueError, match="unconditional PixelCNN for k=8"):
        other = GatedPixelCNN(PixelCNNConfig(k=4, height=grid[0], width=grid[1], channels=8, n_layers=1))
        search.prior_resample(model, other, loss, start)


def test_guided_search_counts_draws_and_respects_the_mask(world):
    model, prior, images, _ = world
    task = tasks.inpainting(images, "bottom-half", model, fields=tasks.receptive_fields(model, (7, 7), share=0.5, draws=4))
    start = anchors.encoder_grids(model, task.observed)
    res = guided_search(model, prior, task, start, weight=0.1, samples=4, chains=2, budget=40)
    assert res.chains.shape[:2] == (3, 2) and res.draws.shape[:2] == (3, 4)
    frozen = ~task.movable
    assert torch.equal(res.grids[frozen], start[frozen])
    assert 4 < res.equivalents <= 4 + 40 + 1e-9
    with pytest.raises(ValueError, match="chains"):
        guided_search(model, prior, task, start, weight=0.1, samples=2, chains=3, budget=40)


def test_ball_argmax_is_the_best_grid_inside_the_ball():
    torch.manual_seed(0)
    logits, centre = torch.randn(5, 4, 3), torch.randint(3, (5, 4))
    got = search.ball_argmax(logits, centre, 2)
    grids = torch.cartesian_prod(*[torch.arange(3)] * 4)  # all 81 grids of 4 positions
    for i in range(5):
        inside = grids[(grids != centre[i]).sum(1) <= 2]
        score = logits[i].gather(1, inside.T).sum(0)
        assert torch.equal(got[i], inside[score.argmax()])
    assert torch.equal(search.ball_argmax(logits, centre, 4), logits.argmax(-1))


def test_relaxed_search_with_prior_mask_and_radius(world):
    model, prior, images, grid = world
    z = model.encode(images).detach()
    start = model.nearest(z)
    loss = search.mse_to(torch.rand_like(images))
    movable = torch.ones((3,) + grid, dtype=torch.bool)
    movable[:, 0] = False
    gp = search.GridPrior(prior, 0.3, 8, grid)
    tr = search.relaxed_straight_through(model, z, loss, max_steps=30, max_unique=30, prior=gp, movable=movable, radius=3)
    for i, g in enumerate(tr.grids):
        assert bool(((g != start[i][None]).flatten(1).sum(1) <= 3).all())  # every grid visited is inside the ball
        assert bool((g[:, 0] == start[i, 0]).all())  # the frozen row never moves
    best = tr.best_indices
    assert torch.equal(best[:, 0], start[:, 0])
    with torch.no_grad():
        energy = loss(model.decode(model.lookup(best))) + gp.penalty(best)
    assert torch.allclose(tr.best_losses, energy, atol=1e-5)
    assert tr.params["radius"] == 3 and tr.params["prior_weight"] == 0.3
