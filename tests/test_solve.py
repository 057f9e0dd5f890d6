"""One way to solve a task: the method registry, tasks.solve and the Task built from what the user has."""

import argparse
import importlib

import pytest
import torch

from vqtto import cli, search, tasks
from vqtto.book import plots
from vqtto.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqtto.search import registry
from vqtto.search.trace import METHODS as TRACE_METHODS


@pytest.fixture
def world(tiny_vqvae):
    torch.manual_seed(5)
    model = tiny_vqvae.eval()
    images = torch.rand(4, 1, 28, 28)
    grid = tuple(tasks.anchors.encoder_grids(model, images[:1]).shape[1:])
    prior = GatedPixelCNN(PixelCNNConfig(k=8, height=grid[0], width=grid[1], channels=8, n_layers=1)).eval()
    return model, prior, images, grid


def _cli_choices(option: str) -> list:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["search"]
    return next(a for a in sub._actions if option in a.option_strings)


def test_every_list_of_methods_agrees_with_the_registry():
    ids = registry.ids()
    assert all(m in TRACE_METHODS for m in ids), "every registry id is a trace label"
    assert all(plots.method_label(m) for m in ids), "every registry id has a name and colour in the book"
    method = _cli_choices("--method")
    assert list(method.choices) == ids and method.default == registry.DEFAULT == search.DEFAULT
    assert set(tasks.guided.GUIDED) == set(registry.supporting(movable=True, prior=True))
    task = _cli_choices("--task")
    assert [c.replace("-", "_") for c in task.choices] == [tasks.CONSTRUCTORS[k] for k in tasks.KINDS]
    assert all(callable(getattr(tasks, tasks.CONSTRUCTORS[k])) for k in tasks.KINDS)


def test_the_registry_refuses_unknown_methods_settings_and_features(world):
    model, _, images, _ = world
    z = model.encode(images)
    with pytest.raises(ValueError, match="method must be one of"):
        registry.get("alg4")
    with pytest.raises(ValueError, match="does not take"):
        registry.run("alg2", model, z, search.mse_to(images), alpha=1.0, tau=2.0)
    with pytest.raises(ValueError, match=r"cannot take radius=; methods that can: \['relaxed'"):
        registry.run("greedy", model, z, search.mse_to(images), radius=2)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        registry.check_settings("alg2", {"alpha": -1.0})
    registry.check_settings("relaxed", {"lr": 0.5})  # a valid setting passes without a model


def test_a_budget_buys_the_same_equivalents_in_every_method(world):
    model, _, images, _ = world
    z = model.encode(images)
    for m in ("alg2", "relaxed", "gwg", "screened-sa", "alg2-restarts"):
        trace = registry.run(m, model, z, search.mse_to(images.roll(1, 0)), budget=60)
        assert trace.decoder_equivalents / len(trace) <= 60 + 3 * 16 + 3, m  # at most one last step over


def test_solve_defaults_to_the_registry_default_and_improves_on_its_start(world):
    model, _, images, _ = world
    task = tasks.reconstruct(images.roll(1, 0), sources=images)
    found = tasks.solve(model, task, budget=60)
    assert found.method == registry.DEFAULT and found.trace.method == registry.DEFAULT
    assert found.grids.shape == (4, 7, 7) and found.images.shape == images.shape
    assert torch.equal(found.start, tasks.anchors.encoder_grids(model, images).cpu())
    assert bool((found.losses <= found.start_losses + 1e-6).all())
    assert torch.allclose(found.losses, task.residual(found.images))
    assert found.equivalents <= 60 + search.FORWARD_BACKWARD  # at most one step over


def test_solve_keeps_frozen_positions_and_the_radius(world):
    model, prior, images, _ = world
    hidden = torch.zeros(28, 28, dtype=torch.bool)
    hidden[14:] = True
    task = tasks.inpaint(images, hidden, model)
    assert bool(task.movable.any()) and not bool(task.movable.all())
    for kw in ({}, {"prior": prior, "weight": 0.1, "samples": 4, "chains": 2}):
        found = tasks.solve(model, task, budget=40, **kw)
        assert torch.equal(found.grids[~task.movable.cpu()], found.start[~task.movable.cpu()])
    start = tasks.anchors.encoder_grids(model, images)
    edit = tasks.edit(images.flip(-1), start, radius=2)
    for kw in ({}, {"prior": prior, "samples": 1, "chains": 1}):
        found = tasks.solve(model, edit, budget=40, **kw)
        assert int((found.grids != start.cpu()).flatten(1).sum(1).max()) <= 2


