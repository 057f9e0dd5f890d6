"""The MAX-CUT -> latent search reduction, the exact solvers, the searches scored on reduced
instances and the hardness chapter's parameters and result: exact on every assignment, and
refusals of bad input."""

import math

import pytest
import torch

from vqtto.hardness import exact as X
from vqtto import hardness as H
from vqtto.hardness import instance_searches as R


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
    cut = X.brute_force_cut(g, chunk=100, keep_values=True)
    lat = X.brute_force_latent(red, chunk=77, keep_values=True)
    assert cut.values.shape == lat.values.shape == (2 ** g.n,)
    # the affine map holds for all 2^n grids, both ways
    assert torch.allclose(red.cut_from_loss(lat.values), cut.values, rtol=0, atol=1e-10)
    assert torch.allclose(red.loss_from_cut(cut.values), lat.values, rtol=0, atol=1e-13)
    # the optima coincide: the MSE-minimal grid is a maximum cut and vice versa
    assert math.isclose(red.cut_from_loss(lat.best_value), cut.best_value, abs_tol=1e-10)
    assert float(H.cut_values(g, lat.best.view(1, -1))) == pytest.approx(cut.best_value, abs=1e-12)
    best_grid = cut.best.view(1, *grid)
    assert float(red.mse_of_grids(best_grid)) == pytest.approx(lat.best_value, abs=1e-14)
    # a larger cut always means a strictly smaller loss: ranking the grids by cut reverses their
    # ranking by loss (this fails if the map were increasing or not one-to-one on distinct cuts)
    order = torch.argsort(cut.values, stable=True)
    cuts, losses = cut.values[order], lat.values[order]
    rising = cuts[1:] > cuts[:-1] + 1e-12
    assert bool(rising.any())
    assert bool((losses[1:][rising] < losses[:-1][rising]).all())


def test_decoder_is_fully_connected_layer_over_all_pairs():
    # a complete graph: every pair of latent positions shares a pixel, so no locality is assumed
    g = H.graph(4, [(i, j) for i in range(4) for j in range(i + 1, 4)])
    red = H.reduce_max_cut(g, (2, 2))
    assert tuple(red.decoder.layer.weight.shape) == (6, 4)
    assert int((red.decoder.layer.weight != 0).sum(1).min()) == 2
    # K4: maximum cut is 4 (2+2 split), found by both solvers
    assert X.brute_force_cut(g).best_value == 4
    assert red.cut_from_loss(X.brute_force_latent(red).best_value) == pytest.approx(4, abs=1e-5)


def test_known_small_cuts():
    # a triangle can cut at most 2 edges; an even cycle cuts all of its edges
    tri = H.graph(3, [(0, 1), (1, 2), (0, 2)])
    assert X.brute_force_cut(tri).best_value == 2
    c6 = H.graph(6, [(i, (i + 1) % 6) for i in range(6)])
    assert X.brute_force_cut(c6).best_value == 6
    best = X.brute_force_latent(H.reduce_max_cut(c6, (2, 3))).best.flatten()
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
    x = X.assignments(5)
    assert x.shape == (32, 5)
    assert len({tuple(r) for r in x.tolist()}) == 32
    assert torch.equal(X.assignments(5, 10, 13), x[10:13])


def test_search_space_size():
    assert X.search_space_log10(512, 7) == pytest.approx(49 * math.log10(512))
    assert X.search_space_log10(2, 3, 4) == pytest.approx(12 * math.log10(2))


