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
                     default=96),
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
#: The masked-token prior's rows run the same default search, the PixelCNN in the energy, from its
#: completions, which condition on every visible code ("masked-prior"), and the mean of its decoded completions, its posterior mean ("masked-mean").
SEARCHES = (search.DEFAULT, "prior-resample", "relaxed-draws", "relaxed-prior", "chain-mean", "screened-sa-prior",
            "exemplar-prior", "exemplar-mean", "masked-prior", "masked-mean")
#: The priors the chapter compares (labels of the weight sweep and the explorer): the raster-order PixelCNN
#: of chapter 4 and the bidirectional masked-token prior (:mod:`vqtto.models.masked`).
PRIORS = ("PixelCNN", "masked")


# --- setting up ----------------------------------------------------------------------------------

@dataclass
class Setup:
    """The models and reference data every task uses.

    Attributes:
        model: the VQ-VAE; prior: its PixelCNN; train: ``(N, C, H, W)`` training images (CPU).
        real_range: the central 95% of the real test codes' NLL per position, ``(low, high)``.
        fields: ``(h*w, H, W)`` bool receptive fields of the model's token positions.
        masked: the masked-token prior over the same codes (None: its rows are not run).
        clf: the class-consistency classifier (:func:`vqtto.tasks.completion.classifier`; None: not measured).
    """

    model: object
    prior: object
    train: torch.Tensor
    real_range: tuple[float, float]
    fields: torch.Tensor
    masked: object = None
    clf: object = None

    def prior_of(self, name: str):
        """The prior called ``name`` (one of :data:`PRIORS`)."""
        if name not in PRIORS:
            raise ValueError(f"prior must be one of {list(PRIORS)}, got {name!r}")
        return self.prior if name == "PixelCNN" else self.masked

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


def load_setup(P, device) -> Setup:
    """The chapter's models from the cache (trained if absent): the VQ-VAE and its PixelCNN (chapter 4's),
    the masked-token prior over the same codes and, for Fashion-MNIST, the class-consistency classifier.

    The classifier comes first: it needs no VQ-VAE, so in ``make book`` it trains while chapter 1 still
    trains the VQ-VAE the priors wait for."""
    from ... import data, models
    from ...models import masked as masked_prior
    from ...tasks import completion

    clf = completion.classifier(P.dataset, P.profile, device=device) if P.dataset == "fashion-mnist" else None
    trained = models.prior(P.dataset, k=P.k, profile=P.profile, device=device)
    model, prior = trained.vqvae.model.eval(), trained.model.eval()
    masked = masked_prior.masked_prior(P.dataset, k=P.k, profile=P.profile, device=device).model.eval()
    fields = tasks.receptive_fields(model, (prior.cfg.height, prior.cfg.width), share=P.field_share)
    return Setup(model, prior, data.load(P.dataset, "train").images, real_range(trained), fields, masked, clf)


def models_summary(setup: Setup, P) -> str:
    """A few lines on the models: the priors' test scores (a likelihood, a pseudo-likelihood) and the classifier's accuracy."""
    from ...models import masked as masked_prior
    from ... import models

    pix = models.prior(P.dataset, k=P.k, profile=P.profile, progress=False).test
    msk = masked_prior.masked_prior(P.dataset, k=P.k, profile=P.profile, progress=False).test
    lines = [f"PixelCNN: test NLL {pix['nats_per_position']:.2f} nats per position (a likelihood: each code given "
             f"those before it in raster order)",
             f"masked-token prior: test pseudo-NLL {msk['pseudo_nats_per_position']:.2f} nats per position (each code "
             f"given all the others: a pseudo-likelihood, lower by construction, not comparable as a likelihood); "
             f"uniform over k: {msk['uniform_nats']:.2f}"]
    if setup.clf is not None:
        lines.append(f"classifier: test accuracy {100 * setup.clf.test['accuracy']:.1f}%")
    lines.append(f"real codes' NLL per position under the PixelCNN, central 95%: "
                 f"[{setup.real_range[0]:.2f}, {setup.real_range[1]:.2f}] nats")
    return "\n".join(lines)


