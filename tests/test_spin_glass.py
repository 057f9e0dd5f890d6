"""The planar spin glass -> latent search reduction with a convolutional decoder: the affine map on
every grid, the optimum, the decoder's layers, the exact solvers and the searches on its instances."""

import pytest
import torch
from torch import nn

from vqtto.hardness import exact as X
from vqtto.hardness import instance_searches as R
from vqtto.hardness import spin_glass as S


def _instances():
    """Random +-J spin glasses with fields in {-1, 0, 1}, several per grid size."""
    return [(grid, seed) for grid in [(2, 3), (3, 3), (3, 4), (1, 6), (4, 3)] for seed in range(3)]


def _brute_energy(sg, indices):
    """The energy by the definition, one edge at a time (independent of SpinGlass.energies)."""
    h, w = sg.grid
    s = (2 * indices.view(-1, h, w) - 1).double()
    out = torch.zeros(s.shape[0], dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            out -= sg.field[i, j] * s[:, i, j]
            if j + 1 < w:
                out -= sg.horizontal[i, j] * s[:, i, j] * s[:, i, j + 1]
            if i + 1 < h:
                out -= sg.vertical[i, j] * s[:, i, j] * s[:, i + 1, j]
    return out


@pytest.mark.parametrize("grid,seed", _instances())
def test_loss_is_an_exact_affine_function_of_the_energy_on_every_grid(grid, seed):
    sg = S.random_spin_glass(grid, seed=seed)
    red = S.reduce_spin_glass(sg, dtype=torch.float64)
    grids = X.assignments(sg.n).view(-1, *grid)
    energy = _brute_energy(sg, grids)
    assert torch.equal(sg.energies(grids), energy)
    loss = red.mse_of_grids(grids)
    # MSE = (C + E / 4) / P on all 2^n grids, both ways, with a positive slope
    assert red.pixels == (2 * grid[0] - 1) * (2 * grid[1] - 1)
    assert red.slope == pytest.approx(1 / (4 * red.pixels)) and red.slope > 0
    assert torch.allclose(red.loss_from_energy(energy), loss, rtol=0, atol=1e-14)
    assert torch.allclose(red.energy_from_loss(loss), energy, rtol=0, atol=1e-11)
    # the MSE-minimal grid is a ground state, and a ground state decodes to the minimal MSE
    check = X.verify_spin_glass(red)
    assert check.holds and check.is_ground_state and check.map_error < X.EXACT_TOL
    assert check.energy.best_value == float(energy.min())
    assert float(sg.energies(check.latent.best.view(1, -1))) == float(energy.min())
    assert float(red.mse_of_grids(check.energy.best.view(1, *grid))) == pytest.approx(float(loss.min()), abs=1e-15)


def test_float32_decoder_gives_the_same_exact_losses():
    # every pixel is 0 or 1 and every target a multiple of 1/4: float32 loses nothing
    sg = S.random_spin_glass((3, 4), seed=7)
    grids = X.assignments(12).view(-1, 3, 4)
    lo, hi = S.reduce_spin_glass(sg), S.reduce_spin_glass(sg, dtype=torch.float64)
    assert torch.equal(lo.decoder.decode_indices(grids).double(), hi.decoder.decode_indices(grids))
    assert torch.equal(lo.target.double(), hi.target)


def test_decoder_has_only_convolutions_and_relu_and_does_not_depend_on_the_instance():
    a = S.reduce_spin_glass(S.random_spin_glass((3, 4), seed=0))
    b = S.reduce_spin_glass(S.random_spin_glass((3, 4), seed=1))
    layers = list(a.decoder.net)
    assert [type(m) for m in layers] == [nn.ConvTranspose2d, nn.ReLU, nn.Conv2d]
    assert layers[0].stride == (2, 2) and layers[0].kernel_size == (3, 3) and layers[2].kernel_size == (1, 1)
    leaves = [m for m in a.decoder.modules() if not list(m.children())]
    assert all(isinstance(m, (nn.ConvTranspose2d, nn.Conv2d, nn.ReLU)) for m in leaves)
    assert not any(p.requires_grad for p in a.decoder.parameters())
    # the same weights for every instance: the instance lives in the target
    assert all(torch.equal(p, q) for p, q in zip(a.decoder.state_dict().values(), b.decoder.state_dict().values()))
    assert not torch.equal(a.target, b.target)


def test_each_pixel_sees_one_edge_or_one_position():
    h, w = 3, 4
    dec = S.ConvDecoder((h, w), dtype=torch.float64)
    grids = X.assignments(h * w).view(-1, h, w)
    images = dec.decode_indices(grids)[:, 0]
    assert tuple(images.shape[1:]) == dec.image_shape == (5, 7)
    up = (grids == 1).double()
    assert torch.equal(images[:, 0::2, 0::2], up)                              # positions
    assert torch.equal(images[:, 0::2, 1::2], up[:, :, :-1] * up[:, :, 1:])    # horizontal edges
    assert torch.equal(images[:, 1::2, 0::2], up[:, :-1] * up[:, 1:])          # vertical edges
    assert bool((images[:, 1::2, 1::2] == 0).all())


def test_a_known_ferromagnet_and_antiferromagnet():
    ones = torch.ones
    # ferromagnet in a positive field on 2x2: all spins up, E = -4 - 4
    ferro = S.SpinGlass(ones(2, 1, dtype=torch.float64), ones(1, 2, dtype=torch.float64), ones(2, 2, dtype=torch.float64))
    check = X.verify_spin_glass(S.reduce_spin_glass(ferro, dtype=torch.float64))
    assert check.energy.best_value == -8.0 and check.latent.best.tolist() == [[1, 1], [1, 1]]
    # antiferromagnet, no field, on 2x3: a checkerboard, E = -7 (every edge satisfied)
    anti = S.SpinGlass(-ones(2, 2, dtype=torch.float64), -ones(1, 3, dtype=torch.float64),
                       torch.zeros(2, 3, dtype=torch.float64))
    check = X.verify_spin_glass(S.reduce_spin_glass(anti, dtype=torch.float64))
    assert check.energy.best_value == -7.0 and check.holds
    best = check.latent.best
    assert bool((best[:, 1:] != best[:, :-1]).all()) and bool((best[1:] != best[:-1]).all())


def test_coupling_matrix_gives_minus_the_energy():
    sg = S.random_spin_glass((3, 3), seed=2)
    grids = X.assignments(9)
    s = (2 * grids - 1).double()
    m = S.coupling_matrix(sg)
    assert torch.equal(m, m.t()) and int((m != 0).sum()) == 2 * sg.n_edges
    assert torch.allclose(0.5 * ((s @ m) * s).sum(1) + s @ sg.field.flatten(), -sg.energies(grids), rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid,seed", [((2, 3), 0), ((3, 3), 1), ((3, 4), 2), ((2, 5), 3)])
def test_branch_and_bound_on_the_convolutional_decoder_finds_a_ground_state(grid, seed):
    sg = S.random_spin_glass(grid, seed=seed)
    red = S.reduce_spin_glass(sg, dtype=torch.float64)
    bb = X.branch_and_bound_latent(red)
    ground = X.brute_force_energy(sg)
    assert float(sg.energies(bb.best.view(1, -1))) == ground.best_value
    assert bb.best_value == pytest.approx(float(red.loss_from_energy(ground.best_value)), abs=1e-12)
    assert 0 < bb.nodes <= 2 ** (sg.n + 1) - 1


def test_interval_bounds_contain_every_decoded_image():
    dec = S.ConvDecoder((2, 3), dtype=torch.float64)
    bounds = dec.output_bounds()
    lo, hi = torch.tensor([-1.0, -1, -1, 1, 1, -1]), torch.tensor([-1.0, 1, 1, 1, 1, 1])   # 3 positions free
    out_lo, out_hi = bounds(lo.numpy(), hi.numpy())
    grids = X.assignments(6).view(-1, 2, 3)
    codes = dec.lookup(grids).flatten(1)
    inside = ((codes >= lo) & (codes <= hi)).all(1)
    images = dec.decode_indices(grids[inside]).flatten(1).numpy()
    assert (images >= out_lo - 1e-12).all() and (images <= out_hi + 1e-12).all()


def test_timing_and_checks_agree():
    timing = X.time_spin_glass_solvers([[2, 2], [2, 3], [3, 3]], seed=0, progress=False)
    assert [t.grid for t in timing] == [[2, 2], [2, 3], [3, 3]] and [t.n for t in timing] == [4, 6, 9]
    for t in timing:
        assert t.latent_grid_is_ground_state and t.bb_agrees and 0 < t.bb_node_share <= 1
        assert t.energy_from_min_mse == pytest.approx(t.ground_energy, abs=1e-4)
    checks = X.verify_random_spin_glasses([[2, 3], [3, 3]], per_grid=2, seed=0)
    assert [c.grid for c in checks] == [[2, 3], [2, 3], [3, 3], [3, 3]] and all(c.holds for c in checks)


def test_searches_on_spin_glasses_are_scored_against_the_ground_state():
    cases = R.spin_glass_instances(2, [2, 3], seed=0)
    for case in cases:
        energies = X.brute_force_energy(case.reduction.spin_glass, keep_values=True).values
        assert (case.best, case.worst) == (-float(energies.min()), -float(energies.max()))
    runs = R.run_on_instances(cases, starts=3, alphas=[1.0], lam=20, random_grids=4, seed=0, device="cpu",
                              progress=False)
    assert list(runs) == ["alg2 α=1", "alg3 α=1", "greedy", "local-search", "uniform"]
    for r in runs.values():
        s = R.summarise_runs(r)
        assert s.runs == 6 and 0 <= s.worst_ratio <= s.mean_ratio <= 1 + 1e-12
        assert 0 <= s.fraction_exact <= s.instances_solved <= 1
    # local search ends where no single flip lowers the energy
    case = cases[0]
    start = torch.randint(2, (5, 2, 3), generator=torch.Generator().manual_seed(0))
    out = R.one_flip_local_search(case.coupling, case.field, start)
    sg = case.reduction.spin_glass
    energy = sg.energies(out)
    assert bool((energy <= sg.energies(start)).all())
    for p in range(6):
        flipped = out.view(5, -1).clone()
        flipped[:, p] = 1 - flipped[:, p]
        assert bool((sg.energies(flipped) >= energy).all())


@pytest.mark.parametrize("call,match", [
    (lambda: S.random_spin_glass((1, 1)), "h \\* w >= 2"),
    (lambda: S.SpinGlass(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                         torch.zeros(2, 3, dtype=torch.float64)), "horizontal must have shape \\(2, 2\\)"),
    (lambda: S.SpinGlass(torch.zeros(2, 2), torch.zeros(1, 3), torch.zeros(2, 3)), "float64"),
    (lambda: S.random_spin_glass((2, 2)).energies(torch.zeros(1, 5, dtype=torch.long)), "4 entries per row"),
    (lambda: S.random_spin_glass((2, 2)).energies(torch.full((1, 4), 2)), "0 or 1"),
    (lambda: S.ConvDecoder((2, 0)), "grid must be a pair"),
])
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_barahonas_family_missing_bonds_and_a_uniform_field():
    # couplings in {-1, 0, +1} (0: no bond) and a uniform field, the NP-hard planar case
    gen = torch.Generator().manual_seed(5)
    pick = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    sg = S.SpinGlass(pick[torch.randint(3, (3, 3), generator=gen)], pick[torch.randint(3, (2, 4), generator=gen)],
                     torch.ones(3, 4, dtype=torch.float64))
    red = S.reduce_spin_glass(sg, dtype=torch.float64)
    check = X.verify_spin_glass(red)
    assert check.holds and check.map_error < 1e-12
    assert float(red.energy_from_loss(check.latent.best_value)) == pytest.approx(check.energy.best_value, abs=1e-12)
