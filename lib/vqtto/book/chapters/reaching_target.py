"""Chapter 3, searching that reaches the target: the field's discrete optimisers on one table.

The searches live in :mod:`vqtto.search`; this module holds the chapter's parameters, which
method runs with which settings (tuned on validation pairs), success-against-cost curves, the
exact-optimum and certificate tables, and the chapter's typed result with its verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ... import search, stats
from ...data import DATASETS
from ...params import Param, above, between, chapter_schema, each, nonempty, one_of, seed, work
from ..plots import method_color, method_label
from ..report import ChapterResult
from ...tasks.pair_benchmark import (  # problem, reported_and_validation, best_known: the notebook's
    Problem, best_at, best_known, gap_to_best_known, problem, reported_and_validation, run_method, time_quantile,
    time_to_target)

#: The methods of the chapter, each at a budget of decoder-call equivalents per pair.
METHOD_IDS = ("alg2-restarts", "alg2-tabu", "relaxed", "relaxed-annealed", "relaxed-local", "gwg", "dmala", "dmala-codebook",
              "pas-sa", "screened-sa")
#: Those that take a mask of movable positions with their own chains (the exact sub-problems).
MASKABLE = tuple(m for m in METHOD_IDS if m in search.registry.supporting(movable=True, chains=True))
#: Those that keep frozen positions at all (the exact sub-problems run them all).
MOVABLE = tuple(m for m in METHOD_IDS if m in search.registry.supporting(movable=True))
#: The book's search where only a few positions are free (it predicts every assignment of them, so it
#: runs on the exact sub-problems only): the sub-problem target is judged on it.
FEW_FREE = "surrogate"

PARAMS = chapter_schema({
    "dataset": Param(str, "data set of the searched VQ-VAE", one_of(*DATASETS), default="fashion-mnist"),
    "k": Param(int, "codebook size of the main model (the paper's 512)", between(2, 4096), default=512),
    "k_small": Param(int, "also run the best method and the baseline on this codebook (None: skip)", between(2, 4096),
                     nullable=True, default=40),
    "pair_draw": Param(int, "pairs drawn with pair_seed as chapter 2 draws them (its n_pairs); the first n_pairs are searched",
                       between(1, 10000), default=200),
    "n_pairs": Param(int, "reported source-target pairs (paper: 200)", work(1, smoke=32, quick=500, full=5000), default=96),
    "pair_seed": Param(int, "seed of the reported pairs (chapter 2's)", seed(), default=0),
    "val_pairs": Param(int, "validation pairs every setting is tuned on (never the reported ones)", work(1, smoke=16, quick=200, full=1000), default=12),
    "val_seed": Param(int, "seed of the validation pairs (must differ from pair_seed)", seed(), default=1),
    "methods": Param(list, "methods compared (ids of vqtto.book.plots.METHODS)", nonempty(each(one_of(*METHOD_IDS), str, most=len(METHOD_IDS))),
                     default=list(METHOD_IDS)),
    "budgets": Param(list, "decoder-call equivalents per pair at which methods are compared (floats, the last is the run's)",
                     nonempty(each(work(0.0, smoke=600.0, quick=20000.0, full=100000.0, lo_open=True), float, most=10)), default=[100.0, 300.0, 1000.0]),
    "chains": Param(int, "chains per pair of the samplers", between(1, 64), default=2),
    "temperatures": Param(list, "sampler temperatures tried on the validation pairs (units of the start loss)",
                          nonempty(each(above(0.0, 10.0), float, most=10)), default=[0.002, 0.02]),
    "relaxed_noises": Param(list, "Gumbel noise scales tried for the annealed relaxed search (floats, at least 0)",
                            nonempty(each(between(0.0, 10.0), float, most=10)), default=[0.5, 2.0]),
    "restart_noise": Param(float, "noise of Algorithm 2's restarts (units of the latents' std)", between(0.0, 10.0), default=0.5),
    "polish_m": Param(int, "candidates decoded per round by the final screened polish", between(1, 4096), default=64),
    "polish_rounds": Param(int, "most rounds of the final polish", work(1, smoke=100, quick=1000, full=10000), default=20),
    "sub_k": Param(int, "codebook size of the exact sub-problems", between(2, 512), default=40),
    "sub_m": Param(list, "free positions per sub-problem (k**m grids are enumerated per pair)", nonempty(each(between(1, 3), int, most=3)),
                   default=[2]),
    "sub_pairs": Param(int, "pairs given exact sub-problems", work(1, smoke=16, quick=200, full=1000), default=96),
    "sub_budget": Param(float, "decoder-call equivalents per pair of each method on a sub-problem", work(0.0, smoke=600.0, quick=20000.0, full=100000.0, lo_open=True), default=150.0),
    "single_budget": Param(float, "decoder-call equivalents per pair on the one-position sub-problems of the main model (k grids each; None: skip)",
                           work(0.0, smoke=600.0, quick=20000.0, full=100000.0, lo_open=True), nullable=True, default=64.0),
    "reference_budget": Param(float, "decoder-call equivalents per pair of the long run that sets the best-known loss L*",
                              work(0.0, smoke=2000.0, quick=20000.0, full=100000.0, lo_open=True), default=20000.0),
    "reference_pairs": Param(int, "first reported pairs given the long run and the gap to L* (0: skip)",
                             work(0, smoke=8, quick=100, full=1000), default=24),
    "frontier_budgets": Param(list, "more budgets at which the best method runs on the long run's pairs, against L* (floats; []: skip)",
                              each(work(0.0, smoke=2000.0, quick=20000.0, full=100000.0, lo_open=True), float, most=5),
                              default=[2000.0, 5000.0]),
    "split_parts": Param(int, "runs the best method's budget is split into, from diverse starts, as the restart control (1: skip)",
                         between(1, 16), default=2),
    "cert_pairs": Param(int, "pairs whose best grid gets the radius-1 certificate (0: skip)", work(0, smoke=8, quick=100, full=1000), default=2),
})


@dataclass(frozen=True)
class Display:
    """What the chapter draws, per profile: display only."""

    n_show: int      # traversals drawn (the first pairs, as chapter 2's Figure 4)
    max_cols: int    # most reconstructions per traversal row
    n_moves: int     # random moves per pair in the figure of the first-order table
    explorer_pairs: int = 2   # pairs offered in the method explorer


DISPLAY = {
    "smoke": Display(n_show=2, max_cols=6, n_moves=16, explorer_pairs=1),
    "quick": Display(n_show=4, max_cols=12, n_moves=64, explorer_pairs=2),
    "full": Display(n_show=4, max_cols=12, n_moves=256, explorer_pairs=3),
}


# --- the pairs -----------------------------------------------------------------------------------

# --- the methods ---------------------------------------------------------------------------------

def candidate_settings(method: str, temperatures: Sequence[float], relaxed_noises: Sequence[float],
                       restart_noise: float) -> list[dict]:
    """The settings tried for ``method`` on the validation pairs."""
    if method in MASKABLE:
        return [{"temperature": float(t)} for t in temperatures]
    if method == "relaxed-annealed":
        return [{"noise": float(s)} for s in relaxed_noises]
    if method == "alg2-restarts":
        return [{"noise": restart_noise}]
    return [{}]


def tune(methods: Sequence[str], val: Problem, budget: float, chains: int, grids: Mapping[str, list[dict]]):
    """Each method's setting with the largest share at R <= 1 (then lowest median R) on the validation
    pairs; ``(settings, rows)``. A method with a single candidate setting is not run."""
    settings, rows = {}, []
    for m in methods:
        if len(grids[m]) == 1:  # nothing to choose: no validation run
            settings[m] = grids[m][0]
            rows.append({"method": m, "setting": str(grids[m][0]) or "-", "median R (validation)": "not tuned",
                         "share R <= 1 (validation)": "-"})
            continue
        scored = []
        for s in grids[m]:
            r = run_method(m, val, budget, s, chains).best_losses / val.reference
            scored.append((stats.median(r), stats.share(r <= 1), s))
            rows.append({"method": m, "setting": str(s) or "-", "median R (validation)": round(scored[-1][0], 3),
                         "share R <= 1 (validation)": f"{scored[-1][1]:.0%}"})
        settings[m] = min(scored, key=lambda x: (-x[1], x[0]))[2]
    return settings, rows


# --- success against cost -------------------------------------------------------------------------

def curve_points(trace: search.SearchTrace, reference: torch.Tensor, n_points: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Share of pairs at R <= 1 against decoder-call equivalents per pair (``n_points`` log-spaced)."""
    top = max(float(c.max()) for c in trace.costs)
    xs = np.unique(np.geomspace(3, max(4.0, top), n_points))
    r = best_at(trace, xs.tolist()) / reference.double()[:, None]
    return xs, (r <= 1).double().mean(0).numpy()