def labels_of(dataset: str, pairs) -> torch.Tensor:
    """``(B,)`` int64 class labels of the pairs' targets (the truth of inpainting and super-resolution)."""
    from ... import data

    return data.load(dataset, "test").labels[pairs.target_ids]


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
    (None for image answers), ``cost[m]`` = (equivalents, seconds) per pair, ``chains[m]`` the decoded
    chains ``(B, C, ...)`` of each guided search, the weight per prior and the truth's class ``labels``
    ``(B,)`` (None: class consistency is not measured)."""

    task: tasks.Benchmark
    images: dict
    grids: dict
    cost: dict
    chains: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    labels: torch.Tensor | None = None

    @property
    def chain_images(self) -> torch.Tensor:
        """``(B, C, ...)`` the PixelCNN-guided search's decoded chains."""
        return self.chains["relaxed-prior"]

    @property
    def weight(self) -> float:
        """The PixelCNN's weight lambda."""
        return self.weights["PixelCNN"]


def anchor_answers(setup: Setup, task: tasks.Benchmark, neighbours: int, labels: torch.Tensor | None = None) -> Answers:
    """The answers without search: encoder on the evidence, nearest neighbours, bilinear, own code
    (``labels``: the truth's classes, kept for the class-consistency measure)."""
    enc = anchors.encoder_grids(setup.model, task.observed).cpu()
    own = anchors.encoder_grids(setup.model, task.truth).cpu()
    ans = Answers(task, {}, {}, {}, labels=labels)
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
           draws=None, prior: str = "PixelCNN") -> tasks.Solution:
    """:func:`vqtto.tasks.solve` from the draws of ``prior`` (one of :data:`PRIORS`) with the PixelCNN's NLL in
    the energy at ``weight``, ``samples + budget`` equivalents per pair (``draws``: completions of an earlier
    run, to share them).

    The masked prior gives the draws only: its pseudo-NLL in the energy would cost ``h * w`` prior passes
    per scored grid (:class:`vqtto.models.masked.MaskedGridPrior`), and the PixelCNN stays the one judge.
    """
    settings = {"temperature": P.temperature} if method == "screened-sa" else {}
    if draws is None and setup.prior_of(prior) is setup.masked:
        draws = tasks.prior_draws(setup.model, setup.masked, task, P.samples)
    return tasks.solve(setup.model, task, method=method, prior=setup.prior, weight=weight, draws=draws,
                       samples=P.samples, chains=P.chains, budget=P.samples + P.budget, settings=settings)


