"""Chapter 2, gradient search in the discrete latent space (paper section 5.2, Table 1, Figure 4).

The searches live in :mod:`vqtto.search`; this module holds the chapter's parameters, the
paper's numbers to compare with, and the chapter's tables and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import paper
from ... import search, stats
from ...data import DATASETS
from ...params import Param, above, between, chapter_schema, each, nonempty, one_of, seed, work
from ..plots import finish, method_color, search_traversal
from ..report import ChapterResult
from ..widgets import png_bytes

PARAMS = chapter_schema({
    "datasets": Param(list, "data sets for Table 1; the first one also gets the detailed analyses", nonempty(each(one_of(*DATASETS), str, most=len(DATASETS))), default=['fashion-mnist']),
    "k": Param(int, "codebook size of the searched VQ-VAE (the paper's Table 1 uses 512)", between(2, 4096), default=512),
    "k_small": Param(int, "also run Algorithm 2 on this smaller codebook (None: skip)", between(2, 4096), nullable=True, default=40),
    "n_pairs": Param(int, "random source-target test pairs (paper: 200)", work(1, smoke=64, quick=2000, full=20000), default=200),
    "pair_seed": Param(int, "seed of the pair draw (shared with other chapters)", seed(), default=0),
    "alpha": Param(float, "step size of Algorithms 2 and 3 (paper: 0.1)", above(0.0, 10000.0), default=0.1),
    "lam": Param(int, "most repeats of one step before a search counts as stalled", work(1, smoke=1000, quick=2000, full=10000), default=100),
    "max_unique": Param(int, "most distinct grids per search", work(1, smoke=1000, quick=5000, full=50000), default=500),
    "top_m": Param(int, "positions moved per step by the top-m variant", between(1, 1024), default=4),
    "alg1_optimizer": Param(str, "how Algorithm 1 steps: sgd (the paper's plain descent) or adam", one_of("sgd", "adam"), default="adam"),
    "alg1_alpha": Param(float, "step size of Algorithm 1 (Adam's learning rate with adam)", above(0.0, 100.0), default=0.1),
    "alg1_tol": Param(float, "Algorithm 1 stops when the loss changes by at most this", between(0.0, 1.0), default=1e-07),
    "alg1_steps": Param(int, "most steps of Algorithm 1", work(1, smoke=500, quick=10000, full=100000), default=500),
    "relaxed_lr": Param(float, "Adam step size of the relaxed search on the code logits", above(0.0, 100.0), default=0.1),
    "relaxed_steps": Param(int, "decoder rounds of the relaxed search per pair", work(1, smoke=500, quick=5000, full=50000), default=200),
    "greedy_pairs": Param(int, "pairs given to the greedy coordinate search (it decodes many candidates)", work(0, smoke=16, quick=500, full=5000), default=32),
    "certify_pairs": Param(int, "greedy results checked against all their single-position neighbours (0: skip)", work(0, smoke=8, quick=100, full=1000), default=4),
    "greedy_width": Param(int, "most candidates the greedy search decodes per pair and round", between(16, 4096), default=64),
    "sweep_alphas": Param(list, "step sizes compared in the effect-of-alpha section (floats)", nonempty(each(above(0.0, 10000.0), float, most=20)), default=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]),
    "sweep_pairs": Param(int, "pairs used per step size in the effect-of-alpha section", work(1, smoke=64, quick=1000, full=10000), default=50),
})



@dataclass(frozen=True)
class Display:
    """What the chapter draws, per profile: display only, never part of a computed number."""

    n_show: int              # traversals drawn in the Figure 4 equivalent
    max_cols: int            # most reconstructions per traversal row
    explorer_alphas: tuple   # alpha values precomputed for the static explorer
    explorer_pairs: int      # pairs offered in the explorers


DISPLAY = {
    "smoke": Display(n_show=2, max_cols=6, explorer_alphas=(0.1, 1.0), explorer_pairs=1),
    "quick": Display(n_show=4, max_cols=12, explorer_alphas=(0.03, 0.1, 0.3, 1.0), explorer_pairs=2),
    "full": Display(n_show=4, max_cols=12, explorer_alphas=(0.03, 0.1, 0.3, 1.0), explorer_pairs=3),
}

# Which method each relative-loss series belongs to (its colour), and whether it is an index grid.
SERIES = {
    "source grid": ("source", True),
    "alg1, decoded continuous latent": ("alg1", False),
    "alg1, its nearest grid": ("alg1", True),
    "alg2, best grid": ("alg2", True),
    "alg3, best grid": ("alg3", True),
    "relaxed, best grid": ("relaxed", True),
    "greedy, best grid": ("greedy", True),
}


@dataclass
class MethodMedian:
    """The median over pairs of one method's best loss / loss of the target's own code."""

    series: str      # the label in the chapter's table
    method: str      # the method id (vqtto.book.plots.METHODS)
    is_grid: bool    # an index grid (False: Algorithm 1's continuous latent, no grid at all)
    median: float
    low: float       # 95% bootstrap interval of the median over pairs
    high: float


@dataclass
class PairedComparison:
    """Median over pairs of one method's loss divided by another's, on the same pairs, with its interval."""

    better: str      # the series expected lower
    worse: str
    median_ratio: float
    low: float
    high: float
    excludes_one: bool   # the 95% interval lies entirely below or above 1


@dataclass
class GradientSearchResult(ChapterResult):
    """What chapter 2 measured: Table 1, how searches end, and how close each search gets.

    Attributes:
        table1: per run label (``"<dataset>, k=<k>"``), the Table 1 row (mean, std, min, max, endings).
        loop_alg2 / stalled_alg2: shares of Algorithm 2's searches (main data set, k) that ended in a
            loop / stalled, with their 95% intervals over pairs.
        all_loop: the paper's "every search ends in a loop" is reproduced (at least 99% loops).
        medians: per series, the median relative best loss (1 = as good as the target's own code).
        relaxed_reaches_target_code: share of pairs where the relaxed search gets to <= 1, with its interval.
        table1_verdict / alg3_verdict / best_grid_verdict: the chapter's sentences.
    """

    CHAPTER: ClassVar[str] = "gradient_search"
    dataset: str
    k: int
    n_pairs: int
    alpha: float
    lam: int
    table1: dict[str, dict]
    table1_seconds: float
    loop_alg2: stats.Estimate
    stalled_alg2: stats.Estimate
    all_loop: bool
    steps_per_change: list[dict]
    medians: list[MethodMedian]
    relaxed_vs_alg2: PairedComparison
    relaxed_reaches_target_code: stats.Estimate
    table1_verdict: str
    alg3_verdict: str
    best_grid_verdict: str


MASK_LABEL = {"all": "alg2", "single": "alg3", "top": "top-m"}


@dataclass
class PairSet:
    """One data set's searched VQ-VAE and its source-target pairs, ready to search.

    Attributes:
        model: the VQ-VAE (a latent decoder) on the chapter's device.
        pairs: the :class:`vqtto.data.pairs.Pairs` drawn for this data set.
        z: ``(B, D, h, w)`` the sources' continuous latents (the searches' start).
        targets: ``(B, C, H, W)`` the target images on the device.
        reference: ``(B,)`` the loss of each target's own code (CPU), the yardstick of relative losses.
    """

    model: object
    pairs: object
    z: torch.Tensor
    targets: torch.Tensor
    reference: torch.Tensor


def pair_set(model, pairs, device: torch.device) -> PairSet:
    """Encode ``pairs``' sources with ``model`` and compute the yardstick of each target."""
    with torch.no_grad():
        z = model.encode(pairs.sources.to(device))
    targets = pairs.targets.to(device)
    return PairSet(model, pairs, z, targets, search.reference_losses(model, targets).cpu())


