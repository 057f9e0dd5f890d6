"""Chapter 7, the hardness of latent search (paper, section 4.2 and appendices A.2, A.3).

The chapter's schema, its tables and figures, and its verdicts; the computations behind them are in
:mod:`vqtto.hardness` (the reduction from MAX-CUT, fully connected decoder), :mod:`vqtto.hardness.spin_glass`
(the reduction from the planar spin glass in a field, convolutional decoder), :mod:`vqtto.hardness.exact`
(exact solvers and their cost) and :mod:`vqtto.hardness.instance_searches` (the searches scored against the
known optimum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch

from ...hardness import exact
from .. import paper, report
from ... import stats
from ...hardness.exact import ReductionCheck, SolverComparison, SpinGlassCheck, SpinGlassTiming
from ...params import Param, above, between, chapter_schema, each, grid, nonempty, seed, work
from ..plots import method_color, method_label
from ...hardness.instance_searches import (STRAIGHT_THROUGH, CutRuns, CutSearchScore, FirstOrderCheck, best_setting,
    summarise_runs)


#: A worked-example or search grid: brute force enumerates all 2^(h w) grids of it.
_BRUTE_GRID = grid(3, 20)

PARAMS = chapter_schema({
    "example_grid": Param(list, "latent grid [h, w] of the worked example (all 2^(h w) grids are drawn)", _BRUTE_GRID, default=[3, 4]),
    "space_ks": Param(list, "codebook sizes for the search-space table (paper: 512 and 40)", nonempty(each(between(2, 4096), most=10)), default=[512, 40]),
    "space_grids": Param(list, "latent grids [h, w] for the search-space table (7x7 Fashion-MNIST, ...)", nonempty(each(grid(1, 4096), list, most=10)), default=[[7, 7], [8, 8], [21, 21]]),
    "timing_n": Param(list, "numbers of latent positions (graph vertices) to brute-force and time", nonempty(each(between(3, 24), most=20)), default=[4, 6, 8, 10, 12, 14, 16, 18, 20]),
    "edge_p": Param(float, "edge probability of the random graphs G(n, p)", between(0.05, 1.0), default=0.5),
    "weighted": Param(bool, "random edge weights in [0.1, 1] instead of unit weights", default=False),
    "search_grid": Param(list, "latent grid [h, w] of the instances the gradient searches attack", _BRUTE_GRID, default=[4, 4]),
    "n_instances": Param(int, "random MAX-CUT instances for the search comparison", work(1, smoke=100, quick=1000, full=10000), default=40),
    "starts": Param(int, "random starting latents per instance and search", work(1, smoke=64, quick=256, full=1024), default=8),
    "alphas": Param(list, "step sizes alpha of the straight-through searches (Algorithms 2 and 3)", nonempty(each(above(0.0, 10000.0), float, most=10)), default=[0.1, 1.0, 10.0]),
    "lam": Param(int, "most repeats of one straight-through step (the paper's lambda)", work(1, smoke=1000, quick=2000, full=10000), default=100),
    "random_grids": Param(int, "uniformly random grids per run for the random baseline", work(1, smoke=1024, quick=10000, full=100000), default=32),
    "seed": Param(int, "seed of the random graphs and starting latents", seed(), default=0),
    "sg_check_grids": Param(list, "latent grids [h, w] on which random spin glasses are checked on every grid", nonempty(each(_BRUTE_GRID, list, most=10)), default=[[2, 3], [3, 3], [3, 4]]),
    "sg_check_instances": Param(int, "random spin glasses checked per grid of sg_check_grids", work(1, smoke=20, quick=100, full=1000), default=3),
    "sg_timing_grids": Param(list, "latent grids [h, w] of the spin glasses solved exactly and timed", nonempty(each(_BRUTE_GRID, list, most=10)), default=[[2, 2], [2, 3], [3, 3], [3, 4], [4, 4]]),
    "sg_search_grid": Param(list, "latent grid [h, w] of the spin glasses the gradient searches attack", _BRUTE_GRID, default=[3, 4]),
    "sg_instances": Param(int, "random spin glasses for the search comparison", work(1, smoke=50, quick=500, full=5000), default=8),
})

# Decoded grids per second assumed for the years column of the search-space table.
ENUMERATION_RATE = 1e9
# The grid the brute-force growth is extrapolated to: 7x7, the book's Fashion-MNIST latents.
EXTRAPOLATE_TO = 49


@dataclass
class HardnessResult(report.ChapterResult):
    """What the hardness chapter measured and decided; read by the results page.

    Attributes:
        map_error: largest error of the affine map loss <-> cut over every grid of the worked example.
        example_optimum_matches: the worked example's MSE-minimal grid is a maximum cut.
        optimum_matches: on every timed instance the MSE-minimal grid is a maximum cut.
        branch_and_bound_exact: branch and bound returned the maximum cut on every timed instance.
        reduction_holds: verdict: map_error below :data:`vqtto.hardness.exact.EXACT_TOL` and both optimum checks pass.
        verdict: the paper's claim (section 4.2, A.2) judged from ``reduction_holds``.
        search_space_log10: grid ``"hxw"`` -> ``str(k)`` -> log10 of the number of index grids.
        timing: one :class:`~vqtto.hardness.exact.SolverComparison` per timed ``n``.
        growth_per_position: fitted growth of the brute-force latent search per added position, or
            None when fewer than two runs took 10 ms or more.
        years_for_7x7: that growth extrapolated to a 7x7 grid with k = 2 (years), or None.
        search_grid, n_instances, starts, random_grids, lam: the search comparison's setting.
        searches: run name (method id, with α for straight-through) -> its scores.
        exact_shares: run name -> share of runs solved exactly with its 95% interval (:func:`exact_share`).
        first_order_check: how often the straight-through gradient mispredicts a single flip.
        best_straight_through: run name of the straight-through setting with the highest mean ratio.
        straight_through_beats_random: verdict: that setting's mean ratio is above the random reference's.
        search_verdict: one sentence comparing it with random grids and with 1-flip local search.
        conv_map_error: largest error of the affine map loss <-> energy over every grid of every spin
            glass checked (the worked example and ``sg_check_instances`` per grid of ``conv_checked_grids``).
        conv_checked_grids: the grids ``[h, w]`` of the spin glasses checked on every grid.
        conv_instances_checked: how many spin glasses were checked on every grid.
        conv_optimum_matches: on every checked and every timed spin glass the MSE-minimal grid is a ground state.
        conv_branch_and_bound_exact: branch and bound returned a ground state on every timed spin glass.
        conv_reduction_holds: verdict: conv_map_error below :data:`vqtto.hardness.exact.EXACT_TOL` and both checks pass.
        spin_glass_timing: one :class:`~vqtto.hardness.exact.SpinGlassTiming` per timed grid.
        sg_search_grid, sg_instances: the spin-glass search comparison's setting.
        spin_glass_searches: run name -> its scores on the spin glasses (ratio: ``(E_max - E) / (E_max - E_min)``).
        spin_glass_exact_shares: run name -> :func:`exact_share` on the spin glasses.
        spin_glass_search_verdict: the sentence of ``search_verdict``, on the spin glasses.
        decoder_verdicts: decoder class (``"fully connected"``, ``"convolutional"``) -> NP-hardness verdict.
    """

    CHAPTER: ClassVar[str] = "hardness"
    map_error: float
    example_optimum_matches: bool
    optimum_matches: bool
    branch_and_bound_exact: bool
    reduction_holds: bool
    verdict: str
    search_space_log10: dict[str, dict[str, float]]
    timing: list[SolverComparison]
    growth_per_position: float | None
    years_for_7x7: float | None
    search_grid: list[int]
    n_instances: int
    starts: int
    random_grids: int
    lam: int
    searches: dict[str, CutSearchScore]
    exact_shares: dict[str, stats.Estimate]
    first_order_check: FirstOrderCheck
    best_straight_through: str
    straight_through_beats_random: bool
    search_verdict: str
    conv_map_error: float
    conv_checked_grids: list[list[int]]
    conv_instances_checked: int
    conv_optimum_matches: bool
    conv_branch_and_bound_exact: bool
    conv_reduction_holds: bool
    spin_glass_timing: list[SpinGlassTiming]
    sg_search_grid: list[int]
    sg_instances: int
    spin_glass_searches: dict[str, CutSearchScore]
    spin_glass_exact_shares: dict[str, stats.Estimate]
    spin_glass_search_verdict: str
    decoder_verdicts: dict[str, str]


def search_space_rows(ks, grids, rate: float = ENUMERATION_RATE) -> list[dict]:
    """One row per latent grid: ``log10`` of the number of index grids for each ``k``, and of the
    years enumerating them takes at ``rate`` grids per second."""
    rows = []
    for h, w in grids:
        row = {"latent grid": f"{h}x{w}", "positions": h * w}
        for k in ks:
            row[f"log10 #grids, k={k}"] = round(exact.search_space_log10(k, h, w), 1)
        for k in ks:
            row[f"log10 years, k={k}"] = round(exact.enumeration_years_log10(k, h, w, rate), 1)
        rows.append(row)
    return rows


def _timing_row(t, problem: dict) -> dict:
    """One row of a timing table: the size, the columns ``problem`` names, then the latent solvers'."""
    return {"n": t.n, "grid": "x".join(map(str, t.grid)), **problem, "assignments": 2 ** t.n,
            "latent seconds": t.latent_seconds, "B&B agrees": t.bb_agrees, "B&B nodes": t.bb_nodes,
            "B&B nodes / full tree": round(t.bb_node_share, 4), "B&B seconds": t.bb_seconds}