@pytest.mark.parametrize("case", ["weight without prior", "negative weight", "frozen positions", "radius",
                                  "draws use the budget", "chains over samples", "prior of another k", "not a task",
                                  "exemplars without prior", "exemplars and draws", "exemplars of another shape",
                                  "too few exemplars", "exemplars with a radius"])
def test_solve_refuses_bad_input_before_any_work(world, case, monkeypatch):
    model, prior, images, _ = world
    hidden = torch.zeros(28, 28, dtype=torch.bool)
    hidden[:5] = True
    inpaint = tasks.inpaint(images, hidden, model)
    other = GatedPixelCNN(PixelCNNConfig(k=16, height=7, width=7, channels=8, n_layers=1))
    calls = {
        "weight without prior": (dict(task=inpaint, weight=0.1), "needs a prior"),
        "negative weight": (dict(task=inpaint, prior=prior, weight=-1.0), "weight must be a finite number >= 0"),
        "frozen positions": (dict(task=inpaint, method="alg2"), "cannot keep the task's frozen positions"),
        "radius": (dict(task=tasks.edit(images, tasks.anchors.encoder_grids(model, images), 1), method="greedy"),
                   "cannot stay within the task's radius"),
        "draws use the budget": (dict(task=inpaint, prior=prior, samples=32, budget=20), "must exceed samples"),
        "chains over samples": (dict(task=inpaint, prior=prior, samples=2, chains=3), "chains .3. must be <= samples"),
        "prior of another k": (dict(task=inpaint, prior=other), "k=16 codes but the searched model has k=8"),
        "not a task": (dict(task=images), "task must be a vqtto.tasks.Task"),
        "exemplars without prior": (dict(task=inpaint, exemplars=images), "exemplars need a prior"),
        "exemplars and draws": (dict(task=inpaint, prior=prior, exemplars=images, draws=torch.zeros(4, 32, 7, 7).long()),
                                "draws or exemplars, not both"),
        "exemplars of another shape": (dict(task=inpaint, prior=prior, exemplars=torch.rand(40, 1, 14, 14)),
                                       r"exemplars must be \(N, 1, 28, 28\)"),
        "too few exemplars": (dict(task=inpaint, prior=prior, exemplars=images), "at least samples=32 images"),
        "exemplars with a radius": (dict(task=tasks.edit(images, tasks.anchors.encoder_grids(model, images), 1), prior=prior,
                                         exemplars=images, samples=1, chains=1), "cannot start a task with a radius"),
    }
    kw, message = calls[case]
    monkeypatch.setattr(importlib.import_module("vqtto.tasks.solve"), "guided_search",
                        lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(registry, "run", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=message):
        tasks.solve(model, kw.pop("task"), **kw)


def test_a_shared_run_joins_into_the_unshared_one(world):
    model, _, images, _ = world
    task = tasks.reconstruct(images.roll(1, 0), sources=images)
    seeds = search.chains.pair_seeds(0, 4)  # what seed=0 gives each image of the whole batch
    whole = tasks.solve(model, task, budget=45)
    parts = tasks.Solution.join([tasks.solve(model, task.rows(torch.arange(i, j)), budget=45, seed=seeds[i:j])
                                 for i, j in ((0, 1), (1, 4))])
    assert torch.equal(whole.grids, parts.grids) and torch.allclose(whole.losses, parts.losses)
    assert whole.decoded_images == parts.decoded_images


def test_the_task_holds_what_the_user_has_and_the_benchmark_the_truth(world):
    model, _, images, _ = world
    bench = tasks.inpainting(images, "bottom-half", model)
    assert not hasattr(bench.task, "truth") and torch.equal(bench.truth, images)
    assert bool((bench.task.observed[..., 14:, :] == 0).all()) and torch.equal(bench.measured, bench.task.hidden)
    sr = tasks.super_resolution(images, 4)
    assert sr.task.loss.targets.shape == (4, 1, 7, 7) and not hasattr(sr.task, "truth")
    with pytest.raises(ValueError, match="factor must be an integer >= 2"):
        tasks.super_resolve(images, 1)
    with pytest.raises(ValueError, match="radius must be an integer >= 0"):
        tasks.edit(images, tasks.anchors.encoder_grids(model, images), -1)


def test_solve_takes_a_masked_token_prior_for_its_draws_and_energy(world):
    from vqtto.models.masked import MaskedGridPrior, MaskedPriorConfig, MaskedTokenPrior

    model, _, images, grid = world
    torch.manual_seed(0)
    masked = MaskedTokenPrior(MaskedPriorConfig(k=8, height=grid[0], width=grid[1], dim=16, layers=1, heads=2)).eval()
    assert isinstance(tasks.guided.energy_term(masked, 0.1, 8, grid), MaskedGridPrior)
    hidden = torch.zeros(28, 28, dtype=torch.bool)
    hidden[:, 14:] = True  # the right half: a raster-order prior cannot see the visible left codes below a row
    task = tasks.inpaint(images, hidden, model)
    found = tasks.solve(model, task, prior=masked, weight=0.05, samples=4, chains=2, budget=40)
    frozen = ~task.movable.cpu()
    assert torch.equal(found.grids[frozen], found.start[frozen])
    assert torch.equal(found.draws[:, :, frozen[0]], found.start[:, None][:, :, frozen[0]].expand_as(found.draws[:, :, frozen[0]]))
    other = MaskedTokenPrior(MaskedPriorConfig(k=16, height=grid[0], width=grid[1], dim=16, layers=1, heads=2))
    with pytest.raises(ValueError, match="k=16"):
        tasks.solve(model, task, prior=other, samples=4, chains=2, budget=40)


def test_weights_agree_names_each_task_whose_chosen_weight_differs_from_the_default():
    kinds = {"inpainting, bottom-half": "inpainting", "super-resolution x4": "super-resolution"}
    same = {name: tasks.default_weight(kind) for name, kind in kinds.items()}
    assert "differs" not in tasks.weights_agree(same, kinds)
    other = {**same, "super-resolution x4": same["super-resolution x4"] * 3}
    line = tasks.weights_agree(other, kinds)
    assert "differs" in line and "super-resolution x4" in line and "bottom-half" not in line


def test_exemplar_draws_are_the_nearest_images_codes_at_the_movable_positions(world):
    model, prior, images, _ = world
    hidden = torch.zeros(28, 28, dtype=torch.bool)
    hidden[14:] = True
    truth = images[:2]
    task = tasks.inpaint(truth, hidden, model)
    exemplars = torch.cat([truth, torch.rand(6, 1, 28, 28)])  # each truth is its own nearest exemplar
    start = tasks.anchors.encoder_grids(model, task.observed)
    draws = tasks.guided.exemplar_draws(model, task, start, exemplars, 3)
    own = tasks.anchors.encoder_grids(model, truth)
    mv = task.movable.cpu().expand_as(start)
    assert draws.shape == (2, 3, *start.shape[1:]) and bool(mv.any()) and not bool(mv.all())
    assert torch.equal(draws[:, 0][mv], own[mv]), "the nearest exemplar is the image itself"
    for j in range(3):
        assert torch.equal(draws[:, j][~mv], start[~mv]), "frozen positions keep the start"
    found = tasks.solve(model, task, prior=prior, weight=0.0, exemplars=exemplars, samples=3, chains=2, budget=40)
    assert torch.equal(found.draws, draws) and found.settings["draws"] == "exemplars"
    assert torch.equal(found.grids[~mv], found.start[~mv])


def test_one_priors_draws_start_a_search_weighed_by_another(world):
    from vqtto.models.masked import MaskedPriorConfig, MaskedTokenPrior

    model, prior, images, grid = world
    torch.manual_seed(0)
    masked = MaskedTokenPrior(MaskedPriorConfig(k=8, height=grid[0], width=grid[1], dim=16, layers=1, heads=2)).eval()
    hidden = torch.zeros(28, 28, dtype=torch.bool)
    hidden[:14] = True
    task = tasks.inpaint(images[:2], hidden, model)
    draws = tasks.prior_draws(model, masked, task, samples=3, seed=2)
    start = tasks.anchors.encoder_grids(model, task.observed)
    mv = task.movable.cpu().expand_as(start)
    assert draws.shape == (2, 3, *grid) and bool(mv.any()) and not bool(mv.all())
    assert torch.equal(draws, tasks.prior_draws(model, masked, task, samples=3, seed=2)), "seeded: the same draws"
    for j in range(3):
        assert torch.equal(draws[:, j][~mv], start[~mv]), "frozen positions keep the start"
    found = tasks.solve(model, task, prior=prior, weight=0.01, draws=draws, samples=3, chains=2, budget=40)
    assert torch.equal(found.draws, draws) and torch.equal(found.grids[~mv], found.start[~mv])
    with pytest.raises(ValueError, match="samples"):
        tasks.prior_draws(model, masked, task, samples=0)