def pair_sets(datasets: Sequence[str], k: int, profile: str, n_pairs: int, pair_seed: int,
              device: torch.device) -> tuple[dict[str, PairSet], dict[str, str]]:
    """The VQ-VAE and pairs of every one of ``datasets`` whose data is on this machine.

    Returns ``(sets, skipped)``: data set -> :class:`PairSet`, and data set -> why its data could
    not be had.
    """
    from ... import models
    from ...data import pairs
    from ...data import DataUnavailable

    sets, skipped = {}, {}
    for ds in datasets:
        try:
            model = models.vqvae(ds, k=k, profile=profile, device=device).model
            pp = pairs.test_pairs(ds, n_pairs, pair_seed)
        except DataUnavailable as err:
            skipped[ds] = str(err)
            continue
        sets[ds] = pair_set(model, pp, device)
    if not sets:
        raise DataUnavailable(f"none of the data sets {list(datasets)} is available: {skipped}")
    return sets, skipped


def ending_share(trace: search.SearchTrace, *reasons: str) -> stats.Estimate:
    """The share of ``trace``'s pairs whose search stopped for one of ``reasons``, with its 95% interval."""
    return stats.share_estimate(torch.tensor([r in reasons for r in trace.stop_reason]))


def table1_row(label: str, trace: search.SearchTrace) -> dict:
    """Mean, std, min and max of the unique steps before the search stopped, and how it stopped
    (shares with their 95% intervals over pairs)."""
    n = trace.n_unique.double()
    return {"run": label, "pairs": len(trace), "mean": round(float(n.mean()), 2),
            "std": round(float(n.std()) if len(n) > 1 else 0.0, 2), "min": int(n.min()), "max": int(n.max()),
            "ended in a loop": ending_share(trace, "loop").percent(), "stalled": ending_share(trace, "stalled").percent(),
            "budget": ending_share(trace, "budget").percent()}


