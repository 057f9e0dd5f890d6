"""Chapter 6, a flow onto the simplex and searching through it (paper sections 5.4 and 6).

The chapter's parameter schema, its tables and figures, and its two verdicts: whether the flow
onto the simplex trains stably on the paper's toy targets, and what the PULSE-style search
through a code-grid flow finds compared with Algorithm 2. The flows, their training and the
search are :mod:`vqtto.flows`; the toy parameters, tables and reverse-KL figure are chapter 5's
(:mod:`vqtto.book.chapters.paper_flow`), reused here for the flows onto the simplex.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch

from ... import flows, stats
from .. import paper
from ...search.losses import mse_to
from ...data import DATASETS
from ...latent import decode_grids
from ...stats import Estimate
from ...params import Param, above, between, chapter_schema, each, nonempty, one_of, seed, work
from ..plots import image_rows, method_color, method_label
from .paper_flow import (TOY_PARAMS, ToyExperimentResult, diverged_configurations, divergence_fractions,
    divergence_rows, final_kls, reverse_kl_figure, run_toy, toy_result_fields)

# The flows onto the simplex compared on the toy targets (ids of :data:`vqtto.flows.FLOW_KINDS`).
SIMPLEX_KINDS = ("simplex", "simplex-untempered")


PARAMS = chapter_schema({
    **TOY_PARAMS,
    "kinds": Param(list, f"flows onto the simplex trained on the toy targets, from {list(SIMPLEX_KINDS)}",
                   nonempty(each(one_of(*SIMPLEX_KINDS), item_kind=str, most=len(SIMPLEX_KINDS))), default=list(SIMPLEX_KINDS)),
    "dataset": Param(str, "data set of the VQ-VAE for the code-grid part", one_of(*DATASETS), default="fashion-mnist"),
    "k_grid": Param(int, "codebook size of the VQ-VAE for the code-grid part (book: 40)", between(3, 4096), default=40),
    "code_images": Param(int, "training images encoded to fit the per-position categorical", between(1, 60000), default=10000),
    "grid_tau": Param(float, "temperature of the relaxed code-grid prior", above(0.0, 10.0), default=0.3),
    "grid_steps": Param(int, "reverse-KL steps of the code-grid flow", work(1, smoke=500, quick=10000, full=100000), default=600),
    "grid_batch": Param(int, "samples per step of the code-grid flow", between(1, 16384), default=64),
    "grid_blocks": Param(int, "coupling layers of the code-grid flow", between(1, 64), default=4),
    "grid_hidden": Param(int, "MLP width of the code-grid flow", between(1, 4096), default=64),
    "grid_lr": Param(float, "Adam learning rate of the code-grid flow", above(0.0, 100.0), default=0.003),
    "n_pairs": Param(int, f"source-target test pairs for the searches (paper: {paper.TABLE1_PAIRS.value})", work(1, smoke=64, quick=1000, full=5000),
                     default=32),
    "pair_seed": Param(int, "seed of vqtto.data.pairs.test_pairs (the same pairs in every chapter)", seed(), default=0),
    "pulse_steps": Param(int, "Adam steps on z in the PULSE-style search", work(1, smoke=500, quick=5000, full=50000), default=200),
    "pulse_lr": Param(float, "Adam learning rate on z", above(0.0, 100.0), default=1.0),
    "pulse_tau": Param(list, "[start, end] temperature annealed during the search (YAML list)", each(above(0.0, 100.0), float, most=2, length=2),
                       default=[3.0, 0.05]),
    "alpha": Param(float, f"Algorithm 2 step size (paper: {paper.ALPHA.value})", above(0.0, 10000.0), default=0.1),
    "lam": Param(int, "most repeats of one Algorithm 2 step before it counts as stalled (the paper's lambda; "
                      "it gives no value)", work(1, smoke=1000, quick=2000, full=10000), default=100),
    "pixelcnn_prior": Param(bool, "also score the codes found under the PixelCNN prior of chapter 4 (k_grid; trained "
                                  "if not cached)", default=True),
    "seed": Param(int, "seed of the code-grid flow and the search starts", seed(), default=0),
})


# --- the toy targets ------------------------------------------------------------------------------

def simplex_toy_verdict(fractions: dict[str, dict[str, float]], n_blocks: int) -> str:
    """A sentence on the divergence of the flows onto the simplex (``n_blocks`` coupling blocks), beside the
    paper's 'unstable in all four'."""
    quote = paper.FLOW_UNSTABLE
    text = (f"The paper reports its flow in R^k {quote.value} (section {quote.section}; chapter 5 shows why). "
            f"Here the flows onto the simplex have {n_blocks} coupling blocks"
            + (f", the paper has {paper.FLOW_BLOCKS.value}: depth is not held equal." if n_blocks != paper.FLOW_BLOCKS.value
               else ", as the paper's.") )
    kinds = {kind for f in fractions.values() for kind in f}
    if "simplex" in kinds:
        ours = diverged_configurations(fractions, "simplex")
        text += (f" The flow onto the simplex diverged in configurations {ours}." if ours else
                 " The flow onto the simplex did not diverge in any run of any configuration.")
    if "simplex-untempered" in kinds:
        plain = diverged_configurations(fractions, "simplex-untempered")
        text += (f" Without the temperature inside the softmax, runs onto the simplex diverged in configurations "
                 f"{plain}: matching the support is necessary, the 1/τ scale matters too." if plain else
                 " Without the temperature inside the softmax no run diverged either, in this run.")
    return text