def summary_rows(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, budgets: Sequence[float]) -> list[dict]:
    """One row per method: share at R <= 1 per budget and median R, each with its 95% interval over pairs,
    cost and time."""
    rows = []
    for name, tr in traces.items():
        r = tr.best_losses.double() / reference.double()
        med = stats.median_estimate(r)
        row = {"method": method_label(name)}
        at = (best_at(tr, budgets) / reference.double()[:, None]) <= 1
        for j, b in enumerate(budgets):
            row[f"R <= 1 at {b:g}"] = stats.share_estimate(at[:, j]).percent()
        ttt = time_to_target(tr, reference)
        row.update({"median R": round(med.value, 3), "95% interval": f"[{med.low:.3f}, {med.high:.3f}]",
                    "ended in a loop": f"{tr.fraction('loop'):.0%}",
                    "equivalents per pair": round(tr.decoder_equivalents / len(tr), 1),
                    "wall time per pair": f"{tr.seconds / len(tr):.3g} s",
                    "time to R <= 1, median / 90% (per pair)": f"{time_quantile(ttt, 0.5):.3g} s / {time_quantile(ttt, 0.9):.3g} s"})
        rows.append(row)
    return rows


def success_figure(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, budgets: Sequence[float], title: str):
    """The chapter's main figure: share of pairs at R <= 1 against decoder-call equivalents per pair."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, tr in traces.items():
        xs, ys = curve_points(tr, reference)
        ax.step(xs, ys, where="post", color=method_color(name), lw=2.2 if name == "alg2-restarts" else 1.6,
                ls="--" if name == "alg2-restarts" else "-", label=method_label(name))
    for b in budgets:
        ax.axvline(b, color="k", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("decoder-call equivalents per pair (forward 1, forward + backward 3; log scale)")
    ax.set_ylabel("share of pairs with R <= 1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def best_method(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor) -> str:
    """The method with the largest share at R <= 1 (then the lowest median R) at the run's budget."""
    def key(name):
        r = traces[name].best_losses.double() / reference.double()
        return (-stats.share(r <= 1), stats.median(r))
    return min(traces, key=key)