def paper_rows() -> list[dict]:
    """The paper's Table 1 rows (section 5.2), in the columns of :func:`table1_row`."""
    return [{"run": f"paper, {name}, k=512, Alg. 2", "pairs": paper.TABLE1_PAIRS.value, "mean": q.value["mean"],
             "std": q.value["std"], "min": q.value["min"], "max": q.value["max"], "ended in a loop": "100%",
             "stalled": "-", "budget": "-"} for name, q in paper.TABLE1.items()]


def steps_stats(trace: search.SearchTrace) -> dict:
    """Summary of the raw steps each unique change took (the paper's first observation)."""
    s = trace.steps_per_change().double()
    if s.numel() == 0:
        return {"method": trace.method, "changes": 0}
    q = torch.quantile(s, torch.tensor([0.1, 0.5, 0.9], dtype=torch.double))
    return {"method": trace.method, "changes": int(s.numel()), "mean": round(float(s.mean()), 2),
            "10%": float(q[0]), "median": float(q[1]), "90%": float(q[2]), "max": int(s.max()),
            "coefficient of variation": round(float(s.std() / s.mean()), 2) if s.numel() > 1 else 0.0}


def relative_rows(rel: Mapping[str, torch.Tensor], notes: Mapping[str, str] | None = None) -> list[dict]:
    """One row per method: median, mean, quartiles of loss / target's-own-code loss, share <= 1 (with intervals)."""
    rows = []
    for label, r in rel.items():
        r = r.double()
        q = torch.quantile(r, torch.tensor([0.25, 0.5, 0.75], dtype=torch.double))
        lo, hi = stats.bootstrap_interval(r)
        rows.append({"method": label, "median": round(float(q[1]), 3), "95% CI of the median": f"[{lo:.3g}, {hi:.3g}]",
                     "25%": round(float(q[0]), 3),
                     "75%": round(float(q[2]), 3), "mean": round(float(r.mean()), 3),
                     "reaches the target's own code (<= 1)": stats.share_estimate(r <= 1).percent(),
                     "note": (notes or {}).get(label, "")})
    return rows