def exact_timing_rows(timing: list[SolverComparison]) -> list[dict]:
    """The timing table: one row per ``n`` with the three solvers' agreement, times and B&B nodes."""
    return [_timing_row(t, {
        "edges": t.edges, "max cut": t.max_cut, "cut from min MSE": round(t.cut_from_min_mse, 4),
        "latent grid is a max cut": t.latent_grid_is_max_cut, "cut seconds": t.cut_seconds}) for t in timing]


def brute_force_growth(timing: list[SolverComparison]) -> float | None:
    """Fitted growth per added position of the brute-force latent search's time (runs of 10 ms or more)."""
    return exact.growth_per_position([t.n for t in timing], [t.latent_seconds for t in timing])


def exact_timing_figure(timing: list[SolverComparison], conv_timing: list[SpinGlassTiming] | None = None):
    """Brute-force and branch-and-bound wall time (log scale) against the number of latent positions;
    with ``conv_timing``, the same for the spin glasses through the convolutional decoder."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    n = [t.n for t in timing]
    ax.semilogy(n, [t.latent_seconds for t in timing], "o-", color=method_color("exact"),
                label="latent search: decode all $2^n$ grids")
    ax.semilogy(n, [t.cut_seconds for t in timing], "s--", color=method_color("exact"), alpha=0.6,
                label="MAX-CUT: evaluate all $2^n$ labellings")
    ax.semilogy(n, [t.bb_seconds for t in timing], "^-.", color=method_color("branch-and-bound"),
                label="branch and bound on the loss (interval bounds)")
    if conv_timing:
        m = [t.n for t in conv_timing]
        ax.semilogy(m, [t.latent_seconds for t in conv_timing], "o:", color=method_color("exact"), mfc="white",
                    label="convolutional: decode all $2^n$ grids")
        ax.semilogy(m, [t.bb_seconds for t in conv_timing], "^:", color=method_color("branch-and-bound"), mfc="white",
                    label="convolutional: branch and bound")
    ax.set_xlabel("latent positions n = h·w, k = 2")
    ax.set_ylabel("wall time (seconds, log scale)")
    ax.set_title("Exact latent search: time against grid size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _describe(score: CutSearchScore, random_grids: int) -> str:
    what = method_label(score.method)
    return f"{what}, best of {random_grids} grids" if score.method == "uniform" else what


def exact_share(runs: CutRuns) -> stats.Estimate:
    """The share of ``runs`` whose best grid is optimal, with its 95% interval.

    The starts on one instance are not independent draws (an easy instance is easy for every
    start), so the interval counts them clustered by instance (:func:`vqtto.stats.share_estimate`).
    """
    instance = torch.cat([torch.full((s.solved.numel(),), i) for i, s in enumerate(runs.per_instance)])
    return stats.share_estimate(runs.solved(), clusters=instance)


def cut_search_rows(runs: dict[str, CutRuns], random_grids: int, ratio: str = "cut / max cut",
                    reads: str = "the graph") -> list[dict]:
    """The search table: per run name, the share of runs solved exactly (95% interval, clustered by
    instance) and the ratios reached (``ratio`` names them; ``reads`` says what local search reads
    instead of decoding)."""
    rows = []
    for name, r in runs.items():
        s = summarise_runs(r)
        rows.append({
            "method": name, "what": _describe(s, random_grids), "runs": s.runs,
            "share of runs exact": exact_share(r).percent(1),
            "instances solved by some start": round(s.instances_solved, 3),
            f"mean {ratio}": round(s.mean_ratio, 4), f"worst {ratio}": round(s.worst_ratio, 4),
            "decoded images per run": f"— (uses {reads})" if s.decoded_per_run is None else round(s.decoded_per_run, 1),
        })
    return rows


def shown_runs(scores: dict[str, CutSearchScore]) -> list[str]:
    """The run names to draw: the best step size of each straight-through algorithm, then every other method."""
    best = [best_setting(scores, (m,)) for m in STRAIGHT_THROUGH if any(s.method == m for s in scores.values())]
    return best + [name for name, s in scores.items() if s.method not in STRAIGHT_THROUGH]


def cut_ratio_figure(runs: dict[str, CutRuns], names: list[str],
                     quality: str = "cut weight of the best grid found / maximum cut"):
    """Left: distribution (ECDF) of the ratio (``quality``, e.g. cut / max cut) over all runs; right:
    share of runs solved exactly, with its 95% interval clustered by instance (:func:`exact_share`)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for name in names:
        r = np.sort(runs[name].ratios().numpy())
        ax.step(r, np.arange(1, r.size + 1) / r.size, where="post", lw=2, color=method_color(runs[name].method),
                label=name)
    ax.axvline(1.0, color=method_color("exact"), ls=":", label="exact optimum")
    ax.set_xlabel(quality)
    ax.set_ylabel("fraction of runs with at most this ratio")
    ax.set_title("Distribution of the quality reached")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    shares = [exact_share(runs[name]) for name in names]
    solved = [e.value for e in shares]
    whiskers = [[e.value - e.low for e in shares], [e.high - e.value for e in shares]]
    bx.barh(range(len(names)), solved, xerr=whiskers, capsize=3, ecolor="0.3",
            color=[method_color(runs[name].method) for name in names])
    bx.set_yticks(range(len(names)), names, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    bx.set_xlabel("share of runs that reach the exact optimum (95% interval)")
    bx.set_title("Solved exactly")
    bx.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def _one_of(scores: dict[str, CutSearchScore], method: str) -> str:
    return next(name for name, s in scores.items() if s.method == method)


def cut_search_verdict(runs: dict[str, CutRuns], random_grids: int) -> str:
    """A sentence comparing the best straight-through setting with random guessing and local search
    (shares solved exactly with their 95% intervals, :func:`exact_share`)."""
    scores = {name: summarise_runs(r) for name, r in runs.items()}
    best_name = best_setting(scores)
    best, rnd = scores[best_name], scores[_one_of(scores, "uniform")]
    loc_name = _one_of(scores, "local-search")
    loc = scores[loc_name]
    cmp = "above" if best.mean_ratio > rnd.mean_ratio else "at or below"
    return (f"The best straight-through setting, {best_name}, reaches the exact optimum in "
            f"{exact_share(runs[best_name]).percent(1)} of runs (95% interval, starts clustered by instance) with a "
            f"mean ratio of {best.mean_ratio:.3f}, {cmp} the {rnd.mean_ratio:.3f} of the best of {random_grids} random "
            f"grids (uniform); 1-flip local search (local-search) solves {exact_share(runs[loc_name]).percent(1)} of "
            f"runs (mean ratio {loc.mean_ratio:.3f}).")


def decoder_verdicts(fc_holds: bool, conv_holds: bool, conv_instances: int) -> dict[str, str]:
    """The NP-hardness verdict for each decoder class, given whether its reduction's checks passed."""
    fc = ("NP-hard: MAX-CUT reduces to latent search with k = 2, D = 1 and one fully connected linear layer "
          "(MSE = (W − cut) / (4 w_max |E|) on every grid checked)") if fc_holds else (
        "not shown: the MAX-CUT reduction check failed")
    conv = ("NP-hard: the ground state of a planar ±J spin glass in a field (Barahona 1982) reduces to latent "
            "search with k = 2, D = 1 and one fixed decoder (stride-2 ConvTranspose2d, ReLU, 1x1 Conv2d); "
            f"MSE = (C + E/4) / P on every grid of {conv_instances} spin glasses checked") if conv_holds else (
        "not shown: the spin-glass reduction check failed")
    return {"fully connected": fc, "convolutional": conv}


def reduction_verdict(holds: bool, conv_holds: bool = True) -> str:
    """The verdict on the paper's NP-hardness claim, given whether the MAX-CUT reduction (fully connected
    decoder) and the spin-glass reduction (convolutional decoder, the paper's kind) checks passed."""
    if not conv_holds:
        known = "it holds for fully connected decoders (MAX-CUT reduction)" if holds else "no reduction check passed"
        return f"not shown for the paper's convolutional decoder: the spin-glass reduction check failed; {known}"
    if not holds:
        return "not shown: the reduction check failed"
    return (f"the claim holds, for fully connected decoders (MAX-CUT reduces to latent search) and for "
            f"convolutional decoders like the paper's (the planar spin glass in a field reduces to it), both "
            f"reductions checked in the chapter; the paper's argument ({paper.NP_HARD.value}) does not prove it: "
            f"{paper.NP_HARD.note}")


@dataclass
class SpinGlassEvidence:
    """What the convolutional-decoder sections computed, handed to :func:`hardness_result`.

    Attributes:
        checks: :func:`vqtto.hardness.exact.verify_spin_glass` of the worked example and of the checked instances.
        timing: :func:`vqtto.hardness.exact.time_spin_glass_solvers` on ``P.sg_timing_grids``.
        runs: run name -> :func:`vqtto.hardness.instance_searches.run_on_instances`' runs on the spin glasses.
    """

    checks: list[SpinGlassCheck]
    timing: list[SpinGlassTiming]
    runs: dict[str, CutRuns]


def hardness_result(P, example: ReductionCheck, timing: list[SolverComparison],
                    runs: dict[str, CutRuns], first_order: FirstOrderCheck,
                    conv: SpinGlassEvidence) -> HardnessResult:
    """The chapter's typed result, with its verdicts decided here.

    Args:
        P: the chapter's validated parameters.
        example: the worked example's check on every grid (:func:`vqtto.hardness.exact.verify_reduction`).
        timing: :func:`vqtto.hardness.exact.time_exact_solvers` on ``P.timing_n``.
        runs: run name -> :func:`vqtto.hardness.instance_searches.run_on_instances`' runs (MAX-CUT).
        first_order: :func:`vqtto.hardness.instance_searches.first_order_check` on the first instance.
        conv: the convolutional decoder's checks, timings and search scores.
    """
    scores = {name: summarise_runs(r) for name, r in runs.items()}
    sg_scores = {name: summarise_runs(r) for name, r in conv.runs.items()}
    optimum_matches = all(t.latent_grid_is_max_cut for t in timing)
    holds = example.holds and optimum_matches
    conv_map_error = max(c.map_error for c in conv.checks)
    conv_optimum = (all(c.is_ground_state for c in conv.checks)
                    and all(t.latent_grid_is_ground_state for t in conv.timing))
    conv_bb = all(t.bb_agrees for t in conv.timing)
    conv_holds = conv_map_error < exact.EXACT_TOL and conv_optimum and conv_bb
    factor = brute_force_growth(timing)
    years = None if factor is None else exact.extrapolated_years(timing[-1].n, timing[-1].latent_seconds,
                                                                   factor, EXTRAPOLATE_TO)
    best = best_setting(scores)
    return HardnessResult(
        profile=P.profile, map_error=example.map_error, example_optimum_matches=example.optimum_matches,
        optimum_matches=optimum_matches, branch_and_bound_exact=all(t.bb_agrees for t in timing),
        reduction_holds=holds, verdict=reduction_verdict(holds, conv_holds),
        search_space_log10={f"{h}x{w}": {str(k): exact.search_space_log10(k, h, w) for k in P.space_ks}
                            for h, w in P.space_grids},
        timing=timing, growth_per_position=factor, years_for_7x7=years,
        search_grid=list(P.search_grid), n_instances=P.n_instances, starts=P.starts,
        random_grids=P.random_grids, lam=P.lam, searches=scores,
        exact_shares={name: exact_share(r) for name, r in runs.items()}, first_order_check=first_order,
        best_straight_through=best,
        straight_through_beats_random=scores[best].mean_ratio > scores[_one_of(scores, "uniform")].mean_ratio,
        search_verdict=cut_search_verdict(runs, P.random_grids),
        conv_map_error=conv_map_error,
        conv_checked_grids=[list(g) for g in dict.fromkeys(tuple(c.grid) for c in conv.checks)],
        conv_instances_checked=len(conv.checks), conv_optimum_matches=conv_optimum,
        conv_branch_and_bound_exact=conv_bb, conv_reduction_holds=conv_holds, spin_glass_timing=conv.timing,
        sg_search_grid=list(P.sg_search_grid), sg_instances=P.sg_instances, spin_glass_searches=sg_scores,
        spin_glass_exact_shares={name: exact_share(r) for name, r in conv.runs.items()},
        spin_glass_search_verdict=cut_search_verdict(conv.runs, P.random_grids),
        decoder_verdicts=decoder_verdicts(holds, conv_holds, len(conv.checks)))


def spin_glass_check_rows(checks: list[SpinGlassCheck]) -> list[dict]:
    """One row per spin glass checked on every grid: its size, ground state and the map's largest error."""
    return [{
        "grid": "x".join(map(str, c.grid)), "grids enumerated": c.latent.values.numel(),
        "ground energy": c.energy.best_value, "highest energy": float(c.energy.values.max()),
        "energy of the MSE-minimal grid": c.best_grid_energy, "largest map error": f"{c.map_error:.1e}",
        "holds": c.holds,
    } for c in checks]


def spin_glass_timing_rows(timing: list[SpinGlassTiming]) -> list[dict]:
    """The spin-glass timing table: one row per grid with the three solvers' agreement, times and B&B nodes."""
    return [_timing_row(t, {
        "couplings": t.edges, "ground energy": t.ground_energy, "energy from min MSE": round(t.energy_from_min_mse, 4),
        "latent grid is a ground state": t.latent_grid_is_ground_state, "energy seconds": t.energy_seconds})
        for t in timing]


def spin_glass_figure(red, check: SpinGlassCheck):
    """Left: the target image; middle: the decoded MSE-minimal grid; right: every grid's MSE against its energy."""
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.6]},
                                     layout="constrained")
    with torch.no_grad():
        best = red.decoder.decode_indices(check.latent.best.view(1, *red.grid))[0, 0].double().numpy()
    target = red.target[0, 0].double().numpy()
    lo, hi = min(target.min(), 0.0), max(target.max(), 1.0)
    for axis, image, title in ((ax, target, "target t (the instance)"), (bx, best, "decoded MSE-minimal grid")):
        shown = axis.imshow(image, cmap="coolwarm", vmin=lo, vmax=hi)
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    fig.colorbar(shown, ax=[ax, bx], shrink=0.8, label="pixel value")
    cx.plot(check.energy.values.numpy(), check.latent.values.numpy(), "o", ms=3, alpha=0.3, color="0.4",
            label=f"all {check.energy.values.numel()} index grids")
    xs = np.array([check.energy.best_value, float(check.energy.values.max())])
    cx.plot(xs, red.loss_from_energy(xs), "-", lw=1, color="black", label="MSE = (C + E/4) / P")
    cx.plot([check.energy.best_value], [check.latent.best_value], "*", ms=14, color=method_color("exact"),
            label="ground state = MSE-minimal grid")
    cx.set_xlabel("energy E(s) of the spin configuration")
    cx.set_ylabel("MSE of the decoded grid to the target")
    cx.set_title("Convolutional decoder: loss is affine in the energy", fontsize=10)
    cx.grid(alpha=0.3)
    cx.legend(fontsize=8)
    return fig