# --- the first-order table ---------------------------------------------------------------------

def table_figure(check: Mapping[str, torch.Tensor], title: str):
    """Predicted (table) against true loss change of random single moves, and how the table ranks them."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    p, t = check["predicted"].flatten().numpy(), check["true"].flatten().numpy()
    axes[0].scatter(p, t, s=6, alpha=0.4)
    lim = [min(p.min(), t.min()), max(p.max(), t.max())]
    axes[0].plot(lim, lim, "k:", lw=0.8)
    axes[0].set_xlabel("predicted change D[p, j]")
    axes[0].set_ylabel("true change of the loss")
    better = t < 0
    rank = check["rank"].flatten().numpy()
    bins = np.unique(np.geomspace(1, max(2, rank.max() + 1), 20).round())
    axes[1].hist([rank[better] + 1, rank[~better] + 1], bins=bins, label=["truly better", "truly worse"], stacked=True)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("rank of the move in the table (1 = most promising; log scale)")
    axes[1].set_ylabel("random moves")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- exact references ----------------------------------------------------------------------------

@dataclass
class ExactRow:
    """One method on the sub-problems with m free positions: how often it found the exact optimum."""

    m: int
    k: int
    method: str
    found: stats.Estimate    # share of pairs at the optimum, with its 95% interval
    median_gap: float
    pairs: int
    grids_per_pair: int
    budget: float = math.nan  # decoder-call equivalents per pair each method had


def exact_rows(model, pb: Problem, m: int, methods: Sequence[str], settings: Mapping[str, dict], budget: float,
               chains: int, seed: int = 0) -> tuple[list[ExactRow], float]:
    """Enumerate each pair's sub-problem (own code fixed but m positions) and score each method on it."""
    with torch.no_grad():
        own = model.nearest(model.encode(pb.targets))
        src = model.nearest(pb.z)
    h, w = own.shape[1:]
    pos = search.free_positions(len(pb.targets), h, w, m, seed=seed)
    sub = search.enumerate_subproblem(model, pb.loss, own, pos.to(own.device))
    mask = search.free_mask(pos, h, w).to(own.device)
    start = torch.where(mask, src, own)
    rows = []
    for name in methods:
        tr = run_on_subproblem(name, pb, start, mask, budget, settings.get(name, {}), chains, seed)
        out = search.optimum_rate(tr.best_losses, sub)
        n = len(pb.targets)
        found = stats.Estimate(out["found"], *stats.share_interval(round(out["found"] * n), n), n)
        rows.append(ExactRow(m=m, k=model.codebook.shape[0], method=name, found=found,
                             median_gap=out["median gap"], pairs=len(pb.targets), grids_per_pair=sub.n_grids))
    return rows, sub.seconds


def exact_cases(cases: Sequence[tuple], pb_of, methods: Sequence[str], settings: Mapping[str, dict],
                chains: int) -> tuple[list[ExactRow], float]:
    """:func:`exact_rows` for each ``(model, m, budget)`` of ``cases``; ``pb_of(model)`` gives its
    :class:`Problem`. Returns all rows and the seconds the enumerations took."""
    rows, seconds = [], 0.0
    for model, m, budget in cases:
        r, secs = exact_rows(model, pb_of(model), m, methods, settings, budget, chains)
        rows, seconds = rows + [replace(x, budget=budget) for x in r], seconds + secs
    return rows, seconds


def run_on_subproblem(method: str, pb: Problem, start: torch.Tensor, movable: torch.Tensor, budget: float,
                      setting: Mapping, chains: int, seed: int = 0) -> search.SearchTrace:
    """``method`` on the sub-problem: from the grids ``start`` ``(B, h, w)``, only ``movable`` ``(B, h, w)``
    free. Chain methods get ``start`` per chain; the others start from its codes' latents ``(B, D, h, w)``."""
    if search.registry.get(method).chains:
        return run_method(method, pb, budget, setting, chains, seed, start=start, movable=movable)
    z = pb.model.codebook[start].permute(0, 3, 1, 2).contiguous()
    return run_method(method, replace(pb, z=z), budget, setting, chains, seed, movable=movable)


def exact_table(rows: Sequence[ExactRow]) -> list[dict]:
    return [{"k": r.k, "free positions m": r.m, "grids per pair": f"{r.grids_per_pair:,}", "method": method_label(r.method),
             "equivalents per pair": f"{r.budget:g}", "found the exact optimum": r.found.percent(), "median gap when missed": f"{r.median_gap:.2%}",
             "pairs": r.pairs} for r in rows]


def certificate_rows(cert: search.Certificate, method: str) -> list[dict]:
    return [{"method": method_label(method), "pair": i, "neighbours decoded": cert.neighbours,
             "1-move local optimum": bool(cert.local_optimum[i]), "better neighbours": int(cert.better_neighbours[i]),
             "best neighbour improves the loss by": f"{max(0.0, float(cert.improvement[i])):.2%}"}
            for i in range(len(cert.loss))]