def relative_loss_cdf(rel: Mapping[str, torch.Tensor], title: str):
    """Empirical CDFs of loss / target's-own-code loss, one line per method (log x)."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for label, r in rel.items():
        x = np.sort(r.double().numpy())
        ls = "-" if SERIES[label][1] and label != "source grid" else "--"
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=method_color(SERIES[label][0]), ls=ls,
                label=label)
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    return finish(fig, ax, "final loss / loss of the target's own encoder code (log scale; 1 = as good)",
                  "fraction of pairs at or below", title)


def steps_histogram(traces: Sequence[search.SearchTrace], lam: int, title: str):
    """Distribution (log-spaced bins, per unit step, log axes) of raw steps per unique change."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    bins = np.unique(np.round(np.logspace(0, np.log10(max(2, lam + 1)), 25)))
    for tr in traces:
        s = tr.steps_per_change().numpy()
        if s.size:
            ax.hist(s, bins=bins, density=True, histtype="step", lw=2, color=method_color(tr.method),
                    label=f"{tr.method} ({s.size} changes, median {np.median(s):g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    return finish(fig, ax, "raw steps of size alpha until a nearest-neighbour index changed (log scale)",
                  "fraction of changes per step (log scale)", title)


def certificate_sentence(cert) -> str:
    """What the radius-1 certificate (:func:`vqtto.search.radius1_certificate`) found for the greedy results."""
    n, local = len(cert.loss), int(cert.local_optimum.sum())
    text = (f"Of {n} greedy results checked against all {cert.neighbours:,} single-position neighbours each, "
            f"{local} {'is a 1-move local optimum' if local == 1 else 'are 1-move local optima'}")
    if local == n:
        return text + ": no grid that differs in one position decodes to a lower loss."
    worst = float(cert.improvement.max())
    return text + (f"; for the others a better neighbour exists that the greedy search did not try (up to "
                   f"{worst:.1%} lower loss, {int(cert.better_neighbours.max())} better neighbours at most). The "
                   "greedy search stops where its screened candidates stop improving, not at a certified minimum.")


def loop_lengths(trace: search.SearchTrace) -> torch.Tensor:
    """``(L,)`` int64: for each pair that ended in a loop, how many grids the cycle holds."""
    return torch.tensor([int(n) - lt for n, lt, r in zip(trace.n_unique, trace.loop_to, trace.stop_reason) if r == "loop"],
                        dtype=torch.long)


def table1_verdict(trace: search.SearchTrace, dataset: str, k: int) -> str:
    """A sentence comparing our Algorithm 2 run with the paper's Table 1, from the numbers."""
    n = trace.n_unique.double()
    cyc = loop_lengths(trace)
    returned = ending_share(trace, "loop", "stalled")
    text = (f"On {dataset} with k={k}, Algorithm 2 visits on average {n.mean():.1f} distinct grids (std {n.std():.1f}, "
            f"min {int(n.min())}, max {int(n.max())}) before it stops; {ending_share(trace, 'loop').percent()} of the "
            f"searches end in a loop, {ending_share(trace, 'stalled').percent()} stall and "
            f"{ending_share(trace, 'budget').percent()} reach the budget (95% intervals over pairs). ")
    if cyc.numel():
        text += (f"The loops are short: {float((cyc == 2).double().mean()):.0%} of them go back to the grid visited just before "
                 f"(a cycle of 2 grids, the search stepping back and forth across one Voronoi boundary); the longest holds {int(cyc.max())}. ")
    cifar = paper.TABLE1["cifar10"].value["mean"]
    text += (f"The paper found a loop in all of its {paper.TABLE1_PAIRS.value} CIFAR-10 and Mini-ImageNet searches, "
             f"after {cifar} distinct grids on average on CIFAR-10. ")
    if trace.fraction("loop") >= 0.9:
        text += ("We agree that loops end almost every search; " +
                 ("ours come later and vary more than the paper's CIFAR-10 row." if n.mean() > cifar * 2 else
                  "they come about as early as the paper's."))
    else:
        text += "Here fewer searches end in a loop than in the paper; the others stop for the reasons given."
    return text + (f" Under the paper's own stopping rule a stall is a return too (the grid the search would take "
                   f"next is the one it holds, already in the hash set): {returned.percent()} of the searches end by returning "
                   "to a seen grid. That is what transfers between models and data sets; the mean number of distinct "
                   "grids does not, since it moves with alpha and lambda (see the sweep below).")