# --- the code-grid flow -----------------------------------------------------------------------------

@dataclass
class GridFlowFit:
    """How the reverse-KL fit of the code-grid flow went (a diverged fit keeps its last finite weights).

    Attributes:
        steps: steps asked for.
        diverged: a loss or gradient was not finite (the fit stopped there).
        diverged_at: the step it happened at (None: did not diverge).
        reason: ``"non-finite loss"`` or ``"non-finite gradient"`` (None: did not diverge).
        first_loss: the reverse-KL estimate at step 0 (None: not finite).
        final_kl: reverse KL on fresh samples after training (None: diverged).
        seconds: wall time of the fit.
    """

    steps: int
    diverged: bool
    diverged_at: int | None
    reason: str | None
    first_loss: float | None
    final_kl: float | None
    seconds: float


def grid_flow_fit(run: flows.FlowRun, steps: int) -> GridFlowFit:
    """The :class:`GridFlowFit` of the code-grid flow's :class:`vqtto.flows.FlowRun`."""
    return GridFlowFit(steps=steps, diverged=run.diverged, diverged_at=run.diverged_at, reason=run.reason,
                       first_loss=run.losses[0] if run.losses else None, final_kl=run.final_kl, seconds=run.seconds)


def fit_is_close(distances: dict[str, float]) -> bool:
    """The rule for "the flow fits the categorical": its argmax codes' total-variation distance is at most twice
    that of a fresh categorical sample of the same size (sampling noise)."""
    return distances["flow"] <= 2 * distances["sampling"]


def grid_fit_sentence(fit: GridFlowFit, distances: dict[str, float], n_grids: int, grid: tuple[int, int]) -> str:
    """How well the code-grid flow fits its relaxed prior, in numbers; a diverged fit is said to be one, and what follows."""
    head = f"Fitted to {n_grids} index grids of {grid[0]}×{grid[1]} positions, "
    if fit.diverged:
        return head + (f"the code-grid flow **diverged** at step {fit.diverged_at} of {fit.steps} ({fit.reason}). It "
                       "keeps the weights of its last finite step, which fit nothing: the chapter goes on with them, and "
                       "every number below that goes through the trained flow describes that broken flow, not a fitted "
                       "prior.")
    positions = grid[0] * grid[1]
    ratio = distances["flow"] / distances["sampling"]
    return head + (f"the code-grid flow's reverse KL went from {fit.first_loss:.1f} to {fit.final_kl:.1f} nats per grid "
                   f"in {fit.steps} steps ({fit.seconds:.1f} s), {fit.final_kl / positions:.2f} nats per position left. "
                   f"Its argmax codes are at a mean total-variation distance of {distances['flow']:.3f} per position from "
                   f"the categorical it relaxes, against {distances['sampling']:.3f} for a fresh categorical sample of the "
                   f"same size (sampling noise), {ratio:.1f} times as far: "
                   + ("a close fit." if fit_is_close(distances) else
                      "a loose fit, which follows the per-position code frequencies only roughly."))