def test_score_grids_is_exact():
    g = H.graph(4, [(0, 1), (1, 2), (2, 3)], [1.0, 2.0, 3.0])
    red = H.reduce_max_cut(g, (2, 2))
    case = R.SearchInstance(red, lambda grids: H.cut_values(g, grids), 6.0, 0.0, -H.adjacency(g) / 2,
                            torch.zeros(4, dtype=torch.float64))
    s = R.score_grids(case, torch.tensor([[[0, 1], [0, 1]], [[0, 0], [0, 0]]]))
    assert s.value.tolist() == [6.0, 0.0]
    assert s.ratio.tolist() == [1.0, 0.0]
    assert s.solved.tolist() == [True, False]


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
    (lambda: X.brute_force_cut(H.random_graph(27, p=0.1)), "n must be <= 26"),
    (lambda: X.brute_force_cut(H.random_graph(4), chunk=0), "chunk must be >= 1"),
    (lambda: X.search_space_log10(0, 7), "k, h and w must be >= 1"),
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
    bb = X.branch_and_bound_latent(red)
    lat = X.brute_force_latent(red)
    assert bb.best_value == pytest.approx(lat.best_value, abs=1e-12)
    assert float(red.mse_of_grids(bb.best.view(1, *red.grid))) == pytest.approx(bb.best_value, abs=1e-12)
    assert 0 < bb.nodes <= 2 ** (n + 1) - 1


def test_branch_and_bound_prunes_and_respects_node_limit():
    red = H.reduce_max_cut(H.random_graph(14, 0.5, seed=5))
    assert X.branch_and_bound_latent(red).nodes < (2 ** 15 - 1) // 4
    with pytest.raises(RuntimeError, match="max_nodes=10"):
        X.branch_and_bound_latent(red, max_nodes=10)


def test_one_flip_local_search_reaches_a_local_optimum():
    g = H.random_graph(12, 0.5, weighted=True, seed=6)
    start = torch.randint(2, (5, 3, 4), generator=torch.Generator().manual_seed(0))
    case = R.cut_instance(H.reduce_max_cut(g, (3, 4)))
    out = R.one_flip_local_search(case.coupling, case.field, start)
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
    g = H.random_graph(9, 0.6, seed=7)
    red = H.reduce_max_cut(g, (3, 3))
    grids = torch.randint(2, (32, 3, 3), generator=torch.Generator().manual_seed(1))
    got = R.first_order_check(red, grids)
    # the gradient predicts a gain iff a vertex has a neighbour on its own side; a flip truly
    # gains iff more neighbours are on its own side than on the other
    x = grids.view(32, -1)
    a = H.adjacency(g) > 0
    same = ((x[:, :, None] == x[:, None, :]) & a).sum(2)
    diff = ((x[:, :, None] != x[:, None, :]) & a).sum(2)
    assert got.predicted_improving == pytest.approx(float((same > 0).double().mean()))
    assert got.truly_improving == pytest.approx(float((same > diff).double().mean()))
    wrong = ((same > 0) & ~(same > diff)).sum() / (same > 0).sum()
    assert got.wrong_among_predicted == pytest.approx(float(wrong))


# --- exact solvers: cost -----------------------------------------------------------------------

def test_growth_per_position_recovers_a_known_exponential():
    ns = list(range(4, 16))
    # 3x per position above the 10 ms threshold; the short runs below it are fixed overheads
    seconds = [1e-3 * 3.0 ** (n - 4) if 1e-3 * 3.0 ** (n - 4) >= 0.01 else 5e-4 for n in ns]
    assert X.growth_per_position(ns, seconds) == pytest.approx(3.0, rel=1e-9)
    assert X.growth_per_position(ns, [2.0 ** n for n in ns], min_seconds=0) == pytest.approx(2.0, rel=1e-9)
    assert X.growth_per_position([4, 6], [1e-4, 0.5]) is None  # one run above the threshold: no fit
    assert X.extrapolated_years(10, 1.0, 2.0, 12) == pytest.approx(4.0 / X.SECONDS_PER_YEAR)


def test_brute_force_enumerates_exactly_two_to_the_n_grids():
    for n in (3, 5, 8):
        red = H.reduce_max_cut(H.random_graph(n, 0.6, seed=n), H.squarest_grid(n))
        decoded, score = [], red.mse_of_grids
        red.mse_of_grids = lambda grids: decoded.append(grids) or score(grids)  # count what is decoded
        lat = X.brute_force_latent(red, chunk=5, keep_values=True)
        grids = torch.cat(decoded).flatten(1)
        assert grids.shape[0] == lat.values.numel() == 2 ** n
        assert torch.unique(grids, dim=0).shape[0] == 2 ** n  # every grid once