def best_draw(setup: Setup, task: tasks.Benchmark, draws: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` the prior's draw ``(B, S, h, w)`` of lowest task loss (the prior-only answer)."""
    losses = tasks.guided.draw_losses(setup.model, task, draws)
    return draws[torch.arange(draws.shape[0]), losses.argmin(1)]


def search_answers(setup: Setup, task: tasks.Benchmark, ans: Answers, weights: Mapping[str, float], P) -> Answers:
    """Add the searches' answers to ``ans``, all :func:`vqtto.tasks.solve` calls at ``samples +
    budget`` equivalents per pair: the default search from the encoder's answer (no prior), the
    prior's best draw, the relaxed search from the best draws without (``relaxed-draws``) and with
    the prior (``relaxed-prior``, and the mean of its chains), the annealed screened search with the
    prior, the default search with the prior from the codes of the training images nearest to
    the evidence (``exemplar-prior``, and the mean of its chains, ``exemplar-mean``) and, when the
    setup has one, the default search from the masked prior's completions with the PixelCNN in the
    energy (``masked-prior``) and the mean of those completions decoded (``masked-mean``).
    ``weights[prior]``: lambda per prior of :data:`PRIORS` (tuned with that prior's draws)."""
    weight = weights["PixelCNN"]
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
    ans.chains["exemplar-prior"] = setup.decode(near.chains)
    ans.images["exemplar-mean"], ans.grids["exemplar-mean"] = ans.chains["exemplar-prior"].mean(1), None
    ans.chains["relaxed-prior"] = setup.decode(runs["relaxed-prior"].chains)
    ans.images["chain-mean"], ans.grids["chain-mean"] = ans.chain_images.mean(1), None
    ans.cost["chain-mean"] = ans.cost["relaxed-prior"]
    ans.weights = {"PixelCNN": weight}
    if setup.masked is not None:
        masked_answers(setup, task, ans, weights["masked"], P)
    return ans


def masked_answers(setup: Setup, task: tasks.Benchmark, ans: Answers, weight: float, P) -> None:
    """Add the masked prior's rows to ``ans``: the default search from its completions (conditioned on every
    visible code) with the PixelCNN's NLL in the energy at ``weight`` (``masked-prior``), and its posterior mean,
    the mean of the ``samples`` completions decoded (``masked-mean``, paid for by the draws)."""
    run = guided(setup, task, weight, P, prior="masked")
    ans.images["masked-prior"], ans.grids["masked-prior"] = run.images, run.grids
    ans.cost["masked-prior"] = (run.equivalents, run.seconds)
    ans.images["masked-mean"], ans.grids["masked-mean"] = setup.decode(run.draws).mean(1), None
    ans.cost["masked-mean"] = (float(P.samples), math.nan)
    ans.chains["masked-prior"] = setup.decode(run.chains)
    ans.weights["masked"] = weight


# --- measuring -----------------------------------------------------------------------------------

@dataclass
class MethodRow:
    """One method on one task: medians over pairs (MSE and SSIM with their 95% intervals), the prior's
    view, and the share of answers the classifier puts in the truth's class (Wilson interval) with its
    mean confidence (None where not measured)."""

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
    ssim: Estimate | None = None
    agree: Estimate | None = None
    confidence: float | None = None


def measures(setup: Setup, ans: Answers) -> dict[str, dict]:
    """Per method: :func:`vqtto.tasks.measure` plus ``ssim`` on the measured pixels, ``nll`` and ``inside``
    (grids only), ``agree`` and ``confidence`` (when the answers carry labels and the setup a classifier),
    each ``(B,)``."""
    from ...tasks import completion

    out = {}
    lo, hi = setup.real_range
    for m, img in ans.images.items():
        meas = tasks.measure(ans.task, img)
        meas["ssim"] = completion.hidden_ssim(img.float(), ans.task.truth.cpu(), ans.task.measured.cpu())
        if ans.grids.get(m) is not None:
            meas["nll"] = setup.nll(ans.grids[m])
            meas["inside"] = (meas["nll"] >= lo) & (meas["nll"] <= hi)
        if setup.clf is not None and ans.labels is not None:
            meas["agree"], meas["confidence"] = completion.class_consistency(setup.clf, img, ans.labels)
        out[m] = meas
    return out


def chain_spread(ans: Answers, method: str = "relaxed-prior") -> float | None:
    """Median over pairs of ``method``'s chains' pixel standard deviation, averaged over the measured
    pixels: how much the completions differ where the evidence is silent (None: no chains)."""
    chains = ans.chains.get(method)
    if chains is None:
        return None
    if chains.shape[1] < 2:
        return 0.0
    sd = chains.std(1)  # (B, C, H, W)
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
                              chain_spread(ans, m), *ans.cost[m], stats.median_estimate(d["ssim"]),
                              stats.share_estimate(d["agree"]) if "agree" in d else None,
                              float(d["confidence"].mean()) if "confidence" in d else None))
    return rows


def table(rows: Sequence[MethodRow]) -> list[dict]:
    """Display rows of :class:`MethodRow`."""
    def num(x, fmt=".4f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{fmt}}"

    return [{"task": r.task, "method": method_label(r.method), "MSE (measured pixels) [95%]": r.mse.text(".4f"),
             "PSNR dB": num(r.psnr, ".1f"), "SSIM (measured pixels) [95%]": "-" if r.ssim is None else r.ssim.text(".3f"),
             "class kept [95%]": "-" if r.agree is None else r.agree.percent(),
             "confidence": num(r.confidence, ".2f"), "residual": num(r.residual), "NLL/pos": num(r.nll, ".2f"),
             "inside real 95%": "-" if r.inside is None else r.inside.percent(), "chain spread": num(r.spread, ".3f"),
             "equivalents/pair": num(r.equivalents, ".0f"), "ms/pair": num(r.seconds * 1e3, ".1f")} for r in rows]


# --- tuning lambda -------------------------------------------------------------------------------

def tune_weight(setup: Setup, val_tasks: Mapping[str, tasks.Benchmark], weights: Sequence[float], P,
                prior: str = "PixelCNN"):
    """For each task, the guided search from the draws of ``prior`` (one of :data:`PRIORS`; the PixelCNN in
    the energy) on the validation images at lambda = 0 and every weight (the same draws for all).

    Returns ``(chosen, sweep, answers)``: ``chosen[task]`` the weight > 0 of lowest median MSE on the
    measured pixels among those that put at least ``P.val_inside`` of the validation codes inside the
    real codes' central 95% under the PixelCNN, the one judge of both priors (:func:`choose_weight`),
    ``sweep`` rows (prior, task, weight, median MSE, share inside), ``answers[(task, prior, w)]`` the
    :class:`~vqtto.tasks.Solution` of each run (for the explorer).
    """
    chosen, sweep, answers = {}, [], {}
    for name, task in val_tasks.items():
        draws = None
        for w in [0.0, *weights]:
            r = guided(setup, task, w, P, draws=draws, prior=prior)
            draws = r.draws
            mse = stats.median(tasks.measure(task, r.images)["mse"])
            nll = setup.nll(r.grids)
            inside = stats.share((nll >= setup.real_range[0]) & (nll <= setup.real_range[1]))
            sweep.append({"prior": prior, "task": name, "lambda": w, "median MSE": mse, "inside real 95%": inside})
            answers[(name, prior, w)] = r
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
    """Median MSE (left) and share of codes inside the real central 95% (right) against lambda, per task
    (one colour each) and the prior that drew the starts (solid: the PixelCNN, dashed: the masked prior)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    names = list(dict.fromkeys(r["task"] for r in sweep))
    priors = list(dict.fromkeys(r.get("prior", "PixelCNN") for r in sweep))
    for i, name in enumerate(names):
        for prior in priors:
            rs = [r for r in sweep if r["task"] == name and r.get("prior", "PixelCNN") == prior]
            x = [max(r["lambda"], 1e-4) for r in rs]
            style = dict(color=f"C{i}", ls="-" if prior == "PixelCNN" else "--", marker="o" if prior == "PixelCNN" else "s",
                         label=f"{name}, {prior}" if len(priors) > 1 else name)
            axes[0].plot(x, [r["median MSE"] for r in rs], **style)
            axes[1].plot(x, [r["inside real 95%"] for r in rs], **style)
    for ax, ylab in zip(axes, ("median MSE on the measured pixels", "share of codes inside the real 95%")):
        ax.set_xscale("log")
        ax.set_xlabel("lambda (0 drawn at 1e-4)")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
    axes[1].axhline(0.9, color="k", ls=":", lw=1)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- figures -------------------------------------------------------------------------------------

#: Column heads of :func:`answers_figure` (the full names are in the table).
SHORT = {"encoder-observed": "encoder", "nearest-neighbour": "nearest", "nn-mean": "10-NN mean", "bilinear": "bilinear",
         search.DEFAULT: "default, no prior", "prior-resample": "prior only", "relaxed-draws": "draws + search, λ=0",
         "relaxed-prior": "draws + search, λ", "chain-mean": "chain mean", "screened-sa-prior": "draws + annealing, λ",
         "exemplar-prior": "exemplars + search, λ", "exemplar-mean": "exemplar mean",
         "masked-prior": "masked draws + search, λ", "masked-mean": "masked posterior mean"}


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


def explorer_options(val_tasks: Mapping[str, tasks.Benchmark], priors: Sequence[str]) -> list[str]:
    """The explorer's first control: every task with every prior, ``"<task> | <prior>"``."""
    return [f"{name} | {prior}" for name in val_tasks for prior in priors]


#: The guided searches whose chains :func:`completions_figure` shows, with their column heads.
DIVERSE = {"relaxed-prior": "PixelCNN", "masked-prior": "masked prior", "exemplar-prior": "exemplars"}


def completions_figure(ans: Answers, show: Sequence[int], title: str):
    """Several completions per image: rows are images ``show``; columns what the user has, the chains of each
    guided search (PixelCNN draws, masked-prior draws, exemplars; all with the search after them), the truth."""
    groups = [(m, head) for m, head in DIVERSE.items() if m in ans.chains]
    cols = [("observed", None, None)] + [(f"{head} {c + 1}", m, c) for m, head in groups
                                         for c in range(ans.chains[m].shape[1])] + [("truth", None, None)]
    fig, axes = plt.subplots(len(show), len(cols), figsize=(0.95 * len(cols), 1.05 * len(show) + 0.7), squeeze=False)
    for r, i in enumerate(show):
        for c, (head, m, j) in enumerate(cols):
            img = ans.task.observed[i] if head == "observed" else ans.task.truth[i] if head == "truth" else ans.chains[m][i, j]
            ax = axes[r, c]
            ax.imshow(img.cpu()[0], cmap="gray", vmin=0, vmax=1)
            bare(ax)
            if r == 0:
                ax.set_title(head, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def weight_explorer_panels(setup: Setup, val_tasks: Mapping[str, tasks.Benchmark], answers: Mapping, weights: Sequence[float],
                           pairs: Sequence[int], priors: Sequence[str] = ("PixelCNN",)) -> dict:
    """PNGs for the static explorer ``{("<task> | <prior>", str(lambda)): png}``: observed, best answer, chains,
    truth; ``answers[(task, prior, lambda)]`` as :func:`tune_weight` returns them."""
    from ..widgets import png_bytes

    panels = {}
    for (name, task), prior in ((item, prior) for item in val_tasks.items() for prior in priors):
        for w in [0.0, *weights]:
            r = answers[(name, prior, w)]
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
            fig.suptitle(f"{name}, {prior} prior, lambda = {w:g}", fontsize=8)
            fig.tight_layout()
            panels[(f"{name} | {prior}", f"{w:g}")] = png_bytes(fig, dpi=70)
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
    from the exemplars or the masked prior against the nearest training image, a mean against the 10-NN
    mean; empty when not run). ``classes``: each single completion's share of images the classifier puts
    in the truth's class minus the nearest training image's, paired (empty when not measured).
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
    completion: list[Lead] = field(default_factory=list)  # single answers vs nearest, means vs nn-mean
    classes: list[Lead] = field(default_factory=list)  # class kept, single answers minus the nearest image


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
    classes = class_leads(meas, task.kind)
    text += completion_sentence(completion) + class_sentence(classes, meas)
    return TaskVerdict(task.name, ans.weight, against, leads, winners, residual_ok, causal, inside_p, inside_c, text,
                       completion, classes)


#: The completion targets: (answer, anchor it must beat) -- a single answer (the search from the exemplars'
#: codes, or from the masked prior's completions) against the nearest training image, a mean (of the
#: exemplar chains, of the masked prior's completions) against the 10-NN mean.
COMPLETION_TARGETS = (("exemplar-prior", "nearest-neighbour"), ("exemplar-mean", "nn-mean"),
                      ("masked-prior", "nearest-neighbour"), ("masked-mean", "nn-mean"))
#: The single completions whose class consistency is compared with the nearest training image's.
CLASS_TESTED = ("exemplar-prior", "masked-prior", "relaxed-prior")


def completion_leads(meas: Mapping[str, dict], kind: str) -> list[Lead]:
    """The completion targets' paired leads, those whose rows were run (empty for editing)."""
    if kind == "editing":
        return []
    return [Lead(m, a, stats.median_estimate(meas[m]["mse"] - meas[a]["mse"])) for m, a in COMPLETION_TARGETS
            if m in meas and a in meas]


def class_leads(meas: Mapping[str, dict], kind: str) -> list[Lead]:
    """Per single completion of :data:`CLASS_TESTED`, its share of images in the truth's class minus the
    nearest training image's, paired with Newcombe's interval (empty for editing or unmeasured classes)."""
    if kind == "editing" or "agree" not in meas.get("nearest-neighbour", {}):
        return []
    return [Lead(m, "nearest-neighbour", stats.share_difference(meas[m]["agree"], meas["nearest-neighbour"]["agree"]))
            for m in CLASS_TESTED if m in meas]


def _relation(d: Estimate) -> str:
    return "below" if d.high < 0 else "above" if d.low > 0 else "not resolved against"


def completion_sentence(leads: Sequence[Lead]) -> str:
    """Whether each completion target holds, from its lead's interval ("" when not run)."""
    if not leads:
        return ""
    parts = [f"{SHORT.get(l.method, l.method)} is {_relation(l.diff)} the {method_label(l.anchor).lower()} "
             f"({l.diff.text('+.4f')})" for l in leads]
    return " Completion targets (median paired MSE differences): " + "; ".join(parts) + "."


def class_sentence(leads: Sequence[Lead], meas: Mapping[str, dict]) -> str:
    """Class consistency of the single completions against the nearest training image ("" when not measured)."""
    if not leads:
        return ""
    near = stats.share(meas["nearest-neighbour"]["agree"])
    parts = []
    for l in leads:
        d = l.diff
        word = "more often" if d.low > 0 else "less often" if d.high < 0 else "no difference resolved"
        parts.append(f"{SHORT.get(l.method, l.method)} {stats.share(meas[l.method]['agree']):.0%} (paired "
                     f"{d.value:+.0%} [{d.low:+.0%}, {d.high:+.0%}]: {word})")
    return (f" The classifier puts the nearest training image in the truth's class on {near:.0%} of images; "
            + "; ".join(parts) + ".")


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
        chosen_masked: the masked prior's weight chosen per task on the validation images ({} when not run).
        models: the priors' test scores and the classifier's accuracy (:func:`models_summary`).
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
    chosen_masked: dict = field(default_factory=dict)
    models: str = ""


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

#: What :func:`dot_plot` can draw: the :class:`MethodRow` field and the axis label.
DOT_MEASURES = {"mse": "median MSE, measured pixels", "ssim": "median SSIM, measured pixels (higher is better)",
                "agree": "share in the truth's class (higher is better)"}


def dot_plot(rows: Sequence[MethodRow], title: str | None = None, measure: str = "mse"):
    """Per task (one panel each), every searched answer's ``measure`` (one of :data:`DOT_MEASURES`: the median
    MSE or SSIM on the measured pixels, the share the classifier puts in the truth's class) with its 95%
    interval over the reported images; the anchors (answers without search) as vertical reference lines,
    named once in the figure's legend.

    ``rows`` are :class:`MethodRow` (every method on every task, as :func:`method_rows` makes them).
    """
    if measure not in DOT_MEASURES:
        raise ValueError(f"measure must be one of {list(DOT_MEASURES)}, got {measure!r}")
    rows = [r for r in rows if getattr(r, measure) is not None]
    if not rows:
        raise ValueError(f"dot_plot: rows must hold at least one MethodRow with a {measure!r} estimate")
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
                e = getattr(mine[m], measure)
                ax.errorbar([e.value], [y], xerr=[[e.value - e.low], [e.high - e.value]], fmt="o", ms=5, capsize=3,
                            color=method_color(m))
        for a in shown_anchors:
            if a in mine:
                ax.axvline(getattr(mine[a], measure).value, color=method_color(a), ls=styles[a], lw=1.3)
        ax.set_yticks(range(len(searched)))
        ax.set_yticklabels([SHORT.get(m, method_label(m)) for m in searched] if i % ncol == 0 else [], fontsize=9)
        ax.set_ylim(len(searched) - 0.5, -0.5)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(DOT_MEASURES[measure], fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="x")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=method_color(a), ls=styles[a], lw=1.3) for a in shown_anchors]
    fig.legend(handles, [f"anchor: {SHORT.get(a, method_label(a))}" for a in shown_anchors], loc="lower center",
               ncol=len(shown_anchors), fontsize=8.5, frameon=False)
    what = "share" if measure == "agree" else "median"
    fig.suptitle((title + "; " if title else "") + f"dots: {what}, whiskers: 95% interval over images", fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if nrow == 1 else 0.04, 1, 1))
    return fig


def pivot_table(rows: Sequence[MethodRow]) -> list[dict]:
    """Methods (short names, as in :func:`dot_plot`) x tasks, each cell the method's median MSE on the measured
    pixels (the intervals are in the figure and in the full table)."""
    from ..report import pivot

    return pivot([{"method": SHORT.get(r.method, method_label(r.method)), "task": r.task, "mse": f"{r.mse.value:.4f}"}
                  for r in rows],
                 index="method", columns="task", value="mse")