def categorical_fit_distances(probs: torch.Tensor, flow_grids: torch.Tensor, grid: tuple[int, int],
                              seed: int) -> dict[str, float]:
    """Mean total-variation distance per position to ``probs``: of the flow's argmax grids, and of as many
    fresh categorical samples (pure sampling noise, for scale)."""
    fresh = flows.sample_code_grids(probs, flow_grids.shape[0], grid, seed + 1)
    return {"flow": flows.categorical_fit_error(probs, flow_grids), "sampling": flows.categorical_fit_error(probs, fresh)}


@torch.no_grad()
def code_grid_samples_figure(model, train_codes: torch.Tensor, probs: torch.Tensor, flow_grids: torch.Tensor,
                             grid: tuple[int, int], seed: int, n: int = 10):
    """Decoded index grids, one row each: training images' codes, the per-position categorical, the flow's argmax."""
    device = model.codebook.device
    rows = {"training images": decode_grids(model, train_codes[:n].to(device)),
            "categorical": decode_grids(model, flows.sample_code_grids(probs, n, grid, seed).to(device)),
            "flow (argmax)": decode_grids(model, flow_grids[:n].to(device))}
    return image_rows(rows, title="decoded code grids: real, per-position prior, flow")


# --- the searches ---------------------------------------------------------------------------------

# The rows of the search table, in order: method ids of :data:`vqtto.book.plots.METHODS`, and the flow
# sample each PULSE search starts from.
START = "flow-start"


def row_label(row: str) -> str:
    """The name of a search-table row (a method id, or :data:`START`)."""
    return f"{method_label('simplex-flow')}: a sample (the searches' start)" if row == START else method_label(row)


def row_color(row: str) -> str:
    """The colour of a search-table row (a method id, or :data:`START`)."""
    return method_color("simplex-flow" if row == START else row)


def pulse_searches(model, grid_flow: flows.GridSimplexFlow, targets: torch.Tensor, grid: tuple[int, int], P,
                   device: torch.device) -> tuple[flows.PulseResult, flows.PulseResult]:
    """The PULSE-style search (MSE to ``targets``) through the trained ``grid_flow`` and, as a control,
    through an untrained flow of the same shape (identity couplings)."""
    loss = mse_to(targets)
    options = dict(steps=P.pulse_steps, lr=P.pulse_lr, seed=P.seed, tau_schedule=tuple(P.pulse_tau))
    pulse = flows.pulse_search(model, grid_flow, loss, len(targets), grid, progress=True, **options)
    blank = flows.seeded_grid_flow(grid[0] * grid[1], P.k_grid, P.grid_tau, n_blocks=P.grid_blocks,
                                   hidden=P.grid_hidden, seed=P.seed, device=device)
    return pulse, flows.pulse_search(model, blank, loss, len(targets), grid, **options)


RELATIVE = "relative loss"


