"""Chapter 8, super-resolution, inpainting and editing: search where the encoder has no answer.

The tasks live in :mod:`vqtto.tasks`, the answers that need no search in :mod:`vqtto.tasks.baselines`,
and every searched answer is a call of :func:`vqtto.tasks.solve` (the command line's too). This
module holds the chapter's parameters, which settings answer each task, the tables and figures,
the lambda tuning on validation pairs and the typed result with its verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from ... import search, stats, tasks
from ...latent import decode_grids
from ...data import DATASETS
from ...params import Param, above, between, chapter_schema, each, fraction, nonempty, one_of, seed, work
from ..plots import bare, finish, method_color, method_label
from ..report import ChapterResult
from ...stats import Estimate
from ...tasks import baselines as anchors

PARAMS = chapter_schema({
    "dataset": Param(str, "data set of the VQ-VAE and prior", one_of(*DATASETS), default="fashion-mnist"),
    "k": Param(int, "codebook size (the paper's 512)", between(2, 4096), default=512),
    "n_pairs": Param(int, "reported images per task (chapter 2's pairs: targets restored, sources edited)", work(1, smoke=32, quick=500, full=5000),
                     default=48),
    "pair_seed": Param(int, "seed of the reported pairs (chapter 2's)", seed(), default=0),
    "val_pairs": Param(int, "validation images lambda is tuned on (never reported)", work(1, smoke=16, quick=200, full=1000), default=12),
    "val_seed": Param(int, "seed of the validation pairs (must differ from pair_seed)", seed(), default=1),
    "masks": Param(list, "inpainting masks (vqtto.tasks.MASKS)", nonempty(each(one_of(*tasks.MASKS), str, most=len(tasks.MASKS))),
                   default=list(tasks.MASKS)),
    "factors": Param(list, "super-resolution factors (integers dividing the image size)", nonempty(each(between(2, 64), int, most=6)),
                     default=[4, 2]),
    "lambdas": Param(list, "prior weights tried on the validation pairs (loss per nat per position, > 0)",
                     nonempty(each(above(0.0, 10.0), float, most=10)), default=[0.001, 0.003, 0.01, 0.03]),
    "val_inside": Param(float, "share of validation codes inside the real range a weight must reach to be chosen",
                        fraction(), default=0.95),
    "samples": Param(int, "prior draws per pair (the prior-only answer, and the chains' starts)", work(1, smoke=64, quick=512, full=4096), default=32),
    "chains": Param(int, "chains per pair of the guided search (at most samples)", between(1, 64), default=4),
    "budget": Param(float, "decoder-call equivalents per pair of the search after the draws", work(0.0, smoke=600.0, quick=20000.0, full=100000.0, lo_open=True),
                    default=600.0),
    "temperature": Param(float, "start temperature of the annealed search (units of the start energy)", above(0.0, 10.0),
                         default=0.02),
    "neighbours": Param(int, "training images averaged by the nearest-neighbour mean", between(1, 1000), default=10),
    "field_share": Param(float, "receptive field of a token: the pixels it changes by at least this share of its largest change",
                         fraction(), default=0.1),
    "edit": Param(str, "the local change of the editing task (vqtto.tasks.EDITS)", one_of(*tasks.EDITS), default="paste"),
    "edit_size": Param(int, "side in pixels of the edited square", between(1, 64), default=8),
    "radii": Param(list, "Hamming radii of the editing search (positions that may differ from the source's code)",
                   nonempty(each(between(1, 1024), int, most=10)), default=[1, 2, 4, 8, 16]),
})


@dataclass(frozen=True)
class Display:
    """What the chapter draws, per profile: display only."""

    n_show: int          # images per task figure
    explorer_pairs: int  # validation images in the task/lambda explorer


DISPLAY = {"smoke": Display(2, 1), "quick": Display(3, 2), "full": Display(4, 3)}

#: The answers compared on every task, in table order (ids of :data:`vqtto.book.plots.METHODS`).
ANCHORS = ("encoder-observed", "nearest-neighbour", "nn-mean", "bilinear", "own-code")
#: ``search.DEFAULT`` is the plain search (the task loss alone, what ``vqtto search`` runs without a prior);
#: the guided rows ("relaxed-draws", "relaxed-prior") run the same default method from the prior's draws, the
#: exemplar rows from the codes of the training images nearest to the evidence (``solve(exemplars=...)``).
SEARCHES = (search.DEFAULT, "prior-resample", "relaxed-draws", "relaxed-prior", "chain-mean", "screened-sa-prior",
            "exemplar-prior", "exemplar-mean")


# --- setting up ----------------------------------------------------------------------------------

@dataclass
class Setup:
    """The models and reference data every task uses.

    Attributes:
        model: the VQ-VAE; prior: its PixelCNN; train: ``(N, C, H, W)`` training images (CPU).
        real_range: the central 95% of the real test codes' NLL per position, ``(low, high)``.
        fields: ``(h*w, H, W)`` bool receptive fields of the model's token positions.
    """

    model: object
    prior: object
    train: torch.Tensor
    real_range: tuple[float, float]
    fields: torch.Tensor

    @property
    def grid(self) -> tuple[int, int]:
        return (self.prior.cfg.height, self.prior.cfg.width)

    def nll(self, grids: torch.Tensor) -> torch.Tensor:
        """``(B,)`` NLL per position of grids ``(B, h, w)`` (CPU)."""
        return search.GridPrior(self.prior, 1.0, self.prior.cfg.k, self.grid).nll(grids.to(self.model.codebook.device)).cpu()

    def decode(self, grids: torch.Tensor) -> torch.Tensor:
        """Grids ``(..., h, w)`` -> images ``(..., C, H, W)`` (CPU)."""
        return decode_grids(self.model, grids)


def real_range(trained_prior, limit: int = 2000) -> tuple[float, float]:
    """The central 95% (2.5% and 97.5% quantiles) of the NLL per position of real test codes."""
    codes = trained_prior.test_codes.indices[:limit]
    nll = search.GridPrior(trained_prior.model, 1.0, trained_prior.k, tuple(codes.shape[1:])).nll(
        codes.to(trained_prior.model.embed.device)).cpu()
    return stats.quantile(nll, 0.025), stats.quantile(nll, 0.975)


def make_tasks(setup: Setup, truth: torch.Tensor, sources: torch.Tensor, donors: torch.Tensor, masks: Sequence[str],
               factors: Sequence[int], edit: str, edit_size: int, seed: int = 0) -> dict[str, tasks.Benchmark]:
    """The inpainting and super-resolution tasks on ``truth`` and the editing task (radius 1, set per
    run) on ``sources`` with patches from ``donors``, all ``(B, C, H, W)`` on the model's device."""
    out = {}
    for mask in masks:
        t = tasks.inpainting(truth, mask, setup.model, seed=seed, fields=setup.fields)
        out[t.name] = t
    for f in factors:
        t = tasks.super_resolution(truth, f)
        out[t.name] = t
    t = tasks.editing(sources, anchors.encoder_grids(setup.model, sources), edit, 1, donors=donors, size=edit_size,
                      seed=seed)
    out[t.name] = t
    return out