# --- the gap to the best-known loss ----------------------------------------------------------------

@dataclass
class GapRow:
    """One method's gap ``L / L* - 1`` to the best-known loss over the first ``pairs`` reported pairs
    (:func:`vqtto.tasks.pair_benchmark.gap_to_best_known`): median, 90th percentile, share within 1%."""

    method: str
    median: float
    p90: float
    within_1pct: stats.Estimate
    pairs: int


def gap_rows(gaps: Mapping[str, torch.Tensor]) -> list[GapRow]:
    """:class:`GapRow` per method from ``gaps[method]`` ``(n,)``."""
    return [GapRow(m, stats.median(g), stats.quantile(g, 0.9), stats.share_estimate(g <= 0.01), len(g))
            for m, g in gaps.items()]


def gap_table(rows: Sequence[GapRow]) -> list[dict]:
    return [{"method": method_label(r.method), "median gap to L*": f"{r.median:.1%}", "90th percentile": f"{r.p90:.1%}",
             "within 1% of L*": r.within_1pct.percent(), "pairs": r.pairs} for r in rows]


@dataclass
class Reference:
    """The long run that sets ``L*``: its method, budget per pair, pairs and median R (with its interval)."""

    method: str
    budget: float
    pairs: int
    median_r: stats.Estimate


def reference_summary(method: str, budget: float, long_run: torch.Tensor, reference: torch.Tensor) -> Reference:
    """:class:`Reference` of the long run's losses ``(n,)`` against the first n yardsticks of ``reference``."""
    r = long_run.double() / reference[:len(long_run)].double()
    return Reference(method, budget, len(long_run), stats.median_estimate(r))


@dataclass
class FrontierRow:
    """The best method at one budget on the long run's pairs: its median R and its gap to ``L*``."""

    budget: float
    median_r: stats.Estimate
    median_gap: float
    within_1pct: stats.Estimate


def budget_frontier(first: Problem, method: str, budgets: Sequence[float], at_main: torch.Tensor, main_budget: float,
                    lstar: torch.Tensor, progress: bool = False) -> list[FrontierRow]:
    """``method`` at each of ``budgets`` (runs cached like ``L*``) and at the chapter's budget (``at_main``, its
    losses ``(n,)`` on the same pairs), each against ``L*`` (``lstar`` ``(n,)``, itself the last row): how much
    budget the gap to the best known needs. ``L*`` here is the lowest loss any of these runs found."""
    runs = {float(main_budget): at_main.double().cpu()}
    for b in budgets:
        runs[float(b)] = best_known(first, b, method=method, progress=progress).double()
    best = torch.stack([lstar.double(), *runs.values()]).min(0).values
    runs = dict(sorted(runs.items()))
    ref = first.reference.double().cpu()
    return [FrontierRow(b, stats.median_estimate(l / ref), stats.median(l / best - 1), stats.share_estimate(l / best - 1 <= 0.01))
            for b, l in runs.items()]


def frontier_table(rows: Sequence[FrontierRow]) -> list[dict]:
    return [{"equivalents per pair": f"{r.budget:,.0f}", "median R": r.median_r.text(".2f"),
             "median gap to L*": f"{r.median_gap:.1%}", "within 1% of L*": r.within_1pct.percent()} for r in rows]


@dataclass
class SplitRow:
    """The best method as ``parts`` runs sharing ``budget`` (the best of them per pair) against one run at
    ``budget``: share at R <= 1, median R, and the one run's share minus the split's (paired); then the same
    runs with their fusion (:func:`vqtto.search.fuse_by_region`, one decode) kept where it is better:
    its share at R <= 1, the one run's lead over it, and the share of pairs where the fused grid beat every run."""

    parts: int
    budget: float
    share: stats.Estimate
    median_r: stats.Estimate
    lead: stats.Estimate
    fused_share: stats.Estimate | None = None
    fused_lead: stats.Estimate | None = None
    fusion_helped: stats.Estimate | None = None


@dataclass
class Split:
    """Per pair ``(B,)``: the best loss of the split runs, and of those runs and their fused grid."""

    best: torch.Tensor
    with_fusion: torch.Tensor


def split_summary(split: Split, single: torch.Tensor, reference: torch.Tensor, parts: int, budget: float) -> SplitRow:
    """:class:`SplitRow` from the split runs' best losses, the single run's ``(B,)`` and the yardsticks ``(B,)``."""
    ref = reference.double().cpu()
    rs, rf, r1 = split.best.double() / ref, split.with_fusion.double() / ref, single.double().cpu() / ref
    return SplitRow(parts, budget, stats.share_estimate(rs <= 1), stats.median_estimate(rs),
                    stats.share_difference(r1 <= 1, rs <= 1), stats.share_estimate(rf <= 1),
                    stats.share_difference(r1 <= 1, rf <= 1), stats.share_estimate(split.with_fusion < split.best))


