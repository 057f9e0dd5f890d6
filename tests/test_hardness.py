"""The MAX-CUT -> latent search reduction: exact on every assignment, and refusals of bad input."""

import math

import pytest
import torch

from vqtto import hardness as H


def _instances():
    """Random small graphs, unit and real weights, on several grid shapes (n = h * w vertices)."""
    out = []
    for seed, (grid, p, weighted) in enumerate([((2, 3), 0.6, False), ((3, 3), 0.5, True), ((3, 4), 0.4, True),
                                                 ((2, 5), 0.8, False), ((1, 7), 0.7, True), ((4, 3), 0.3, False)]):
        g = H.random_graph(grid[0] * grid[1], p, weighted=weighted, seed=seed)
        out.append((g, grid))
    return out


@pytest.mark.parametrize("g,grid", _instances())
def test_loss_and_cut_map_exactly_for_every_assignment(g, grid):
    red = H.reduce_max_cut(g, grid, dtype=torch.float64)
    cut = H.brute_force_cut(g, chunk=100, keep_values=True)
    lat = H.brute_force_latent(red, chunk=77, keep_values=True)
    assert cut.values.shape == lat.values.shape == (2 ** g.n,)
    # the affine map holds for all 2^n grids, both ways
    assert torch.allclose(red.cut_from_loss(lat.values), cut.values, rtol=0, atol=1e-10)
    assert torch.allclose(red.loss_from_cut(cut.values), lat.values, rtol=0, atol=1e-13)
    # the optima coincide: the MSE-minimal grid is a maximum cut and vice versa
    assert math.isclose(red.cut_from_loss(lat.best_value), cut.best_value, abs_tol=1e-10)
    assert float(H.cut_values(g, lat.best.view(1, -1))) == pytest.approx(cut.best_value, abs=1e-12)
    best_grid = cut.best.view(1, *grid)
    assert float(red.losses(best_grid)) == pytest.approx(lat.best_value, abs=1e-14)
    # the slope is positive: a larger cut always means a smaller loss
    assert red.slope > 0


def test_decoder_is_fully_connected_layer_over_all_pairs():
    # a complete graph: every pair of latent positions shares a pixel, so no locality is assumed
    g = H.graph(4, [(i, j) for i in range(4) for j in range(i + 1, 4)])
    red = H.reduce_max_cut(g, (2, 2))
    assert tuple(red.decoder.layer.weight.shape) == (6, 4)
    assert int((red.decoder.layer.weight != 0).sum(1).min()) == 2
    # K4: maximum cut is 4 (2+2 split), found by both solvers
    assert H.brute_force_cut(g).best_value == 4
    assert red.cut_from_loss(H.brute_force_latent(red).best_value) == pytest.approx(4, abs=1e-5)


def test_known_small_cuts():
    # a triangle can cut at most 2 edges; an even cycle cuts all of its edges
    tri = H.graph(3, [(0, 1), (1, 2), (0, 2)])
    assert H.brute_force_cut(tri).best_value == 2
    c6 = H.graph(6, [(i, (i + 1) % 6) for i in range(6)])
    assert H.brute_force_cut(c6).best_value == 6
    best = H.brute_force_latent(H.reduce_max_cut(c6, (2, 3))).best.flatten()
    assert all(best[i] != best[(i + 1) % 6] for i in range(6))


def test_latent_decoder_protocol_shapes_and_range():
    g = H.random_graph(6, 0.7, seed=3)
    dec = H.reduce_max_cut(g, (2, 3)).decoder
    assert tuple(dec.codebook.shape) == (2, 1)
    idx = torch.randint(2, (5, 2, 3))
    codes = dec.lookup(idx)
    assert tuple(codes.shape) == (5, 1, 2, 3)
    assert torch.equal(dec.nearest(codes + 0.3 * (0.5 - codes)), idx)  # moved towards 1/2 but not past
    img = dec.decode(codes)
    assert tuple(img.shape) == (5, 1, 1, g.edges.shape[0])
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert torch.equal(dec.decode_indices(idx), img)


def test_gradient_flows_through_decoder_to_latents():
    g = H.random_graph(6, 0.7, seed=4)
    red = H.reduce_max_cut(g, (2, 3))
    z = torch.rand(2, 1, 2, 3, requires_grad=True)
    (red.decoder.decode(z) - red.target).pow(2).mean().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_assignments_enumerate_each_labelling_once():
    x = H.assignments(5)
    assert x.shape == (32, 5)
    assert len({tuple(r) for r in x.tolist()}) == 32
    assert torch.equal(H.assignments(5, 10, 13), x[10:13])


def test_search_space_size():
    assert H.search_space_log10(512, 7) == pytest.approx(49 * math.log10(512))
    assert H.search_space_log10(2, 3, 4) == pytest.approx(12 * math.log10(2))


def test_score_grids_is_exact():
    g = H.graph(4, [(0, 1), (1, 2), (2, 3)], [1.0, 2.0, 3.0])
    red = H.reduce_max_cut(g, (2, 2))
    s = H.score_grids(red, torch.tensor([[[0, 1], [0, 1]], [[0, 0], [0, 0]]]), max_cut=6.0)
    assert s["cut"].tolist() == [6.0, 0.0]
    assert s["solved"].tolist() == [True, False]