def alg3_verdict(alg3: search.SearchTrace, alg2: search.SearchTrace, alpha: float, lam: int) -> str:
    """A sentence comparing how Algorithms 3 and 2 ended on the same pairs, from the numbers.

    "Fewer loops" is shown only where the paired difference of the loop shares (Algorithm 3 minus
    Algorithm 2, :func:`vqtto.stats.share_difference`) has a 95% interval below zero.
    """
    s3, s2 = alg3.steps_per_change().double(), alg2.steps_per_change().double()
    med3 = stats.median(s3) if s3.numel() else float("nan")
    med2 = stats.median(s2) if s2.numel() else float("nan")
    fewer = stats.share_difference(torch.tensor([r == "loop" for r in alg3.stop_reason]),
                                   torch.tensor([r == "loop" for r in alg2.stop_reason]))
    text = (f"With alpha={alpha:g} and lam={lam}, Algorithm 3 ended in a loop in {ending_share(alg3, 'loop').percent()} "
            f"of the pairs and stalled in {ending_share(alg3, 'stalled').percent()} (Algorithm 2: "
            f"{ending_share(alg2, 'loop').percent()} and {ending_share(alg2, 'stalled').percent()}); it visited "
            f"{float(alg3.n_unique.double().mean()):.1f} distinct grids on average against "
            f"{float(alg2.n_unique.double().mean()):.1f}, with a median of {med3:.0f} repeats per change against "
            f"{med2:.0f}. Pair by pair, its share of loops differs from Algorithm 2's by {fewer.percent()} "
            f"({'an interval that excludes zero' if fewer.excludes(0) else 'an interval that includes zero'}). ")
    if fewer.high < 0 and med3 > med2:
        text += ("Fewer loops and longer waits, as the paper describes"
                 + (", taken here to the point where most waits exceed lam." if alg3.fraction("stalled") > 0.5 else "."))
    elif med3 > med2:
        text += ("Longer waits, as the paper describes, but these pairs do not show fewer loops.")
    else:
        text += "This does not match the paper's description of fewer loops and longer waits."
    return text


def code_spacing(codebook: torch.Tensor) -> float:
    """The median distance from a code ``(k, D)`` to its nearest other code: the typical Voronoi cell's size."""
    d = torch.cdist(codebook.detach().double(), codebook.detach().double())
    d.fill_diagonal_(float("inf"))
    return stats.median(d.min(1).values)


@torch.no_grad()
def gradient_scale(model, z: torch.Tensor, loss) -> float:
    """The median length, over pairs and positions, of the loss gradient at the start grids' codes."""
    idx = model.nearest(z)
    rows = torch.arange(z.shape[0], device=z.device)
    _, grads = search.Evaluator(model, loss, z.shape[0]).loss_and_grad(idx, rows)
    return stats.median(grads.norm(dim=1))