def _gap_budget(frontier: Sequence[FrontierRow], target: float = 0.01) -> str:
    """Where on the measured ``frontier`` (rows by budget) the median gap to L* first reaches ``target``."""
    rows = sorted(frontier, key=lambda r: r.budget)
    hit = next((i for i, r in enumerate(rows) if r.median_gap <= target), None)
    if hit is None:
        return f"a median gap of {target:.0%} is not reached even at {rows[-1].budget:,.0f}"
    if hit == 0:
        return f"a median gap of {target:.0%} is reached at {rows[0].budget:,.0f} already"
    return (f"a median gap of {target:.0%} needs more than {rows[hit - 1].budget:,.0f} and at most "
            f"{rows[hit].budget:,.0f} equivalents with this search")


def _frontier_sentence(frontier: Sequence[FrontierRow], split: SplitRow | None) -> str:
    """What more budget, and the same budget split into restarts, do to the best method ("" when not run)."""
    text = ""
    if len(frontier) > 1:
        text += ("With more budget its median gap to L* falls to " + ", ".join(
            f"{r.median_gap:.1%} at {r.budget:,.0f}" for r in frontier[1:]) + " equivalents per pair: "
            + _gap_budget(frontier) + ". ")
    if split is not None:
        shown = "resolved" if split.lead.excludes(0) else "not resolved"
        if split.lead.excludes(0):
            so = "each run needs its whole budget here" if split.lead.value > 0 else "the restarts pay here"
        else:
            so = "the split neither helps nor hurts measurably here"
        text += (f"Split into {split.parts} runs of {split.budget / split.parts:,.0f} equivalents from diverse starts "
                 f"(the premise of restarts under successive halving), the same cost reaches R <= 1 on "
                 f"{split.share.percent()} (median R {split.median_r.text('.2f')}); one run leads by "
                 f"{split.lead.percent()} ({shown}): {so}. ")
        if split.fused_share is not None:
            still = "still leads" if split.fused_lead.excludes(0) else "leads, not resolved,"
            text += (f"Fusing the runs' grids position by position (each code from the run that is right over its "
                     f"receptive field, one decode) beats every run on {split.fusion_helped.percent()} of pairs and "
                     f"brings the split to {split.fused_share.percent()}; one run {still} by {split.fused_lead.percent()}. ")
    return text


def split_budget(pb: Problem, method: str, budget: float, parts: int = 2, noise: float = 0.5, seed: int = 0,
                 field_share: float = 0.1) -> Split:
    """``parts`` runs of ``method`` sharing ``budget`` per pair, the first from the source's latent, the others
    from it plus Gaussian noise (``noise`` times its std), and their fusion: a portfolio of restarts at the
    cost of one run, the premise of restarts under successive halving and of fusing their grids.

    The runs get ``(budget - 1) / parts`` each; the fused grid (each position's code from the run whose
    image is right over the position's receptive field, ``field_share`` as in
    :func:`vqtto.tasks.receptive_fields`) costs the last decode."""
    from ...latent import decode_grids
    from ...tasks import receptive_fields

    gen = torch.Generator().manual_seed(seed)
    scale = float(pb.z.std())
    grids, losses = [], []
    for i in range(parts):
        z = pb.z if i == 0 else pb.z + noise * scale * torch.randn(pb.z.shape, generator=gen).to(pb.z.device)
        trace = search.registry.run(method, pb.model, z, pb.loss, budget=(budget - 1) / parts)
        grids.append(trace.best_indices.to(pb.z.device))
        losses.append(trace.best_losses.double().cpu())
    best = torch.stack(losses).amin(0)
    grids = torch.stack(grids)  # (parts, B, h, w)
    fields = receptive_fields(pb.model, tuple(grids.shape[2:]), share=field_share)
    with torch.no_grad():
        residuals = torch.stack([search.pixel_residuals(decode_grids(pb.model, g), pb.targets.cpu()) for g in grids])
        fused = search.fuse_by_region(grids.cpu(), residuals, fields)
        fused_loss = pb.loss(decode_grids(pb.model, fused).to(pb.z.device)).double().cpu()
    return Split(best, torch.minimum(best, fused_loss))


# --- the result ----------------------------------------------------------------------------------

@dataclass
class MethodSummary:
    """One method on the reported pairs at the run's budget: median R and share at R <= 1, each with
    its 95% interval over pairs (:class:`vqtto.stats.Estimate`)."""

    method: str
    median_r: stats.Estimate
    share_r_le_1: stats.Estimate
    share_at_budgets: list[float]
    equivalents_per_pair: float
    seconds_per_pair: float
    setting: dict = field(default_factory=dict)


@dataclass
class Polished:
    """The best method's grids after the screened polish: median R and share at R <= 1 (with intervals),
    the extra decoder-call equivalents per pair, and the share of pairs where the polish stopped
    because none of its screened moves helped."""

    median: stats.Estimate
    share: stats.Estimate
    equivalents: float
    certified_among_screened: float


def polish_summary(pol: search.SearchTrace, reference: torch.Tensor) -> Polished:
    """:class:`Polished` of the screened polish's trace ``pol`` on pairs with yardsticks ``reference`` ``(B,)``."""
    r = pol.best_losses.double() / reference.double()
    return Polished(stats.median_estimate(r), stats.share_estimate(r <= 1), pol.decoder_equivalents / len(pol),
                    pol.fraction("stalled"))