def test_search_space_and_enumeration_years():
    assert X.enumeration_years_log10(2, 1, 10, rate=1024 / X.SECONDS_PER_YEAR) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="rate"):
        X.enumeration_years_log10(2, 3, 3, rate=0)


@pytest.mark.parametrize("n,grid", [(12, (3, 4)), (16, (4, 4)), (7, (1, 7)), (18, (3, 6)), (1, (1, 1))])
def test_squarest_grid(n, grid):
    assert H.squarest_grid(n) == grid


def test_verify_reduction_and_time_exact_solvers_agree():
    check = X.verify_reduction(H.reduce_max_cut(H.random_graph(9, 0.5, weighted=True, seed=2), (3, 3),
                                                dtype=torch.float64))
    assert check.holds and check.map_error < X.EXACT_TOL
    assert check.best_grid_cut == pytest.approx(check.cut.best_value, abs=1e-12)
    timing = X.time_exact_solvers([4, 7, 9], 0.5, False, seed=0, progress=False)
    assert [t.n for t in timing] == [4, 7, 9] and [t.grid for t in timing] == [[2, 2], [1, 7], [3, 3]]
    for t in timing:
        g = H.random_graph(t.n, 0.5, seed=t.n)
        assert t.max_cut == X.brute_force_cut(g).best_value
        assert t.latent_grid_is_max_cut and t.bb_agrees
        assert 0 < t.bb_node_share <= 1


# --- searches on reduced instances ------------------------------------------------------------

def test_run_on_instances_scores_every_method_against_the_maximum_cut():
    cases = R.reduced_instances(2, [2, 3], 0.6, False, seed=0)
    runs = R.run_on_instances(cases, starts=3, alphas=[0.5, 2.0], lam=20, random_grids=4, seed=0, device="cpu",
                              progress=False)
    assert list(runs) == ["alg2 α=0.5", "alg2 α=2", "alg3 α=0.5", "alg3 α=2", "greedy", "local-search", "uniform"]
    scores = {name: R.summarise_runs(r) for name, r in runs.items()}
    for name, s in scores.items():
        assert s.runs == 6 and 0 <= s.fraction_exact <= s.instances_solved <= 1
        assert 0 < s.worst_ratio <= s.mean_ratio <= 1 + 1e-12
    # a 6-vertex instance: 1-flip local search and the best of 4 random grids are easy to beat or tie;
    # every local optimum cuts at least half the weight
    assert scores["local-search"].worst_ratio >= 0.5 and scores["local-search"].decoded_per_run is None
    assert scores["uniform"].decoded_per_run == 4
    assert scores["alg2 α=2"].method == "alg2" and scores["alg2 α=2"].alpha == 2.0
    assert R.best_setting(scores, ("alg3",)).startswith("alg3")
    with pytest.raises(ValueError, match="no run of"):
        R.best_setting({"greedy": scores["greedy"]})


def test_summarise_runs_counts_solved_runs_and_instances():
    runs = R.CutRuns("greedy", None, [R.score_cuts(torch.tensor([4.0, 3.0], dtype=torch.float64), 4.0),
                                      R.score_cuts(torch.tensor([1.0, 2.0], dtype=torch.float64), 4.0)], 10.0)
    s = R.summarise_runs(runs)
    assert (s.runs, s.fraction_exact, s.instances_solved) == (4, 0.25, 0.5)
    assert (s.mean_ratio, s.worst_ratio, s.decoded_per_run) == (0.625, 0.25, 2.5)


# --- the chapter: parameters and result ----------------------------------------------------------

@pytest.mark.parametrize("name", ["alphas", "timing_n", "space_ks", "space_grids"])
def test_chapter_refuses_an_empty_list(name):
    from vqtto import params
    from vqtto.book.chapters import hardness as ch

    given = {**params.defaults(ch.PARAMS), name: []}
    with pytest.raises(params.ParameterError, match=f"'{name}' must be a non-empty list"):
        params.validate(given, ch.PARAMS)