@pytest.mark.parametrize("call,match", [
    (lambda: H.graph(3, [(0, 0)]), "self-loop"),
    (lambda: H.graph(3, [(0, 3)]), "0 <= i < j < n=3"),
    (lambda: H.graph(3, [(0, 1), (1, 0)]), "same edge twice"),
    (lambda: H.graph(3, [(0, 1)], [-1.0]), "weights must be finite and > 0"),
    (lambda: H.graph(3, [(0, 1)], [1.0, 2.0]), "one per edge"),
    (lambda: H.graph(1, [(0, 1)]), "n \\(number of vertices\\)"),
    (lambda: H.graph(3, []), "edges is empty"),
    (lambda: H.random_graph(5, p=0.0), "p \\(edge probability\\)"),
    (lambda: H.reduce_max_cut(H.random_graph(6, seed=0), (2, 2)), "4 positions but the graph has 6"),
    (lambda: H.reduce_max_cut(H.random_graph(6, seed=0), (2, 3, 1)), "grid must be a pair"),
    (lambda: H.brute_force_cut(H.random_graph(27, p=0.1)), "n must be <= 26"),
    (lambda: H.brute_force_cut(H.random_graph(4), chunk=0), "chunk must be >= 1"),
    (lambda: H.search_space_log10(0, 7), "k, h and w must be >= 1"),
    (lambda: H.cut_values(H.random_graph(4), torch.zeros(2, 5, dtype=torch.long)), "4 entries per row"),
    (lambda: H.cut_values(H.random_graph(4), torch.full((2, 4), 2)), "labels must be 0 or 1"),
])
def test_bad_input_is_refused_with_a_clear_message(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_decoder_refuses_wrong_shapes_and_indices():
    dec = H.reduce_max_cut(H.random_graph(6, seed=1), (2, 3)).decoder
    with pytest.raises(ValueError, match=r"\(B, 2, 3\)"):
        dec.lookup(torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="0 or 1"):
        dec.lookup(torch.full((1, 2, 3), 2))
    with pytest.raises(TypeError, match="int64"):
        dec.lookup(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"\(B, 1, 2, 3\)"):
        dec.decode(torch.zeros(1, 2, 2, 3))


@pytest.mark.parametrize("seed,n,weighted", [(0, 7, False), (1, 9, True), (2, 11, True), (3, 12, False)])
def test_branch_and_bound_finds_the_exact_optimum(seed, n, weighted):
    g = H.random_graph(n, 0.5, weighted=weighted, seed=seed)
    red = H.reduce_max_cut(g, dtype=torch.float64)
    bb = H.branch_and_bound_latent(red)
    lat = H.brute_force_latent(red)
    assert bb.best_value == pytest.approx(lat.best_value, abs=1e-12)
    assert float(red.losses(bb.best.view(1, *red.grid))) == pytest.approx(bb.best_value, abs=1e-12)
    assert 0 < bb.nodes <= 2 ** (n + 1) - 1


def test_branch_and_bound_prunes_and_respects_node_limit():
    red = H.reduce_max_cut(H.random_graph(14, 0.5, seed=5))
    assert H.branch_and_bound_latent(red).nodes < (2 ** 15 - 1) // 4
    with pytest.raises(RuntimeError, match="max_nodes=10"):
        H.branch_and_bound_latent(red, max_nodes=10)


def test_one_flip_local_search_reaches_a_local_optimum():
    g = H.random_graph(12, 0.5, weighted=True, seed=6)
    start = torch.randint(2, (5, 3, 4), generator=torch.Generator().manual_seed(0))
    out = H.one_flip_local_search(g, start)
    assert out.shape == start.shape
    cuts = H.cut_values(g, out)
    assert bool((cuts >= H.cut_values(g, start)).all())
    assert bool((cuts >= g.total_weight / 2 - 1e-12).all())  # every 1-flip optimum cuts half the weight
    flat = out.view(5, -1)
    for v in range(g.n):  # no single flip improves
        flipped = flat.clone()
        flipped[:, v] = 1 - flipped[:, v]
        assert bool((H.cut_values(g, flipped) <= cuts + 1e-12).all())


def test_first_order_check_matches_the_closed_form_for_unit_weights():
    from vqtto.chapters import hardness as ch

    g = H.random_graph(9, 0.6, seed=7)
    red = H.reduce_max_cut(g, (3, 3))
    grids = torch.randint(2, (32, 3, 3), generator=torch.Generator().manual_seed(1))
    got = ch.first_order_check(red, grids)
    # the gradient predicts a gain iff a vertex has a neighbour on its own side; a flip truly
    # gains iff more neighbours are on its own side than on the other
    x = grids.view(32, -1)
    a = H.adjacency(g) > 0
    same = ((x[:, :, None] == x[:, None, :]) & a).sum(2)
    diff = ((x[:, :, None] != x[:, None, :]) & a).sum(2)
    assert got["predicted improving"] == pytest.approx(float((same > 0).double().mean()))
    assert got["truly improving"] == pytest.approx(float((same > diff).double().mean()))