def share_lead(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, a: str, b: str) -> stats.Estimate:
    """How much larger ``a``'s share of pairs at R <= 1 is than ``b``'s, paired over the same pairs, with its
    95% interval (:func:`vqtto.stats.share_difference`)."""
    def hit(name):
        return traces[name].best_losses.double() / reference.double() <= 1
    return stats.share_difference(hit(a), hit(b))


def runner_up(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, best: str) -> str | None:
    """The method :func:`best_method` would pick without ``best`` (None: ``best`` is the only one)."""
    rest = {m: t for m, t in traces.items() if m != best}
    return best_method(rest, reference) if rest else None


@dataclass
class ReachingTargetResult(ChapterResult):
    """What chapter 3 measured: success against cost per method, exact optima, the certificate.

    Attributes:
        summaries: per method, on the reported pairs of the main model (k).
        small: per method, on the k_small model (empty when skipped).
        best: the best method's id (largest share at R <= 1, then lowest median R).
        runner_up: the method ranked second by the same rule (None: only one method).
        lead_over_runner_up / lead_over_baseline: the best method's share at R <= 1 minus the runner-up's /
            Algorithm 2 with restarts', paired over pairs, with 95% intervals (None: no such method).
        polished: median R and share R <= 1 of the best method's grids after the screened polish.
        exact: the exact-optimum rows of the sub-problems.
        certified_share: share of certified best grids that are 1-move local optima, with its interval
            (None: skipped).
        meets_targets: the issue's targets (97% / median 0.6 within 1,000 equivalents at k=512) reached.
        verdict: the chapter's sentence.
        gaps: each method's gap to the best-known loss on the first pairs (empty: skipped).
        long_run: the long run that set the best-known loss (None: skipped).
        frontier: the best method at more budgets, against L* (empty: skipped).
        split: the best method's budget split into restarts from diverse starts (None: skipped).
    """

    CHAPTER: ClassVar[str] = "reaching_target"
    dataset: str
    k: int
    k_small: int | None
    n_pairs: int
    budgets: list[float]
    summaries: list[MethodSummary]
    small: list[MethodSummary]
    best: str
    runner_up: str | None
    lead_over_runner_up: stats.Estimate | None
    lead_over_baseline: stats.Estimate | None
    polished: Polished
    exact: list[ExactRow]
    certified_share: stats.Estimate | None
    meets_targets: bool
    verdict: str
    gaps: list[GapRow] = field(default_factory=list)
    long_run: Reference | None = None
    frontier: list[FrontierRow] = field(default_factory=list)
    split: SplitRow | None = None


def summaries(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, budgets: Sequence[float],
              settings: Mapping[str, dict]) -> list[MethodSummary]:
    out = []
    for name, tr in traces.items():
        r = tr.best_losses.double() / reference.double()
        at = ((best_at(tr, budgets) / reference.double()[:, None]) <= 1).double().mean(0).tolist()
        out.append(MethodSummary(method=name, median_r=stats.median_estimate(r), share_r_le_1=stats.share_estimate(r <= 1),
                                 share_at_budgets=at, equivalents_per_pair=tr.decoder_equivalents / len(tr),
                                 seconds_per_pair=tr.seconds / len(tr), setting=dict(settings.get(name, {}))))
    return out


def _lead(lead: stats.Estimate | None, other: str) -> str:
    if lead is None:
        return ""
    shown = "an interval that excludes zero" if lead.excludes(0) else "an interval that includes zero: not resolved on these pairs"
    return f" Its share at R <= 1 exceeds {other}'s by {lead.percent()} pair by pair ({shown})."


#: The issue's targets for the best method (quick profile, k=512, within 1,000 equivalents per pair).
TARGET_SHARE, TARGET_MEDIAN_R, TARGET_GAP, TARGET_EXACT = 0.97, 0.6, 0.01, 0.95