# --- answering a task ----------------------------------------------------------------------------

@dataclass
class Answers:
    """Every method's answer to one task: ``images[m]`` ``(B, C, H, W)``, ``grids[m]`` ``(B, h, w)``
    (None for image answers), ``cost[m]`` = (equivalents, seconds) per pair, the chains' answers
    ``chain_images`` ``(B, C, ...)`` of the guided search with the prior, and the weight used."""

    task: tasks.Benchmark
    images: dict
    grids: dict
    cost: dict
    chain_images: torch.Tensor
    weight: float


def anchor_answers(setup: Setup, task: tasks.Benchmark, neighbours: int) -> Answers:
    """The answers without search: encoder on the evidence, nearest neighbours, bilinear, own code."""
    enc = anchors.encoder_grids(setup.model, task.observed).cpu()
    own = anchors.encoder_grids(setup.model, task.truth).cpu()
    ans = Answers(task, {}, {}, {}, torch.empty(0), 0.0)
    for m, g in (("encoder-observed", enc), ("own-code", own)):
        ans.images[m], ans.grids[m], ans.cost[m] = setup.decode(g), g, (1.0, math.nan)
    if task.kind != "editing":
        near = anchors.nearest_training(task, setup.train, neighbours)
        nn1, mean = anchors.neighbour_answers(setup.train, near)
        for m, img in (("nearest-neighbour", nn1), ("nn-mean", mean)):
            ans.images[m], ans.grids[m], ans.cost[m] = img, None, (0.0, math.nan)
    if task.kind == "super-resolution":
        ans.images["bilinear"], ans.grids["bilinear"], ans.cost["bilinear"] = task.observed.cpu(), None, (0.0, math.nan)
    return ans