def test_chapter_result_decides_its_verdicts_and_round_trips(tmp_path):
    from vqtto import params
    from vqtto.book import report
    from vqtto.book.chapters import hardness as ch

    P = params.validate({**params.defaults(ch.PARAMS), "profile": "smoke", "space_grids": [[2, 3]],
                         "space_ks": [2]}, ch.PARAMS)
    example = X.verify_reduction(H.reduce_max_cut(H.random_graph(6, 0.6, weighted=True, seed=0), (2, 3),
                                                  dtype=torch.float64))
    timing = X.time_exact_solvers([4, 6], 0.5, False, seed=0, progress=False)
    cases = R.reduced_instances(1, [2, 2], 0.6, False, seed=0)
    runs = R.run_on_instances(cases, 2, [1.0], 10, 2, 0, "cpu", progress=False)
    scores = {name: R.summarise_runs(r) for name, r in runs.items()}
    check = R.first_order_check(cases[0].reduction, torch.randint(2, (8, 2, 2)))
    sg_checks = X.verify_random_spin_glasses([[2, 3]], per_grid=2, seed=0)
    sg_timing = X.time_spin_glass_solvers([[2, 2], [2, 3]], seed=0, progress=False)
    sg_runs = R.run_on_instances(R.spin_glass_instances(1, [2, 2], seed=0), 2, [1.0], 10, 2, 0, "cpu", progress=False)
    conv = ch.SpinGlassEvidence(sg_checks, sg_timing, sg_runs)
    result = ch.hardness_result(P, example, timing, runs, check, conv)
    assert result.reduction_holds and result.optimum_matches and result.branch_and_bound_exact
    assert result.verdict.startswith("the claim holds")
    assert result.conv_reduction_holds and result.conv_optimum_matches and result.conv_branch_and_bound_exact
    assert result.conv_map_error < X.EXACT_TOL and result.conv_instances_checked == 2
    assert result.conv_checked_grids == [[2, 3]]
    assert result.decoder_verdicts["fully connected"].startswith("NP-hard: MAX-CUT")
    assert result.decoder_verdicts["convolutional"].startswith("NP-hard: the ground state of a planar")
    assert result.search_space_log10 == {"2x3": {"2": pytest.approx(6 * math.log10(2))}}
    assert result.best_straight_through in ("alg2 α=1", "alg3 α=1")
    assert result.straight_through_beats_random == (
        scores[result.best_straight_through].mean_ratio > scores["uniform"].mean_ratio)
    assert result.searches == scores and set(result.exact_shares) == set(scores) == set(result.spin_glass_exact_shares)
    for name, e in result.exact_shares.items():
        assert e.value == scores[name].fraction_exact and e.low <= e.value <= e.high and e.n == scores[name].runs
        assert e.high - e.low > 0, "an interval, not a point, even at a share of 0 or 1"
    assert "% [" in result.search_verdict and "% [" in result.spin_glass_search_verdict
    report.record(result, tmp_path)
    assert report.load_result(ch.HardnessResult, "smoke", tmp_path) == result

    failed = ch.hardness_result(P, X.ReductionCheck(example.cut, example.latent, 1.0, example.best_grid_cut),
                                timing, runs, check, conv)
    assert not failed.reduction_holds and failed.verdict.startswith("not shown")
    assert failed.decoder_verdicts["fully connected"].startswith("not shown")
    bad = X.SpinGlassCheck(sg_checks[0].grid, sg_checks[0].energy, sg_checks[0].latent, 1.0,
                           sg_checks[0].best_grid_energy, True)
    conv_failed = ch.hardness_result(P, example, timing, runs, check,
                                     ch.SpinGlassEvidence([bad], conv.timing, conv.runs))
    assert not conv_failed.conv_reduction_holds and conv_failed.reduction_holds
    assert conv_failed.verdict.startswith("not shown for the paper's convolutional decoder")
    assert conv_failed.decoder_verdicts["convolutional"].startswith("not shown")