def verdict(main: Sequence[MethodSummary], best: str, polished: Polished, exact: Sequence[ExactRow], k: int,
            budget: float, runner: str | None = None, lead_runner: stats.Estimate | None = None,
            lead_base: stats.Estimate | None = None, gaps: Sequence[GapRow] = (),
            long_run: Reference | None = None, frontier: Sequence[FrontierRow] = (),
            split: SplitRow | None = None) -> tuple[bool, str]:
    """Whether the issue's targets were met, and a sentence from the numbers (95% intervals over pairs).

    ``frontier`` and ``split``: what more budget, and the budget split into restarts, do (said, not judged).
    ``runner``, ``lead_runner`` and ``lead_base``: the runner-up and the best method's paired leads in the
    share at R <= 1 over it and over Algorithm 2 with restarts (:func:`share_lead`); a lead counts as shown
    only where its interval excludes zero. ``gaps`` and ``long_run``: the gap to the best-known loss.
    The targets: R <= 1 on :data:`TARGET_SHARE` of pairs at k >= 512 within 1,000 equivalents, and a median
    R <= :data:`TARGET_MEDIAN_R`, or, when the long run's own median R is above that, a median gap to L*
    <= :data:`TARGET_GAP`; the exact optimum on :data:`TARGET_EXACT` of every sub-problem case.
    """
    s = {m.method: m for m in main}
    b, base = s[best], s.get("alg2-restarts")
    share_best = max(b.share_r_le_1.value, polished.share.value)
    med_best = min(b.median_r.value, polished.median.value)
    text = (f"At {budget:g} decoder-call equivalents per pair the best method is {method_label(best)}: "
            f"{b.share_r_le_1.percent()} of the pairs reach R <= 1 (median R {b.median_r.text('.2f')}; 95% intervals "
            f"over pairs); after the screened polish {polished.share.percent()} (median {polished.median.text('.2f')}, "
            f"{polished.equivalents:.0f} more equivalents per pair).")
    if runner is not None:
        text += _lead(lead_runner, f"the runner-up {method_label(runner)}")
    if base is not None and best != "alg2-restarts":
        text += (f" Algorithm 2 with random restarts, at the same cost, reaches R <= 1 on {base.share_r_le_1.percent()} "
                 f"(median R {base.median_r.text('.2f')})." + _lead(lead_base, "Algorithm 2 with restarts"))
    text += " "
    samplers = [m for m in main if m.method in MASKABLE]
    if samplers:
        top = max(samplers, key=lambda m: (m.share_r_le_1.value, -m.median_r.value))
        text += (f"The best of the gradient samplers on the first-order table, {method_label(top.method)}, reaches "
                 f"{top.share_r_le_1.percent()} (median R {top.median_r.text('.2f')}). ")
    gap_ok, gap_text = _gap_sentence(best, gaps, long_run)
    text += gap_text + _frontier_sentence(frontier, split)
    exact_ok, exact_text = _exact_sentence(best, exact)
    text += exact_text
    main_ok = share_best >= TARGET_SHARE and budget <= 1000 and k >= 512 and (med_best <= TARGET_MEDIAN_R or gap_ok)
    meets = main_ok and exact_ok
    targets = (f"The issue's targets ({TARGET_SHARE:.0%} at R <= 1 and a median R <= {TARGET_MEDIAN_R} or, where the long "
               f"run shows that out of reach, a median gap to L* <= {TARGET_GAP:.0%}, within 1,000 equivalents at k=512; "
               f"the exact optimum on {TARGET_EXACT:.0%} of each sub-problem case)")
    if meets:
        return True, text + targets + " are met."
    missed = [name for name, ok in (("the share at R <= 1", share_best >= TARGET_SHARE and budget <= 1000 and k >= 512),
                                    ("the median R or the gap to L*", med_best <= TARGET_MEDIAN_R or gap_ok),
                                    ("the exact optima", exact_ok)) if not ok]
    return False, text + targets + " are not all met: " + ", ".join(missed) + " fall short here."


def _gap_sentence(best: str, gaps: Sequence[GapRow], long_run: Reference | None) -> tuple[bool, str]:
    """Whether the best method's median gap to L* meets the target where the long run shows a median
    R <= 0.6 out of reach (its interval lies above 0.6), and the sentence that says so ("" when the gap
    was not measured)."""
    row = next((g for g in gaps if g.method == best), None)
    if row is None or long_run is None:
        return False, ""
    out_of_reach = long_run.median_r.low > TARGET_MEDIAN_R
    reach = ("out of reach of the searches here (the interval lies above it)" if out_of_reach else
             "reachable" if long_run.median_r.value <= TARGET_MEDIAN_R else
             "neither shown reachable nor shown out of reach (the interval straddles it)")
    text = (f"A long run ({method_label(long_run.method)}, {long_run.budget:,.0f} equivalents per pair, the first "
            f"{long_run.pairs} pairs) sets the best-known loss L*; its median R is {long_run.median_r.text('.2f')}, "
            f"so a median R <= {TARGET_MEDIAN_R} is {reach}. "
            + f"The best method's median gap to L* is {row.median:.1%} (90th percentile {row.p90:.1%}; "
            f"{row.within_1pct.percent()} of the pairs within 1%). ")
    return out_of_reach and row.median <= TARGET_GAP, text


def _exact_sentence(best: str, exact: Sequence[ExactRow]) -> tuple[bool, str]:
    """Whether the book's search for a few free positions (:data:`FEW_FREE`) finds the exact optimum on
    :data:`TARGET_EXACT` of every sub-problem case, and the sentence with each case's rate, the main
    problem's best method's and the best other's. With no case run the target is not judged (True, and
    the sentence says so)."""
    cases = list(dict.fromkeys((r.k, r.m) for r in exact))
    if not cases:
        return True, "The exact sub-problems were not run, so that target is not judged. "
    parts, ok = [], True
    for k, m in cases:
        rows = [r for r in exact if (r.k, r.m) == (k, m)]
        few = next((r for r in rows if r.method == FEW_FREE), None)
        mine = next((r for r in rows if r.method == best), None)
        others = [r for r in rows if r.method not in (best, FEW_FREE)]
        other = max(others, key=lambda r: r.found.value) if others else None
        ok = ok and few is not None and few.found.value >= TARGET_EXACT
        said = f"k={k}, m={m} ({rows[0].budget:g} equivalents, {rows[0].pairs} pairs): "
        said += f"{few.found.percent()} for {method_label(FEW_FREE)}" if few is not None else f"{method_label(FEW_FREE)} not run"
        if mine is not None and best != FEW_FREE:
            said += f", {mine.found.percent()} for the main problem's best method"
        if other is not None:
            said += f", {other.found.percent()} for the best other, {method_label(other.method)}"
        parts.append(said)
    return ok, "On the exact sub-problems the optimum is found on " + "; ".join(parts) + ". "