def guided(setup: Setup, task: tasks.Benchmark, weight: float, P, method: str = search.DEFAULT,
           draws=None) -> tasks.Solution:
    """:func:`vqtto.tasks.solve` with the chapter's prior at ``weight`` and ``samples + budget``
    equivalents per pair (``draws``: the prior's completions of an earlier run, to share them)."""
    settings = {"temperature": P.temperature} if method == "screened-sa" else {}
    return tasks.solve(setup.model, task, method=method, prior=setup.prior, weight=weight, draws=draws,
                       samples=P.samples, chains=P.chains, budget=P.samples + P.budget, settings=settings)


def best_draw(setup: Setup, task: tasks.Benchmark, draws: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` the prior's draw ``(B, S, h, w)`` of lowest task loss (the prior-only answer)."""
    losses = tasks.guided.draw_losses(setup.model, task, draws)
    return draws[torch.arange(draws.shape[0]), losses.argmin(1)]


def search_answers(setup: Setup, task: tasks.Benchmark, ans: Answers, weight: float, P) -> Answers:
    """Add the searches' answers to ``ans``, all :func:`vqtto.tasks.solve` calls at ``samples +
    budget`` equivalents per pair: the default search from the encoder's answer (no prior), the
    prior's best draw, the relaxed search from the best draws without (``relaxed-draws``) and with
    the prior (``relaxed-prior``, and the mean of its chains), the annealed screened search with the
    prior, and the default search with the prior from the codes of the training images nearest to
    the evidence (``exemplar-prior``, and the mean of its chains, ``exemplar-mean``)."""
    runs, draws = {}, None
    for m, method, w in (("relaxed-draws", search.DEFAULT, 0.0), ("relaxed-prior", search.DEFAULT, weight),
                         ("screened-sa-prior", "screened-sa", weight)):
        runs[m] = guided(setup, task, w, P, method, draws)
        draws = runs[m].draws
        ans.images[m], ans.grids[m], ans.cost[m] = runs[m].images, runs[m].grids, (runs[m].equivalents, runs[m].seconds)
    first = best_draw(setup, task, draws)
    ans.images["prior-resample"], ans.grids["prior-resample"] = setup.decode(first), first
    ans.cost["prior-resample"] = (float(P.samples), math.nan)
    plain = tasks.solve(setup.model, task, budget=P.samples + P.budget)
    ans.images[search.DEFAULT], ans.grids[search.DEFAULT], ans.cost[search.DEFAULT] = plain.images, plain.grids, (
        plain.equivalents, plain.seconds)
    near = tasks.solve(setup.model, task, prior=setup.prior, weight=weight, exemplars=setup.train, samples=P.samples,
                       chains=P.chains, budget=P.samples + P.budget)
    ans.images["exemplar-prior"], ans.grids["exemplar-prior"] = near.images, near.grids
    ans.cost["exemplar-prior"] = ans.cost["exemplar-mean"] = (near.equivalents, near.seconds)
    ans.images["exemplar-mean"], ans.grids["exemplar-mean"] = setup.decode(near.chains).mean(1), None
    ans.chain_images = setup.decode(runs["relaxed-prior"].chains)
    ans.images["chain-mean"], ans.grids["chain-mean"] = ans.chain_images.mean(1), None
    ans.cost["chain-mean"] = ans.cost["relaxed-prior"]
    ans.weight = weight
    return ans


# --- measuring -----------------------------------------------------------------------------------

@dataclass
class MethodRow:
    """One method on one task: medians over pairs (MSE with its 95% interval) and the prior's view."""

    task: str
    method: str
    mse: Estimate
    psnr: float
    residual: float
    nll: float | None
    inside: Estimate | None
    spread: float | None
    equivalents: float
    seconds: float


def measures(setup: Setup, ans: Answers) -> dict[str, dict]:
    """Per method: :func:`vqtto.tasks.measure` plus ``nll`` and ``inside`` (grids only), each ``(B,)``."""
    out = {}
    lo, hi = setup.real_range
    for m, img in ans.images.items():
        meas = tasks.measure(ans.task, img)
        if ans.grids.get(m) is not None:
            meas["nll"] = setup.nll(ans.grids[m])
            meas["inside"] = (meas["nll"] >= lo) & (meas["nll"] <= hi)
        out[m] = meas
    return out


def chain_spread(ans: Answers) -> float:
    """Median over pairs of the chains' pixel standard deviation, averaged over the measured pixels."""
    if ans.chain_images.shape[1] < 2:
        return 0.0
    sd = ans.chain_images.std(1)  # (B, C, H, W)
    m = ans.task.measured.cpu().expand_as(sd).float()
    return stats.median((sd * m).flatten(1).sum(1) / m.flatten(1).sum(1))


def method_rows(setup: Setup, ans: Answers) -> list[MethodRow]:
    """The task's table: one row per method, anchors first."""
    meas, rows = measures(setup, ans), []
    for m in [x for x in ANCHORS + SEARCHES if x in meas]:
        d = meas[m]
        rows.append(MethodRow(ans.task.name, m, stats.median_estimate(d["mse"]), stats.median(d["psnr"]),
                              stats.median(d["residual"]), stats.median(d["nll"]) if "nll" in d else None,
                              stats.share_estimate(d["inside"]) if "inside" in d else None,
                              chain_spread(ans) if m == "relaxed-prior" else None, *ans.cost[m]))
    return rows


def table(rows: Sequence[MethodRow]) -> list[dict]:
    """Display rows of :class:`MethodRow`."""
    def num(x, fmt=".4f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{fmt}}"

    return [{"task": r.task, "method": method_label(r.method), "MSE (measured pixels) [95%]": r.mse.text(".4f"),
             "PSNR dB": num(r.psnr, ".1f"), "residual": num(r.residual), "NLL/pos": num(r.nll, ".2f"),
             "inside real 95%": "-" if r.inside is None else r.inside.percent(), "chain spread": num(r.spread, ".3f"),
             "equivalents/pair": num(r.equivalents, ".0f"), "ms/pair": num(r.seconds * 1e3, ".1f")} for r in rows]


# --- tuning lambda -------------------------------------------------------------------------------

def tune_weight(setup: Setup, val_tasks: Mapping[str, tasks.Benchmark], weights: Sequence[float], P):
    """For each task, the relaxed guided search on the validation images at lambda = 0 and every weight.

    Returns ``(chosen, sweep, answers)``: ``chosen[task]`` the weight > 0 of lowest median MSE on the
    measured pixels among those that put at least ``P.val_inside`` of the validation codes inside the
    real codes' central 95% (:func:`choose_weight`), ``sweep`` rows (task, weight, median MSE, share
    inside), ``answers[(task, w)]`` the :class:`~vqtto.tasks.Solution` of each run (for the explorer).
    """
    chosen, sweep, answers = {}, [], {}
    for name, task in val_tasks.items():
        draws = None
        for w in [0.0, *weights]:
            r = guided(setup, task, w, P, draws=draws)
            draws = r.draws
            mse = stats.median(tasks.measure(task, r.images)["mse"])
            nll = setup.nll(r.grids)
            inside = stats.share((nll >= setup.real_range[0]) & (nll <= setup.real_range[1]))
            sweep.append({"task": name, "lambda": w, "median MSE": mse, "inside real 95%": inside})
            answers[(name, w)] = r
        chosen[name] = choose_weight([row for row in sweep if row["task"] == name], P.val_inside)
    return chosen, sweep, answers


def choose_weight(rows: Sequence[dict], inside_goal: float) -> float:
    """The weight > 0 of lowest median MSE among the sweep ``rows`` whose share inside is at least
    ``inside_goal``; when none reaches it, the weight of the highest share (then the lowest MSE)."""
    tried = [r for r in rows if r["lambda"] > 0]
    good = [r for r in tried if r["inside real 95%"] >= inside_goal]
    if good:
        return min(good, key=lambda r: r["median MSE"])["lambda"]
    return min(tried, key=lambda r: (-r["inside real 95%"], r["median MSE"]))["lambda"]


def sweep_figure(sweep: Sequence[dict], title: str):
    """Median MSE (left) and share of codes inside the real central 95% (right) against lambda, per task."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = list(dict.fromkeys(r["task"] for r in sweep))
    for name in names:
        rs = [r for r in sweep if r["task"] == name]
        x = [max(r["lambda"], 1e-4) for r in rs]
        axes[0].plot(x, [r["median MSE"] for r in rs], "o-", label=name)
        axes[1].plot(x, [r["inside real 95%"] for r in rs], "o-", label=name)
    for ax, ylab in zip(axes, ("median MSE on the measured pixels", "share of codes inside the real 95%")):
        ax.set_xscale("log")
        ax.set_xlabel("lambda (0 drawn at 1e-4)")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
    axes[1].axhline(0.9, color="k", ls=":", lw=1)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- figures -------------------------------------------------------------------------------------

#: Column heads of :func:`answers_figure` (the full names are in the table).
SHORT = {"encoder-observed": "encoder", "nearest-neighbour": "nearest", "nn-mean": "10-NN mean", "bilinear": "bilinear",
         search.DEFAULT: "default, no prior", "prior-resample": "prior only", "relaxed-draws": "draws + search, λ=0",
         "relaxed-prior": "draws + search, λ", "chain-mean": "chain mean", "screened-sa-prior": "draws + annealing, λ",
         "exemplar-prior": "exemplars + search, λ", "exemplar-mean": "exemplar mean"}


def answers_figure(ans: Answers, show: Sequence[int], title: str):
    """Rows: images ``show``; columns: what the user has, each answer, the guided chains, the truth."""
    methods = [m for m in ANCHORS + SEARCHES if m in ans.images and m != "own-code"]
    n_chain = ans.chain_images.shape[1]
    cols = ["observed", *methods, *[f"chain {c + 1}" for c in range(n_chain)], "truth"]
    fig, axes = plt.subplots(len(show), len(cols), figsize=(1.1 * len(cols), 1.25 * len(show) + 0.6), squeeze=False)
    for r, i in enumerate(show):
        panels = [ans.task.observed[i].cpu(), *[ans.images[m][i] for m in methods],
                  *[ans.chain_images[i, c] for c in range(n_chain)], ans.task.truth[i].cpu()]
        for c, (img, name) in enumerate(zip(panels, cols)):
            ax = axes[r, c]
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
            bare(ax)
            if r == 0:
                ax.set_title(SHORT.get(name, name), fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def weight_explorer_panels(setup: Setup, val_tasks: Mapping[str, tasks.Benchmark], answers: Mapping, weights: Sequence[float],
                    pairs: Sequence[int]) -> dict:
    """PNGs for the static explorer ``{(task, str(lambda)): png}``: observed, best answer, chains, truth."""
    from ..widgets import png_bytes

    panels = {}
    for name, task in val_tasks.items():
        for w in [0.0, *weights]:
            r = answers[(name, w)]
            chains = setup.decode(r.chains)
            fig, axes = plt.subplots(len(pairs), 3 + chains.shape[1], figsize=(1.3 * (3 + chains.shape[1]), 1.4 * len(pairs) + 0.4),
                                     squeeze=False)
            best = r.images
            for row, i in enumerate(pairs):
                imgs = [task.observed[i].cpu(), best[i], *chains[i], task.truth[i].cpu()]
                heads = ["observed", "best answer", *[f"chain {c + 1}" for c in range(chains.shape[1])], "truth"]
                for c, (img, head) in enumerate(zip(imgs, heads)):
                    axes[row, c].imshow(img[0], cmap="gray", vmin=0, vmax=1)
                    bare(axes[row, c])
                    if row == 0:
                        axes[row, c].set_title(head, fontsize=7)
            fig.suptitle(f"{name}, lambda = {w:g}", fontsize=8)
            fig.tight_layout()
            panels[(name, f"{w:g}")] = png_bytes(fig, dpi=70)
    return panels


# --- editing -------------------------------------------------------------------------------------

@dataclass
class EditRow:
    """The editing search at one radius: median MSE to the edited image [95%] and the codes' NLL."""

    radius: int
    mse: Estimate
    nll: float
    changed: float


def edit_curve(setup: Setup, task: tasks.Benchmark, radii: Sequence[int], weight: float, P) -> tuple[list[EditRow], dict]:
    """The default search with the prior within each Hamming radius of the source's code (one chain from
    the source's code, ``samples + budget`` equivalents); rows and answers per radius."""
    rows, found = [], {}
    for r in radii:
        t = task.with_radius(int(r))
        res = tasks.solve(setup.model, t, prior=setup.prior, weight=weight, samples=1, chains=1, budget=P.samples + P.budget)
        img = res.images
        changed = (res.grids != task.start_grids.cpu()).flatten(1).sum(1)
        rows.append(EditRow(int(r), stats.median_estimate(tasks.measure(t, img)["mse"]),
                            stats.median(setup.nll(res.grids)), stats.median(changed)))
        found[int(r)] = img
    return rows, found


def radius_needed(rows: Sequence[EditRow], own_mse: float) -> int | None:
    """The smallest radius whose median MSE is within 10% of the edited image's own code (None: none)."""
    for r in rows:
        if r.mse.value <= 1.1 * own_mse:
            return r.radius
    return None


def edit_figure(rows: Sequence[EditRow], source_mse: float, own_mse: float, title: str):
    """Median MSE to the edited image (95% interval) against the radius, with the source's and own code's."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [r.radius for r in rows]
    ax.errorbar(x, [r.mse.value for r in rows], yerr=[[r.mse.value - r.mse.low for r in rows],
                                                      [r.mse.high - r.mse.value for r in rows]],
                fmt="o-", color=method_color("relaxed-prior"), label="relaxed search with the prior, within the radius")
    ax.axhline(source_mse, color=method_color("source"), ls="--", label="source's code (radius 0)")
    ax.axhline(own_mse, color=method_color("own-code"), ls=":", label="edited image's own code")
    ax.set_xscale("log", base=2)
    return finish(fig, ax, "Hamming radius r (positions that may change)", "median MSE to the edited image", title)


# --- verdicts ------------------------------------------------------------------------------------

@dataclass
class Lead:
    """Median paired MSE difference (``method`` minus ``anchor``, image by image; negative = better) [95%]."""

    method: str
    anchor: str
    diff: Estimate


@dataclass
class TaskVerdict:
    """The issue's test on one task, decided from paired differences over the reported images.

    ``against`` names the anchors a searched answer must beat and ``leads`` holds every search's
    :class:`Lead` over each; ``winners`` are the searches whose intervals lie below zero against
    every anchor. ``residual_ok``: the relaxed search with the prior fits the evidence no worse than
    the truth's own code. ``causal``: the relaxed search with the prior minus without (same draws,
    starts and budget); ``inside_prior`` / ``inside_control``: their shares of codes inside the real
    codes' central 95% of log-likelihood. ``completion``: the completion targets' leads (a single answer
    from the exemplars against the nearest training image, the mean of its chains against the 10-NN
    mean; empty when not run).
    """

    task: str
    weight: float
    against: list[str]
    leads: list[Lead]
    winners: list[str]
    residual_ok: bool
    causal: Estimate
    inside_prior: Estimate
    inside_control: Estimate
    text: str
    completion: list[Lead] = field(default_factory=list)  # exemplar-prior vs nearest, exemplar-mean vs nn-mean


def task_verdict(setup: Setup, ans: Answers) -> TaskVerdict:
    """Which searched answers beat the task's anchors (paired), and what the prior does (paired
    against lambda = 0 with the same draws and starts)."""
    meas = measures(setup, ans)
    task = ans.task
    against = ["nn-mean"] if task.kind == "inpainting" else ["nearest-neighbour", "bilinear"]
    searched = [m for m in SEARCHES if m in meas]
    leads = [Lead(m, a, stats.median_estimate(meas[m]["mse"] - meas[a]["mse"])) for m in searched for a in against]
    winners = [m for m in searched if all(l.diff.high < 0 for l in leads if l.method == m)]
    residual_ok = stats.median(meas["relaxed-prior"]["residual"]) <= stats.median(meas["own-code"]["residual"])
    causal = stats.median_estimate(meas["relaxed-prior"]["mse"] - meas["relaxed-draws"]["mse"])
    inside_p, inside_c = (stats.share_estimate(meas[m]["inside"]) for m in ("relaxed-prior", "relaxed-draws"))
    anchors_text = " and the ".join(method_label(a).lower() for a in against)
    won = "; ".join(method_label(m).lower() for m in winners)
    effect = "lowers" if causal.high < 0 else "raises" if causal.low > 0 else "does not measurably change"
    own = next(l.diff for l in leads if l.method == "relaxed-prior" and l.anchor == against[0])
    beat = (f"{len(winners)} of {len(searched)} searches beat the {anchors_text} (paired): {won}" if winners else
            f"no search beats the {anchors_text} (paired)")
    text = (f"**{task.name}**: {beat}; the relaxed search with the prior is at {own.text('+.4f')} against the "
            f"{method_label(against[0]).lower()}; "
            f"its residual is {'no larger' if residual_ok else 'larger'} than the truth's own code's. The prior "
            f"(lambda = {ans.weight:g}) {effect} the MSE (paired {causal.text('+.4f')}) and puts {inside_p.percent()} of "
            f"the codes inside the real codes' central 95% of log-likelihood, against {inside_c.percent()} without it.")
    completion = completion_leads(meas, task.kind)
    text += completion_sentence(completion)
    return TaskVerdict(task.name, ans.weight, against, leads, winners, residual_ok, causal, inside_p, inside_c, text,
                       completion)


#: The completion targets: (answer, anchor it must beat) -- a single answer from the exemplars against
#: the nearest training image, the mean of its chains against the 10-NN mean.
COMPLETION_TARGETS = (("exemplar-prior", "nearest-neighbour"), ("exemplar-mean", "nn-mean"))


def completion_leads(meas: Mapping[str, dict], kind: str) -> list[Lead]:
    """The completion targets' paired leads (empty for editing or when the exemplar rows were not run)."""
    if kind == "editing" or any(m not in meas for m, _ in COMPLETION_TARGETS):
        return []
    return [Lead(m, a, stats.median_estimate(meas[m]["mse"] - meas[a]["mse"])) for m, a in COMPLETION_TARGETS]


def completion_sentence(leads: Sequence[Lead]) -> str:
    """Whether each completion target holds, from its lead's interval ("" when not run)."""
    if not leads:
        return ""
    parts = []
    for lead, what in zip(leads, ("a single answer", "the mean of its chains")):
        d = lead.diff
        verdict = "below" if d.high < 0 else "above" if d.low > 0 else "not resolved against"
        parts.append(f"{what} is {verdict} the {method_label(lead.anchor).lower()} ({d.text('+.4f')})")
    return " From the exemplars' codes, " + "; ".join(parts) + " (median paired MSE differences)."


def sampler_note(rows: Sequence[MethodRow]) -> str:
    """A sentence on how chapter 3's sampler with the prior fares beside the relaxed search with it, per task."""
    by = {(r.task, r.method): r for r in rows}
    parts = []
    for task in dict.fromkeys(r.task for r in rows):
        a, b = by.get((task, "screened-sa-prior")), by.get((task, "relaxed-prior"))
        if a is not None and b is not None:
            parts.append(f"{task} {a.mse.value / b.mse.value:.1f}x")
    return ("Median MSE of the screened annealing with the prior divided by the relaxed search's with the prior, at "
            "the same cost: " + "; ".join(parts) + ".")


@dataclass
class ConstrainedTasksResult(ChapterResult):
    """What chapter 8 measured: per task the methods' rows and the verdicts, the lambda sweep, editing.

    Attributes:
        rows: every method on every task (reported images).
        verdicts: per inpainting / super-resolution task, :class:`TaskVerdict`.
        chosen: the weight lambda chosen per task on the validation images.
        sweep: the validation sweep rows (task, lambda, median MSE, share inside).
        real_range: the real test codes' central 95% of NLL per position.
        edit_rows / edit_radius / edit_own_distance: the editing curve, the radius it needs (None:
            none tried was enough) and the median Hamming distance between the source's code and the
            edited image's own code.
        inside_target: every task's share inside the real 95% with the prior is at least 90%.
        stays_real: the causal verdict on the paper's "stay in high-probability regions" claim.
    """

    CHAPTER: ClassVar[str] = "constrained_tasks"
    dataset: str
    k: int
    n_pairs: int
    budget: float
    samples: int
    rows: list[MethodRow]
    verdicts: list[TaskVerdict]
    chosen: dict
    sweep: list[dict]
    real_range: list[float]
    edit_rows: list[EditRow]
    edit_radius: int | None
    edit_own_distance: float
    inside_target: bool
    stays_real: str


def stays_real_verdict(verdicts: Sequence[TaskVerdict]) -> tuple[bool, str]:
    """Whether the prior keeps >= 90% of codes inside the real range on every task, and the sentence."""
    ok = all(v.inside_prior.value >= 0.9 for v in verdicts)
    better = [v.task for v in verdicts if v.causal.high < 0]
    worse = [v.task for v in verdicts if v.causal.low > 0]
    inside = "; ".join(f"{v.task} {v.inside_prior.percent()} (without: {v.inside_control.percent()})" for v in verdicts)
    text = (f"With the prior in the energy the found codes lie inside the real codes' central 95% of log-likelihood in "
            f"{inside}; {'every task reaches' if ok else 'not every task reaches'} the 90% target. Its effect on the task "
            f"(paired against the same search without it): better on {'; '.join(better) or 'no task'}; worse on "
            f"{'; '.join(worse) or 'no task'}; not resolved on the rest.")
    return ok, text


# --- the methods' table as a figure (display only) -----------------------------------------------

def dot_plot(rows: Sequence[MethodRow], title: str | None = None):
    """Per task (one panel each), every searched answer's median MSE on the measured pixels with its 95%
    interval over the reported images; the anchors (answers without search) as vertical reference lines,
    named once in the figure's legend.

    ``rows`` are :class:`MethodRow` (every method on every task, as :func:`method_rows` makes them).
    """
    if not rows:
        raise ValueError("dot_plot: rows must not be empty (one MethodRow per task and method)")
    names = list(dict.fromkeys(r.task for r in rows))
    searched = [m for m in SEARCHES if any(r.method == m for r in rows)]
    shown_anchors = [a for a in ANCHORS if any(r.method == a for r in rows)]
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.0 * ncol + 1.2, 0.36 * len(searched) * nrow + 1.1 * nrow + 0.9),
                             squeeze=False)
    styles = dict(zip(ANCHORS, ("--", ":", "-.", (0, (5, 1)), (0, (1, 1)))))
    for i, (ax, name) in enumerate(zip(axes.flat, names)):
        mine = {r.method: r for r in rows if r.task == name}
        for y, m in enumerate(searched):
            if m in mine:
                e = mine[m].mse
                ax.errorbar([e.value], [y], xerr=[[e.value - e.low], [e.high - e.value]], fmt="o", ms=5, capsize=3,
                            color=method_color(m))
        for a in shown_anchors:
            if a in mine:
                ax.axvline(mine[a].mse.value, color=method_color(a), ls=styles[a], lw=1.3)
        ax.set_yticks(range(len(searched)))
        ax.set_yticklabels([SHORT.get(m, method_label(m)) for m in searched] if i % ncol == 0 else [], fontsize=9)
        ax.set_ylim(len(searched) - 0.5, -0.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("median MSE, measured pixels", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="x")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=method_color(a), ls=styles[a], lw=1.3) for a in shown_anchors]
    fig.legend(handles, [f"anchor: {SHORT.get(a, method_label(a))}" for a in shown_anchors], loc="lower center",
               ncol=len(shown_anchors), fontsize=8.5, frameon=False)
    fig.suptitle((title + "; " if title else "") + "dots: median, whiskers: 95% interval over images", fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if nrow == 1 else 0.04, 1, 1))
    return fig


def pivot_table(rows: Sequence[MethodRow]) -> list[dict]:
    """Methods (short names, as in :func:`dot_plot`) x tasks, each cell the method's median MSE on the measured
    pixels (the intervals are in the figure and in the full table)."""
    from ..report import pivot

    return pivot([{"method": SHORT.get(r.method, method_label(r.method)), "task": r.task, "mse": f"{r.mse.value:.4f}"}
                  for r in rows],
                 index="method", columns="task", value="mse")