def per_pair_values(found: Mapping[str, tuple[torch.Tensor, torch.Tensor]], ref: torch.Tensor,
                    priors: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """``{row: {quantity: (B,) per-pair values}}`` for every entry of ``found`` (row id -> (losses ``(B,)``, index
    grids ``(B, h, w)``)): :data:`RELATIVE` (final loss / the loss of the target's own code ``ref``) and, per prior
    name, the log-likelihood of the grid found (nats per grid; ``priors`` maps grids to ``(B,)`` values)."""
    out = {}
    for row, (losses, indices) in found.items():
        values = {RELATIVE: (losses.cpu() / ref.cpu()).double()}
        for prior, log_likelihood in priors.items():
            values[prior] = log_likelihood(indices).detach().cpu().double()
        out[row] = values
    return out


def pulse_table_rows(values: Mapping[str, Mapping[str, torch.Tensor]]) -> list[dict]:
    """One row per row id of :func:`per_pair_values`: the median relative loss with its 95% bootstrap interval,
    the pairs within 1.1× the own code, and the median log-likelihood under each prior with its interval."""
    rows = []
    for row, quantities in values.items():
        rel = quantities[RELATIVE]
        entry = {"method": row_label(row), "relative loss, median [95% CI]": stats.median_estimate(rel).text(),
                 "pairs at most 1.1× own code": f"{int((rel <= 1.1).sum())}/{len(rel)}"}
        for prior, ll in quantities.items():
            if prior != RELATIVE:
                entry[f"log-lik. under {prior}, median [95% CI] (nats/grid)"] = stats.median_estimate(ll).text(".1f")
        rows.append(entry)
    return rows


@dataclass
class SearchFindings:
    """What the searches show, decided once from the per-pair values; the search verdict is written from these.

    Every ``*_difference`` is the median over pairs of a per-pair difference with its 95% bootstrap interval
    (:class:`Estimate`); a difference "shows" something only where its interval excludes zero.

    Attributes:
        prior_fitted: the code-grid flow did not diverge (otherwise nothing below is about a fitted prior).
        relative_loss: row id -> median relative loss with its interval (trained, control, Algorithm 2, start).
        loss_difference: relative loss through the trained flow minus through the untrained one (control).
        loss_above_control: ``loss_difference``'s interval lies above zero (the trained prior costs loss).
        loss_below_control: it lies below zero (the trained prior buys loss).
        prior_gain: log-likelihood under the per-position categorical, trained minus control (nats per grid).
        prior_gain_nats: ``prior_gain.value``.
        more_plausible_than_control: ``prior_gain``'s interval lies above zero.
        as_plausible_as_own_code: the trained flow's codes' median categorical log-likelihood is within 10% of the
            targets' own codes'.
        pixelcnn: row id -> median PixelCNN log-likelihood with its interval (None: the PixelCNN was not used).
        pixelcnn_vs_alg2: PixelCNN log-likelihood, trained flow minus Algorithm 2 (None: not used).
        pixelcnn_below_alg2: that interval lies below zero (None: not used).
        pixelcnn_below_own_code: the trained flow's median PixelCNN log-likelihood is more than 10% below the
            targets' own codes' (None: not used).
    """

    prior_fitted: bool
    relative_loss: dict[str, Estimate]
    loss_difference: Estimate
    loss_above_control: bool
    loss_below_control: bool
    prior_gain: Estimate
    prior_gain_nats: float
    more_plausible_than_control: bool
    as_plausible_as_own_code: bool
    pixelcnn: dict[str, Estimate] | None
    pixelcnn_vs_alg2: Estimate | None
    pixelcnn_below_alg2: bool | None
    pixelcnn_below_own_code: bool | None


CATEGORICAL = "per-position categorical"
PIXELCNN = "PixelCNN"
_COMPARED = ("pulse", "pulse-untrained", "alg2", START)


def search_findings(values: Mapping[str, Mapping[str, torch.Tensor]], fit: GridFlowFit) -> SearchFindings:
    """The :class:`SearchFindings` of :func:`per_pair_values` (rows ``alg2``, ``pulse``, ``pulse-untrained``,
    ``own-code`` and :data:`START`; priors :data:`CATEGORICAL` and, optionally, :data:`PIXELCNN`)."""
    trained, control, alg2, own = values["pulse"], values["pulse-untrained"], values["alg2"], values["own-code"]
    loss_diff = stats.median_estimate(trained[RELATIVE] - control[RELATIVE])
    gain = stats.median_estimate(trained[CATEGORICAL] - control[CATEGORICAL])
    own_cat = stats.median(own[CATEGORICAL])
    cnn = cnn_alg2 = below_alg2 = below_own = None
    if PIXELCNN in trained:
        cnn = {row: stats.median_estimate(values[row][PIXELCNN]) for row in (*_COMPARED, "own-code")}
        cnn_alg2 = stats.median_estimate(trained[PIXELCNN] - alg2[PIXELCNN])
        below_alg2 = cnn_alg2.excludes() and cnn_alg2.value < 0
        below_own = cnn["pulse"].value < cnn["own-code"].value - 0.1 * abs(cnn["own-code"].value)
    return SearchFindings(
        prior_fitted=not fit.diverged, relative_loss={row: stats.median_estimate(values[row][RELATIVE]) for row in _COMPARED},
        loss_difference=loss_diff, loss_above_control=loss_diff.low > 0, loss_below_control=loss_diff.high < 0,
        prior_gain=gain, prior_gain_nats=gain.value, more_plausible_than_control=gain.low > 0,
        as_plausible_as_own_code=abs(stats.median(trained[CATEGORICAL]) - own_cat) <= 0.1 * abs(own_cat),
        pixelcnn=cnn, pixelcnn_vs_alg2=cnn_alg2, pixelcnn_below_alg2=below_alg2, pixelcnn_below_own_code=below_own)


def pulse_verdict(values: Mapping[str, Mapping[str, torch.Tensor]], fit: GridFlowFit) -> str:
    """Sentences comparing the searches (per-pair values of :func:`per_pair_values`), from :func:`search_findings`."""
    found = search_findings(values, fit)
    rel, n = found.relative_loss, len(values["pulse"][RELATIVE])
    text = (f"Median relative loss over the {n} pairs, with 95% bootstrap intervals: {rel['pulse'].text()} through the "
            f"trained flow, {rel['pulse-untrained'].text()} through the untrained flow (the control), "
            f"{rel['alg2'].text()} for Algorithm 2. ")
    if not found.prior_fitted:
        return text + (f"The code-grid flow diverged at step {fit.diverged_at} ({fit.reason}), so there is no fitted "
                       "prior to search through: the rows through the trained flow measure a broken flow and are no "
                       "evidence for or against the reduction to PULSE.")
    d = found.loss_difference
    text += (f"Pair by pair, the trained flow's relative loss minus the control's is {d.text()} (median [95% CI]); "
             + ("the interval lies above zero: searching through the trained prior ends at a worse loss than "
                "searching through the untrained flow. " if found.loss_above_control else
                "the interval lies below zero: the trained prior lowers the loss. " if found.loss_below_control else
                "the interval includes zero: these pairs show no difference in loss. "))
    g = found.prior_gain
    text += (f"Under the per-position categorical the flow relaxes, the codes found through the trained flow score "
             f"{g.text('.1f')} nats per grid more than the control's (median paired difference [95% CI])"
             + (", a gain the interval shows" if found.more_plausible_than_control else
                ", which the interval does not separate from zero")
             + (", about as plausible as the targets' own codes. " if found.as_plausible_as_own_code else ". "))
    if found.pixelcnn is not None:
        c, a = found.pixelcnn, found.pixelcnn_vs_alg2
        text += (f"Under the PixelCNN, which also scores how neighbouring codes fit together, the median "
                 f"log-likelihoods are {c['pulse'].text('.1f')} through the trained flow, {c['pulse-untrained'].text('.1f')} "
                 f"through the control, {c['alg2'].text('.1f')} for Algorithm 2 and {c['own-code'].value:.1f} for the "
                 f"targets' own codes; trained flow minus Algorithm 2, pair by pair: {a.text('.1f')} nats"
                 + (", below zero: as whole grids, the codes found through the flow are less likely than Algorithm 2's. "
                    if found.pixelcnn_below_alg2 else ". "))
    buys = ("more plausible codes position by position" if found.more_plausible_than_control
            else "no measurable gain in plausibility, even position by position")
    costs = [s for s, flag in (("a lower loss (it loses to the untrained control)", found.loss_above_control),
                               ("grids a PixelCNN finds likely", bool(found.pixelcnn_below_alg2))) if flag]
    text += f"What the trained prior buys here: {buys}. " + (
        f"What it does not buy: {' nor '.join(costs)}." if costs else "It does not measurably cost loss here.")
    return text


def pair_strips_figure(values: Mapping[str, Mapping[str, torch.Tensor]], rows: list[str]):
    """Per-pair values of :func:`per_pair_values` as jittered strips, one panel per quantity (relative loss, each
    prior), one strip per row id in ``rows``; a black bar at the median and a black line over its 95% interval."""
    quantities = list(values[rows[0]])
    fig, axes = plt.subplots(1, len(quantities), figsize=(6.0 * len(quantities), 1.2 + 0.65 * len(rows)),
                             squeeze=False, sharey=True)
    for ax, quantity in zip(axes[0], quantities):
        for i, row in enumerate(rows):
            v = values[row][quantity].numpy()
            jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(v))
            ax.scatter(v, i + jitter, s=12, alpha=0.6, color=row_color(row))
            m = stats.median_estimate(values[row][quantity])
            ax.plot([m.low, m.high], [i, i], color="k", lw=1.5)
            ax.plot([m.value] * 2, [i - 0.3, i + 0.3], color="k", lw=2.5)
        if quantity == RELATIVE:
            ax.axvline(1.0, color="grey", ls="--", lw=1)
            ax.set_xscale("log")
            ax.set_xlabel("final MSE / MSE of the target's own code (log scale)")
        else:
            ax.axvline(stats.median(values["own-code"][quantity]), color="grey", ls="--", lw=1)
            ax.set_xlabel(f"log-likelihood under the {quantity} (nats per grid)")
        ax.set_title(quantity if quantity == RELATIVE else f"log-likelihood, {quantity}", fontsize=9)
    axes[0][0].set_yticks(range(len(rows)), [row_label(row) for row in rows])
    fig.suptitle("Per pair: black bar, median; black line, its 95% bootstrap interval; dashed, the target's own code")
    fig.tight_layout()
    return fig