def alpha_sweep(model, z: torch.Tensor, targets: torch.Tensor, ref: torch.Tensor, alphas: Sequence[float],
                masks: Sequence[str], lam: int, max_unique: int, top_m: int) -> list[dict]:
    """Algorithms 2 and 3 (and top-m) at each step size on the same pairs: one row per run.

    Each row also gives alpha as a length: ``alpha`` times the median gradient length at the start
    grids, divided by :func:`code_spacing` (1 = one typical step crosses about one Voronoi cell),
    which compares across models whose latents have different scales.
    """
    rows = []
    loss = search.mse_to(targets)
    per_alpha = gradient_scale(model, z, loss) / code_spacing(model.codebook)
    for mask in masks:
        for a in alphas:
            tr = search.straight_through(model, z, loss, alpha=float(a), lam=lam, max_unique=max_unique, mask=mask, m=top_m)
            rel = tr.best_losses / ref
            steps = tr.steps_per_change().double()
            rows.append({"method": tr.method, "alpha": float(a), "step / code spacing": round(float(a) * per_alpha, 3),
                         "mean unique": round(float(tr.n_unique.double().mean()), 2),
                         "median raw steps per change": stats.median(steps) if steps.numel() else float("nan"),
                         "loop": round(tr.fraction("loop"), 3), "stalled": round(tr.fraction("stalled"), 3),
                         "median best loss / own-code loss": round(stats.median(rel), 3),
                         "wall time": f"{tr.seconds:.2f} s"})
    return rows


def alpha_figure(rows: Sequence[dict]):
    """Three panels against alpha: mean unique steps, how searches end, median relative best loss."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for method in dict.fromkeys(r["method"] for r in rows):  # trace method ids
        rr = [r for r in rows if r["method"] == method]
        a = [r["alpha"] for r in rr]
        c = method_color(method)
        axes[0].plot(a, [r["mean unique"] for r in rr], "o-", color=c, label=method)
        axes[1].plot(a, [r["loop"] for r in rr], "o-", color=c, label=f"{method}: loop")
        axes[1].plot(a, [r["stalled"] for r in rr], "s--", color=c, alpha=0.7, label=f"{method}: stalled")
        axes[2].plot(a, [r["median best loss / own-code loss"] for r in rr], "o-", color=c, label=method)
    labels = ["mean unique grids before stopping", "fraction of pairs", "median best loss / target's own code"]
    for ax, lab in zip(axes, labels):
        ax.set_xscale("log")
        ax.set_xlabel("step size alpha (log scale)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    fig.suptitle("effect of the step size alpha on the same pairs")
    fig.tight_layout()
    return fig


def explorer_panels(model, z: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor, alphas: Sequence[float],
                    masks: Sequence[str], lam: int, max_unique: int, top_m: int, max_cols: int) -> dict:
    """PNG traversals of the explorer pairs for every (masking mode, alpha): ``{(mask, str(alpha)): png}``."""
    panels = {}
    loss = search.mse_to(targets)
    for mask in masks:
        for a in alphas:
            tr = search.straight_through(model, z, loss, alpha=float(a), lam=lam, max_unique=max_unique, mask=mask, m=top_m)
            title = (f"{MASK_LABEL[mask]} (masking={mask}{', m=' + str(top_m) if mask == 'top' else ''}), alpha={a:g}: "
                     f"unique grids {tr.n_unique.tolist()}")
            fig = search_traversal(model, tr, sources, targets, range(len(tr)), max_cols=max_cols, title=title)
            panels[(mask, str(a))] = png_bytes(fig, dpi=70)
    return panels


def sweep_turns(sweep: Sequence[dict], method: str) -> bool:
    """Whether ``method``'s median best loss is lowest at an interior alpha of the sweep (the trend turned)."""
    rows = [r for r in sweep if r["method"] == method]
    best = min(range(len(rows)), key=lambda i: rows[i]["median best loss / own-code loss"])
    return 0 < best < len(rows) - 1


