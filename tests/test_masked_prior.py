"""The masked-token prior: it learns, it completes only the movable positions and conditions on the
rest, it is reproducible per pair, its pseudo-likelihood and first-order table are what they claim,
the searches take it as their prior, and bad input is refused before any work."""

import math
from types import SimpleNamespace

import pytest
import torch

from vqtto.models import masked as mp
from vqtto import search
from vqtto.search.chains import pair_seeds


def _tiny(k=4, h=3, w=3, seed=0, **kw) -> mp.MaskedTokenPrior:
    torch.manual_seed(seed)
    return mp.MaskedTokenPrior(mp.MaskedPriorConfig(k=k, height=h, width=w, dim=16, layers=1, heads=2, ff_mult=2, **kw)).eval()


def _constant_grids(n: int, k: int = 4, seed: int = 0) -> torch.Tensor:
    """``(n, 3, 3)`` grids that repeat one code drawn uniformly from ``[0, k)``: a grid is known from any one position."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(k, (n, 1, 1), generator=gen).expand(n, 3, 3).clone()


@pytest.fixture(scope="module")
def trained():
    """A tiny prior trained on constant grids, with its curves."""
    model = _tiny(seed=1)
    train = SimpleNamespace(indices=_constant_grids(512, seed=0))
    val = SimpleNamespace(indices=_constant_grids(128, seed=1))
    cfg = mp.MaskedTrainConfig(epochs=15, batch_size=64, lr=1e-2, evals_per_epoch=1, val_limit=128)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to threads on a busy machine
    try:
        hist = mp.train_masked_prior(model, train, val, cfg, torch.device("cpu"), progress=False)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), hist


# --- learning -------------------------------------------------------------------------------------

def test_training_loss_falls_on_a_learnable_distribution(trained):
    _, hist = trained
    # hidden positions are known from any visible one; only the grids hidden whole (about 30% of the
    # draws at 9 positions) keep log 4 of doubt: about 0.6 nats per hidden position at the optimum
    assert hist.train_nats[-1] < hist.train_nats[0] - 0.4
    assert hist.val_nats[-1] < 0.6 * math.log(4) < hist.val_nats[0]
    assert len(hist.val_nats) == len(hist.step) == 15


def test_the_schedule_hides_between_one_and_all_positions():
    gen = torch.Generator().manual_seed(0)
    m = mp.random_masks(2000, 49, gen)
    counts = m.sum(1)
    assert int(counts.min()) >= 1 and int(counts.max()) == 49
    # E[cos(pi r / 2)] = 2 / pi of the positions hidden on average (ceil adds under one position)
    assert abs(float(counts.float().mean()) / 49 - 2 / math.pi) < 0.03
    assert torch.equal(mp.mask_schedule(torch.tensor([0.0, 1.0])).round(), torch.tensor([1.0, 0.0]))


# --- completion -------------------------------------------------------------------------------------

def test_completion_conditions_on_the_visible_codes(trained):
    model, _ = trained
    start = torch.tensor([0, 1, 2, 3]).view(4, 1, 1).expand(4, 3, 3).clone()
    movable = torch.ones(4, 3, 3, dtype=torch.bool)
    movable[:, 0, 0] = False  # one visible code decides the whole grid
    out = mp.complete(model, start, movable, samples=8, steps=3, temperature=0.3, seed=0)  # sharpened: no 1% slips
    assert out.shape == (4, 8, 3, 3)
    assert torch.equal(out, start[:, None].expand_as(out))


def test_completion_never_changes_frozen_positions_and_fills_every_movable_one():
    model = _tiny(k=6, h=4, w=5)
    gen = torch.Generator().manual_seed(0)
    start = torch.randint(6, (3, 4, 5), generator=gen)
    movable = torch.rand(3, 4, 5, generator=gen) < 0.6
    for steps in (1, 3, 10):
        out = mp.complete(model, start, movable, samples=5, steps=steps, temperature=2.0, seed=4)
        frozen = ~movable[:, None].expand_as(out)
        assert torch.equal(out[frozen], start[:, None].expand_as(out)[frozen])
        assert int(out.min()) >= 0 and int(out.max()) < 6
    assert bool((out != start[:, None]).any())  # the movable positions were actually drawn


def test_completion_is_reproducible_per_pair_whatever_the_batch():
    model = _tiny(k=8, h=3, w=4)
    gen = torch.Generator().manual_seed(2)
    start = torch.randint(8, (5, 3, 4), generator=gen)
    movable = torch.rand(5, 3, 4, generator=gen) < 0.7
    whole = mp.complete(model, start, movable, samples=6, steps=4, seed=7)
    seeds = pair_seeds(7, 5)
    for part in (slice(0, 2), slice(2, 5), slice(4, 5)):
        alone = mp.complete(model, start[part], movable[part], samples=6, steps=4, seed=seeds[part])
        assert torch.equal(alone, whole[part])
    other = mp.complete(model, start, movable, samples=6, steps=4, seed=8)
    assert not torch.equal(other, whole)


def _complete_from_whole_logits(model, start, movable, samples, steps, temperature, seed):
    """The completion as first written: every position's logits, then the hidden ones kept (a reference)."""
    from vqtto.search.chains import PairRandom, sample_categorical

    b, h, w = start.shape
    rand = PairRandom(pair_seeds(seed, b), samples, torch.device("cpu"))
    rows = torch.arange(b * samples)
    grids = start.repeat_interleave(samples, 0).flatten(1)
    hidden = movable.expand(b, h, w).repeat_interleave(samples, 0).flatten(1).clone()
    total = hidden.sum(1)
    for t in range(steps):
        if not bool(hidden.any()):
            break
        tokens = grids.masked_fill(hidden, model.cfg.mask_id).view(-1, h, w)
        logits = model.logits(tokens).flatten(2).transpose(1, 2).double() / temperature
        draw = sample_categorical(logits, rand.uniform(rows, h * w).double())
        conf = logits.log_softmax(-1).gather(2, draw[..., None]).squeeze(2)
        conf = conf + (1 - (t + 1) / steps) * -torch.log(-torch.log(rand.uniform(rows, h * w).double()))
        keep = torch.minimum(mp._still_hidden(total, t, steps), (hidden.sum(1) - 1).clamp_min(0))
        rank = conf.masked_fill(~hidden, math.inf).argsort(1).argsort(1)
        reveal = hidden & (rank >= keep[:, None])
        grids = torch.where(reveal, draw, grids)
        hidden = hidden & ~reveal
    return grids.view(b, samples, h, w)