@torch.no_grad()
def searched_images_figure(model, sources: torch.Tensor, targets: torch.Tensor,
                           found: Mapping[str, tuple[torch.Tensor, torch.Tensor]], n_show: int):
    """Source, target, and the decoded best grid of the own code, Algorithm 2 and the search through the flow."""
    rows = {"source image": sources[:n_show].cpu(), method_label("target"): targets[:n_show].cpu()}
    for row in ("own-code", "alg2", "pulse"):
        rows[row_label(row)] = decode_grids(model, found[row][1][:n_show])
    return image_rows(rows, title="searches towards the target (MSE), best index grid found")


# --- the result ------------------------------------------------------------------------------------

@dataclass
class SimplexFlowResult(ToyExperimentResult):
    """What chapter 6 measured: the flows onto the simplex on the toy targets, the code-grid flow, the searches.

    Attributes:
        kinds: the flows onto the simplex run on the toy targets (the kinds of the inherited
            ``divergence_fraction`` and ``divergence_table``).
        final_kl_simplex / final_kl_untempered: ``{"<configuration>/k=<k>": median final reverse KL}`` of
            the runs that finished (None: none did, or the kind was not run).
        simplex_diverged_configurations / untempered_diverged_configurations: configurations with a
            diverged run of that kind (None: the kind was not run).
        toy_verdict: the sentence on the toy runs.
        grid_flow: how the code-grid flow's fit went (:class:`GridFlowFit`).
        flow_tv_distance / sampling_tv_distance: mean total-variation distance per position of the flow's
            argmax grids, and of as many fresh categorical samples, to the categorical it relaxes.
        tv_ratio: ``flow_tv_distance / sampling_tv_distance``.
        kl_per_position: the code-grid flow's final reverse KL per grid position (None: it diverged).
        prior_fit_close: :func:`fit_is_close` (at most twice the sampling noise); grid_fit_verdict: the sentence.
        pulse_relative_loss_median, control_relative_loss_median, alg2_relative_loss_median,
        start_relative_loss_median: median of final loss / loss of the target's own code, through the
            trained flow, through the untrained flow, for Algorithm 2, and of the flow sample at the start
            (their 95% bootstrap intervals: ``search_findings.relative_loss``).
        pulse_table: the search table (rows of :func:`pulse_table_rows`).
        search_findings: what the verdict rests on (:class:`SearchFindings`); search_verdict: the sentences.
    """

    CHAPTER: ClassVar[str] = "simplex_flow"
    kinds: list[str]
    final_kl_simplex: dict[str, float | None]
    final_kl_untempered: dict[str, float | None]
    simplex_diverged_configurations: list[int] | None
    untempered_diverged_configurations: list[int] | None
    toy_verdict: str
    grid_flow: GridFlowFit
    flow_tv_distance: float
    sampling_tv_distance: float
    tv_ratio: float
    kl_per_position: float | None
    prior_fit_close: bool
    grid_fit_verdict: str
    n_pairs: int
    pulse_relative_loss_median: float
    control_relative_loss_median: float
    alg2_relative_loss_median: float
    start_relative_loss_median: float
    pulse_table: list[dict]
    search_findings: SearchFindings
    search_verdict: str
    seconds: float