def best_grid_verdict(rel: Mapping[str, torch.Tensor], sweep: Sequence[dict]) -> str:
    """A sentence on the best straight-through setting of the sweep against the relaxed search."""
    best = min(sweep, key=lambda r: r["median best loss / own-code loss"])
    text = (f"The best of these settings is {best['method']} with alpha={best['alpha']:g} (a first step of "
            f"{best['step / code spacing']:.2g} code spacings): median best loss "
            f"{best['median best loss / own-code loss']:.1f} times that of the target's own code, against "
            f"{stats.median(rel['relaxed, best grid']):.2f} for the relaxed search. ")
    turned = [m for m in dict.fromkeys(r["method"] for r in sweep) if sweep_turns(sweep, m)]
    if len(turned) == len(dict.fromkeys(r["method"] for r in sweep)):
        return text + "For every masking mode the best alpha lies inside the sweep: the trend turns within it."
    if not turned:
        return text + ("For no masking mode does the trend turn inside the sweep: the best alpha is at an end of "
                       "it, so a wider sweep might do better.")
    return text + (f"The trend turns inside the sweep only for {', '.join(turned)}; for the others the best alpha "
                   "is at an end of the sweep, so a wider sweep might do better.")


def paired_comparison(rel: Mapping[str, torch.Tensor], better: str, worse: str) -> PairedComparison:
    """The per-pair ratio ``rel[better] / rel[worse]``: its median and 95% bootstrap interval."""
    ratio = rel[better] / rel[worse]
    lo, hi = stats.bootstrap_interval(ratio)
    return PairedComparison(better, worse, stats.median(ratio), lo, hi, hi < 1 or lo > 1)


def paired_sentence(c: PairedComparison) -> str:
    """What the paired comparison shows, in one sentence."""
    text = (f"Pair by pair, {c.better} ends at {c.median_ratio:.2f} times the loss of {c.worse} (median; 95% "
            f"bootstrap interval [{c.low:.2f}, {c.high:.2f}])")
    if not c.excludes_one:
        return text + ": the interval includes 1, so these pairs do not show a difference."
    return text + (": the interval lies below 1." if c.high < 1 else ": the interval lies above 1.")


def gradient_search_result(profile: str, dataset: str, k: int, alpha: float, lam: int,
                           traces: Mapping[tuple, search.SearchTrace], alg_traces: Sequence[search.SearchTrace],
                           rel: Mapping[str, torch.Tensor], table1_seconds: float,
                           sweep: Sequence[dict]) -> GradientSearchResult:
    """The chapter's typed result: Table 1 per run, Algorithm 2/3/top-m endings, the medians, the verdicts.

    ``traces`` maps ``(dataset, k)`` to its Algorithm 2 trace; ``alg_traces`` is (alg2, alg3, top-m)
    on the main data set; ``rel`` maps each :data:`SERIES` label to its ``(B,)`` relative losses.
    """
    alg2, alg3, _ = alg_traces
    return GradientSearchResult(
        profile=profile, dataset=dataset, k=k, n_pairs=len(alg2), alpha=alpha, lam=lam,
        table1={f"{ds}, k={kk}": table1_row("", tr) for (ds, kk), tr in traces.items()},
        table1_seconds=table1_seconds, loop_alg2=ending_share(alg2, "loop"),
        stalled_alg2=ending_share(alg2, "stalled"), all_loop=alg2.fraction("loop") >= 0.99,
        steps_per_change=[steps_stats(t) for t in alg_traces],
        medians=[MethodMedian(label, SERIES[label][0], SERIES[label][1], stats.median(r), *stats.bootstrap_interval(r))
                 for label, r in rel.items()],
        relaxed_vs_alg2=paired_comparison(rel, "relaxed, best grid", "alg2, best grid"),
        relaxed_reaches_target_code=stats.share_estimate(rel["relaxed, best grid"] <= 1),
        table1_verdict=table1_verdict(alg2, dataset, k), alg3_verdict=alg3_verdict(alg3, alg2, alpha, lam),
        best_grid_verdict=best_grid_verdict(rel, sweep))