def method_explorer_panels(model, traces: Mapping[str, search.SearchTrace], sources: torch.Tensor,
                           targets: torch.Tensor, pairs: Sequence[int], max_cols: int) -> dict:
    """PNG traversals for the static method explorer: ``{(method, str(pair)): png}``, one per method and pair."""
    from ..plots import search_traversal
    from ..widgets import png_bytes

    panels = {}
    for method, trace in traces.items():
        for i in pairs:
            fig = search_traversal(model, trace, sources, targets, [i], max_cols=max_cols,
                                   title=f"{method_label(method)}, pair {i}")
            panels[(method, str(i))] = png_bytes(fig, dpi=70)
    return panels


# --- the summary table as a figure (display only) ------------------------------------------------

def _estimates(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, budgets: Sequence[float]) -> dict:
    """Method -> (median R estimate, [share at R <= 1 estimate per budget]), as :func:`summary_rows` computes them."""
    out = {}
    for name, tr in traces.items():
        r = tr.best_losses.double() / reference.double()
        at = (best_at(tr, budgets) / reference.double()[:, None]) <= 1
        out[name] = (stats.median_estimate(r), [stats.share_estimate(at[:, j]) for j in range(len(budgets))])
    return out


def summary_figure(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, budgets: Sequence[float],
                   title: str):
    """The summary table as dots: per method its median R (left, log scale) and its share of pairs at R <= 1 at
    each budget (right), each with its 95% interval over pairs. R = best loss / loss of the target's own code."""
    if not traces:
        raise ValueError("summary_figure: traces must not be empty (method -> SearchTrace)")
    est = _estimates(traces, reference, budgets)
    names = list(traces)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.34 * len(names) + 1.4), sharey=True)
    for y, name in enumerate(names):
        med, shares = est[name]
        axes[0].errorbar([med.value], [y], xerr=[[med.value - med.low], [med.high - med.value]], fmt="o", capsize=3,
                         color=method_color(name))
        for j, (b, s) in enumerate(zip(budgets, shares)):
            dy = (j - (len(budgets) - 1) / 2) * 0.22
            axes[1].errorbar([s.value], [y + dy], xerr=[[s.value - s.low], [s.high - s.value]], fmt="os^Dv"[j % 5],
                             ms=4, capsize=2, color=method_color(name), alpha=0.45 + 0.55 * (j + 1) / len(budgets),
                             label=f"budget {b:g}" if y == 0 else None)
    axes[0].axvline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("median R (log scale; 1 = the target's own code)")
    axes[1].set_xlim(-0.03, 1.03)
    axes[1].set_xlabel("share of pairs with R <= 1")
    axes[1].legend(fontsize=7, loc="lower right")
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels([method_label(n) for n in names], fontsize=8)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    for ax in axes:
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title + " (whiskers: 95% intervals over pairs)", fontsize=10)
    fig.tight_layout()
    return fig


def exact_figure(rows: Sequence[ExactRow], title: str):
    """The exact-optimum rates as dots: one panel per sub-problem case, per method the share of pairs whose
    optimum it found with its 95% interval, and a dashed line at the target (:data:`TARGET_EXACT`)."""
    if not rows:
        raise ValueError("exact_figure: rows must not be empty")
    cases = list(dict.fromkeys((r.k, r.m, r.budget) for r in rows))
    names = list(dict.fromkeys(r.method for r in rows))
    fig, axes = plt.subplots(1, len(cases), figsize=(2.6 * len(cases) + 3.0, 0.3 * len(names) + 1.4), sharey=True,
                             squeeze=False)
    for ax, (k, m, budget) in zip(axes[0], cases):
        for r in (r for r in rows if (r.k, r.m, r.budget) == (k, m, budget)):
            y, f = names.index(r.method), r.found
            ax.errorbar([f.value], [y], xerr=[[f.value - f.low], [f.high - f.value]], fmt="o", capsize=3,
                        color=method_color(r.method))
        ax.axvline(TARGET_EXACT, color="k", lw=0.8, ls="--")
        ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel("share at the exact optimum", fontsize=8)
        ax.set_title(f"k={k}, m={m}\n{k ** m:,} grids, {budget:g} equivalents", fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(names)))
    axes[0][0].set_yticklabels([method_label(n) for n in names], fontsize=8)
    axes[0][0].set_ylim(len(names) - 0.5, -0.5)
    fig.suptitle(title + f"\n(whiskers: 95% intervals; dashed: the {TARGET_EXACT:.0%} target)", fontsize=9)
    fig.tight_layout()
    return fig


def summary_pivot(traces: Mapping[str, search.SearchTrace], reference: torch.Tensor, budgets: Sequence[float]) -> list[dict]:
    """A compact summary: per method its median R with its 95% interval and its share at R <= 1 per budget
    (the shares' intervals are in the figure and in the full table)."""
    est = _estimates(traces, reference, budgets)
    return [{"method": method_label(name), "median R [95%]": med.text(".3f"),
             **{f"R <= 1 at {b:g}": f"{s.value:.0%}" for b, s in zip(budgets, shares)}}
            for name, (med, shares) in est.items()]