def simplex_flow_result(P, runs: list[flows.FlowRun], fit: GridFlowFit, distances: dict[str, float],
                        values: Mapping[str, Mapping[str, torch.Tensor]], grid: tuple[int, int], n_grids: int,
                        seconds: float) -> SimplexFlowResult:
    """The chapter's :class:`SimplexFlowResult`, verdicts included, from the toy runs, the code-grid fit and the
    per-pair values of the searches (:func:`per_pair_values`)."""
    fields = toy_result_fields(P, runs, P.kinds)
    fractions = fields["divergence_fraction"]
    found = search_findings(values, fit)
    rel = found.relative_loss

    def diverged_in(kind: str) -> list[int] | None:
        return diverged_configurations(fractions, kind) if kind in P.kinds else None

    return SimplexFlowResult(
        **fields, kinds=list(P.kinds), final_kl_simplex=final_kls(runs, P, "simplex"),
        final_kl_untempered=final_kls(runs, P, "simplex-untempered"),
        simplex_diverged_configurations=diverged_in("simplex"),
        untempered_diverged_configurations=diverged_in("simplex-untempered"),
        toy_verdict=simplex_toy_verdict(fractions, P.n_blocks),
        grid_flow=fit, flow_tv_distance=distances["flow"], sampling_tv_distance=distances["sampling"],
        tv_ratio=distances["flow"] / distances["sampling"],
        kl_per_position=None if fit.final_kl is None else fit.final_kl / (grid[0] * grid[1]),
        prior_fit_close=fit_is_close(distances), grid_fit_verdict=grid_fit_sentence(fit, distances, n_grids, grid),
        n_pairs=P.n_pairs, pulse_relative_loss_median=rel["pulse"].value,
        control_relative_loss_median=rel["pulse-untrained"].value, alg2_relative_loss_median=rel["alg2"].value,
        start_relative_loss_median=rel[START].value, pulse_table=pulse_table_rows(values), search_findings=found,
        search_verdict=pulse_verdict(values, fit), seconds=seconds)