def reduction_map_figure(red, cut: exact.Exact, lat: exact.Exact):
    """Every assignment's MSE against its cut weight: all ``2^n`` points on one falling line."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(cut.values.numpy(), lat.values.numpy(), "o", ms=3, alpha=0.3, color="0.4",
            label=f"all {cut.values.numel()} index grids")
    xs = np.array([0.0, red.graph.total_weight])
    ax.plot(xs, red.loss_from_cut(xs), "-", lw=1, color="black", label="MSE = (W − cut) / (4 w_max E)")
    ax.plot([cut.best_value], [lat.best_value], "*", ms=14, color=method_color("exact"), label="optimum of both")
    ax.set_xlabel("cut weight of the labelling")
    ax.set_ylabel("MSE of the decoded grid to the target")
    ax.set_title("Latent loss is an exact affine function of the cut")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def max_cut_figure(red, labels: torch.Tensor, title: str):
    """The graph on its latent grid, vertices coloured by their index, cut edges solid, uncut dashed."""
    h, w = red.grid
    x = labels.reshape(-1).tolist()
    pos = {i: (i % w, -(i // w)) for i in range(red.graph.n)}
    bend = np.linspace(0, 1, 21)
    fig, ax = plt.subplots(figsize=(1.3 * w + 1.5, 1.3 * h + 0.8))
    for (i, j), wt in zip(red.graph.edges.tolist(), red.graph.weights.tolist()):
        cut = x[i] != x[j]
        (xi, yi), (xj, yj) = pos[i], pos[j]
        # a slightly bent edge (quadratic Bezier), so edges along a row or column stay apart
        mx, my = (xi + xj) / 2 - 0.15 * (yj - yi), (yi + yj) / 2 + 0.15 * (xj - xi)
        px = (1 - bend) ** 2 * xi + 2 * (1 - bend) * bend * mx + bend ** 2 * xj
        py = (1 - bend) ** 2 * yi + 2 * (1 - bend) * bend * my + bend ** 2 * yj
        ax.plot(px, py, "-" if cut else ":", color="#d62728" if cut else "#999999",
                lw=0.8 + 1.5 * wt / float(red.graph.weights.max()), zorder=1)
    for i, (px, py) in pos.items():
        ax.scatter([px], [py], s=320, c="black" if x[i] else "white", edgecolors="black", zorder=2)
        ax.text(px, py, str(x[i]), ha="center", va="center", color="white" if x[i] else "black", fontsize=9, zorder=3)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    ax.set_aspect("equal")
    fig.tight_layout()
    return fig