def test_completion_runs_the_head_at_hidden_positions_only_and_draws_the_same_codes():
    """Drawing only where a code is hidden gives the very draws of the whole-grid logits."""
    model = _tiny(k=7, h=4, w=4, seed=3)
    gen = torch.Generator().manual_seed(5)
    start = torch.randint(7, (4, 4, 4), generator=gen)
    movable = torch.rand(4, 4, 4, generator=gen) < 0.5
    with torch.no_grad():
        for steps, temperature in ((1, 1.0), (4, 2.0), (8, 0.7)):
            want = _complete_from_whole_logits(model, start, movable, 6, steps, temperature, seed=9)
            got = mp.complete(model, start, movable, samples=6, steps=steps, temperature=temperature, seed=9)
            assert torch.equal(got, want)


@pytest.mark.parametrize("kwargs, match", [
    ({"samples": 0}, "samples must be an integer >= 1"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"temperature": float("nan")}, "temperature must be a finite number > 0"),
])
def test_completion_refuses_bad_options(kwargs, match):
    model = _tiny()
    start = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        mp.complete(model, start, torch.ones(3, 3, dtype=torch.bool), **kwargs)


def test_completion_refuses_bad_grids_and_masks():
    model = _tiny()
    ok = torch.zeros(2, 3, 3, dtype=torch.long)
    mov = torch.ones(2, 3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"start must be \(B >= 1, 3, 3\) int64"):
        mp.complete(model, ok.float(), mov)
    with pytest.raises(ValueError, match=r"start must be \(B >= 1, 3, 3\) int64"):
        mp.complete(model, torch.zeros(2, 3, 4, dtype=torch.long), mov)
    with pytest.raises(ValueError, match=r"start must hold codes in \[0, 4\), got values in \[0, 4\]"):
        mp.complete(model, ok.index_put((torch.tensor([0]), torch.tensor([2]), torch.tensor([2])), torch.tensor(4)), mov)
    with pytest.raises(ValueError, match="movable must be a bool tensor"):
        mp.complete(model, ok, mov.long())
    with pytest.raises(ValueError, match="movable must be a bool tensor"):
        mp.complete(model, ok, torch.ones(3, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="prior must be a MaskedTokenPrior"):
        mp.complete(object(), ok, mov)


# --- the pseudo-likelihood -----------------------------------------------------------------------

def test_pseudo_nll_matches_a_brute_force_computation():
    model = _tiny(k=5, h=2, w=3, seed=3)
    gen = torch.Generator().manual_seed(0)
    grids = torch.randint(5, (4, 2, 3), generator=gen)
    want = torch.zeros(4)
    for i in range(4):
        for p in range(6):
            tokens = grids[i:i + 1].clone()
            tokens.view(-1)[p] = 5  # [MASK]
            with torch.no_grad():
                lp = torch.log_softmax(model.logits(tokens)[0].flatten(1)[:, p], 0)
            want[i] -= lp[grids[i].view(-1)[p]] / 6
    for batch_size in (1, 7, 1024):  # the result does not depend on how the copies are batched
        assert torch.allclose(mp.pseudo_nll(model, grids, batch_size=batch_size), want, atol=1e-5)


def test_pseudo_nll_of_a_uniform_model_is_log_k():
    model = _tiny(k=7)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    grids = torch.randint(7, (3, 3, 3))
    assert torch.allclose(mp.pseudo_nll(model, grids), torch.full((3,), math.log(7)), atol=1e-6)


# --- in a search's energy -----------------------------------------------------------------------

def _moves(gp, idx):
    """The exact penalty change of every single move ``(n, h*w, k)`` and of every position's own term."""
    n, h, w = idx.shape
    k = gp.prior.cfg.k
    base = gp.penalty(idx)
    base_terms = mp.pseudo_nll_terms(gp.prior, idx).flatten(1)
    exact = torch.zeros(n, h * w, k)
    own = torch.zeros(n, h * w, k)
    for p in range(h * w):
        for j in range(k):
            moved = idx.clone()
            moved.view(n, -1)[:, p] = j
            exact[:, p, j] = gp.penalty(moved) - base
            own[:, p, j] = gp.weight / (h * w) * (mp.pseudo_nll_terms(gp.prior, moved).flatten(1)[:, p] - base_terms[:, p])
    return exact, own


def test_penalty_table_is_the_exact_change_of_the_moved_positions_own_term():
    model = _tiny(k=4, h=2, w=2, seed=5)
    gp = mp.MaskedGridPrior(model, 0.7, 4, (2, 2))
    idx = torch.randint(4, (3, 2, 2), generator=torch.Generator().manual_seed(1))
    table = gp.penalty_table(idx)
    exact, own = _moves(gp, idx)
    assert table.shape == (3, 4, 4)
    assert torch.allclose(table, own, atol=1e-5)
    assert not torch.allclose(table, exact, atol=1e-3)  # the other positions' terms also move: first order only


def test_penalty_table_is_exact_when_positions_do_not_interact():
    """With the attention's output zeroed, each position's conditional ignores the others: the
    pseudo-NLL is a sum of independent terms and the first-order table is the exact change."""
    model = _tiny(k=4, h=2, w=2, seed=6)
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    gp = mp.MaskedGridPrior(model, 0.7, 4, (2, 2))
    idx = torch.randint(4, (3, 2, 2), generator=torch.Generator().manual_seed(2))
    exact, _ = _moves(gp, idx)
    assert torch.allclose(gp.penalty_table(idx), exact, atol=1e-5)
    assert exact.abs().max() > 1e-3  # a table of zeros would not prove anything


def test_masked_grid_prior_refuses_a_mismatched_prior_or_weight():
    model = _tiny(k=4, h=3, w=3)
    with pytest.raises(ValueError, match="prior weight.*>= 0, got -0.1"):
        mp.MaskedGridPrior(model, -0.1, 4, (3, 3))
    with pytest.raises(ValueError, match="prior weight.*got nan"):
        mp.MaskedGridPrior(model, float("nan"), 4, (3, 3))
    with pytest.raises(ValueError, match="trained for k=4 codes but the searched model has k=8"):
        mp.MaskedGridPrior(model, 0.1, 8, (3, 3))
    with pytest.raises(ValueError, match="trained on 3x3 grids but the searched model's grids are 4x3"):
        mp.MaskedGridPrior(model, 0.1, 4, (4, 3))
    with pytest.raises(ValueError, match="prior must be a MaskedTokenPrior"):
        mp.MaskedGridPrior(torch.nn.Linear(2, 2), 0.1, 4, (3, 3))
    zero = mp.MaskedGridPrior(model, 0, 4, (3, 3))
    idx = torch.zeros(2, 3, 3, dtype=torch.long)
    assert torch.equal(zero.penalty(idx), torch.zeros(2)) and torch.equal(zero.penalty_table(idx), torch.zeros(2, 9, 4))


def test_the_searches_take_it_as_their_prior(tiny_vqvae):
    torch.manual_seed(3)
    model = tiny_vqvae.eval()
    images = torch.rand(2, 1, 28, 28)
    z = model.encode(images).detach()
    start = model.nearest(z)
    grid = tuple(start.shape[1:])
    gp = mp.MaskedGridPrior(_tiny(k=8, h=grid[0], w=grid[1]), 0.3, 8, grid)
    loss = search.mse_to(torch.rand_like(images))
    movable = torch.ones((2,) + grid, dtype=torch.bool)
    movable[:, 0] = False
    for trace in (search.relaxed_straight_through(model, z, loss, max_steps=5, max_unique=5, prior=gp, movable=movable),
                  search.screened_annealing(model, z, loss, m=4, chains=2, budget=40, prior=gp, movable=movable)):
        best = trace.best_indices
        assert torch.equal(best[:, 0], start[:, 0])
        with torch.no_grad():
            energy = loss(model.decode(model.lookup(best))) + gp.penalty(best)
        assert torch.allclose(trace.best_losses, energy, atol=1e-5)


# --- configs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"k": 1}, "k .* must be an integer >= 2, got 1"),
    ({"dim": 10, "heads": 4}, "heads must divide dim: dim=10 is not a multiple of heads=4"),
    ({"layers": 0}, "layers must be an integer >= 1, got 0"),
    ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
])
def test_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mp.MaskedPriorConfig(**kwargs)


def test_train_config_refuses_bad_limits():
    with pytest.raises(ValueError, match="score_limit must be an integer >= 1, got 0"):
        mp.MaskedTrainConfig(score_limit=0)
    with pytest.raises(ValueError, match="train_limit must be an integer >= 1 or None, got -3"):
        mp.MaskedTrainConfig(train_limit=-3)


def test_full_config_takes_presets_and_overrides_and_refuses_unknown_names():
    vq = {"dataset": "fashion-mnist", "model": {"k": 40}, "train": {}}
    cfg = mp.masked_prior_config(vq, "smoke", layers=3, lr=0.01)
    assert cfg["model"]["k"] == 40 and cfg["model"]["layers"] == 3 and cfg["train"]["lr"] == 0.01
    assert cfg["vqvae"] == vq
    with pytest.raises(ValueError, match="unknown masked prior option 'depth'"):
        mp.masked_prior_config(vq, "smoke", depth=3)
    with pytest.raises(ValueError, match="unknown masked prior option 'k'"):
        mp.masked_prior_config(vq, "smoke", k=3)
    with pytest.raises(ValueError, match="profile must be one of"):
        mp.masked_prior_config(vq, "fast")
