"""Chapter 5, a flow onto the simplex and searching through it (paper sections 5.4 and 6).

The chapter's parameter schema, its tables and figures, and its two verdicts: whether the flow
onto the simplex trains stably on the paper's toy targets, and what the PULSE-style search
through a code-grid flow finds compared with Algorithm 2. The flows, their training and the
search are :mod:`vqtto.flows`; the toy parameters, tables and reverse-KL figure are chapter 4's
(:mod:`vqtto.chapters.paper_flow`), reused here for the flows onto the simplex.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import flows, paper, stats
from ..constraints import mse_to
from ..data import DATASETS
from ..params import Param, at_least, chapter_schema, each, greater_than, nonempty, one_of
from ..plots import image_rows, method_color, method_label
from .paper_flow import (TOY_PARAMS, ToyExperimentResult, diverged_configurations, divergence_fractions,
                         divergence_rows, final_kls, reverse_kl_figure, run_toy, toy_result_fields)

# The flows onto the simplex compared on the toy targets (ids of :data:`vqtto.flows.FLOW_KINDS`).
SIMPLEX_KINDS = ("simplex", "simplex-untempered")


def _start_end(values: list) -> str | None:
    """Check of ``pulse_tau``: two temperatures > 0, ``[start, end]``."""
    msg = each(greater_than(0.0), item_kind=float)(values)
    if msg is None and len(values) != 2:
        msg = "[start, end]: a list of exactly two floats > 0"
    return msg


PARAMS = chapter_schema({
    **TOY_PARAMS,
    "kinds": Param(list, f"flows onto the simplex trained on the toy targets, from {list(SIMPLEX_KINDS)}",
                   nonempty(each(one_of(*SIMPLEX_KINDS), item_kind=str)), default=list(SIMPLEX_KINDS)),
    "dataset": Param(str, "data set of the VQ-VAE for the code-grid part", one_of(*DATASETS), default="fashion-mnist"),
    "k_grid": Param(int, "codebook size of the VQ-VAE for the code-grid part (book: 40)", at_least(3), default=40),
    "code_images": Param(int, "training images encoded to fit the per-position categorical", at_least(1), default=10000),
    "grid_tau": Param(float, "temperature of the relaxed code-grid prior", greater_than(0.0), default=0.3),
    "grid_steps": Param(int, "reverse-KL steps of the code-grid flow", at_least(1), default=600),
    "grid_batch": Param(int, "samples per step of the code-grid flow", at_least(1), default=64),
    "grid_blocks": Param(int, "coupling layers of the code-grid flow", at_least(1), default=4),
    "grid_hidden": Param(int, "MLP width of the code-grid flow", at_least(1), default=64),
    "grid_lr": Param(float, "Adam learning rate of the code-grid flow", greater_than(0.0), default=0.003),
    "n_pairs": Param(int, f"source-target test pairs for the searches (paper: {paper.TABLE1_PAIRS.value})", at_least(1),
                     default=32),
    "pair_seed": Param(int, "seed of vqtto.pairs.test_pairs (the same pairs in every chapter)", at_least(0), default=0),
    "pulse_steps": Param(int, "Adam steps on z in the PULSE-style search", at_least(1), default=200),
    "pulse_lr": Param(float, "Adam learning rate on z", greater_than(0.0), default=1.0),
    "pulse_tau": Param(list, "[start, end] temperature annealed during the search (YAML list)", _start_end,
                       default=[3.0, 0.05]),
    "alpha": Param(float, f"Algorithm 2 step size (paper: {paper.ALPHA.value})", greater_than(0.0), default=0.1),
    "lam": Param(int, "most repeats of one Algorithm 2 step before it counts as stalled (the paper's lambda; "
                      "it gives no value)", at_least(1), default=100),
    "pixelcnn_prior": Param(bool, "also score the codes found under the PixelCNN prior of chapter 3 (k_grid; trained "
                                  "if not cached)", default=True),
    "seed": Param(int, "seed of the code-grid flow and the search starts", at_least(0), default=0),
})


# --- the toy targets ------------------------------------------------------------------------------

def simplex_toy_verdict(fractions: dict[str, dict[str, float]]) -> str:
    """A sentence on the divergence of the flows onto the simplex, beside the paper's 'unstable in all four'."""
    quote = paper.FLOW_UNSTABLE
    text = f"The paper reports its flow in R^k {quote.value} (section {quote.section}; chapter 4 shows why)."
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


def grid_fit_sentence(fit: GridFlowFit, n_grids: int, grid: tuple[int, int]) -> str:
    """What the code-grid flow's fit did, in a sentence; a diverged fit is said to be one, and what follows from it."""
    head = f"Fitted to {n_grids} index grids of {grid[0]}×{grid[1]} positions, "
    if not fit.diverged:
        return head + (f"the code-grid flow's reverse KL went from {fit.first_loss:.1f} to {fit.final_kl:.1f} nats "
                       f"in {fit.steps} steps ({fit.seconds:.1f} s).")
    return head + (f"the code-grid flow **diverged** at step {fit.diverged_at} of {fit.steps} ({fit.reason}). It keeps "
                   "the weights of its last finite step, which fit nothing: the chapter goes on with them, and every "
                   "number below that goes through the trained flow describes that broken flow, not a fitted prior.")


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
    rows = {"training images": model.decode_indices(train_codes[:n].to(device)).cpu(),
            "categorical": model.decode_indices(flows.sample_code_grids(probs, n, grid, seed).to(device)).cpu(),
            "flow (argmax)": model.decode_indices(flow_grids[:n].to(device)).cpu()}
    return image_rows(rows, title="decoded code grids: real, per-position prior, flow")


# --- the searches ---------------------------------------------------------------------------------

# The rows of the search table, in order: method ids of :data:`vqtto.plots.METHODS`, and the flow
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


def pulse_table_rows(found: Mapping[str, tuple[torch.Tensor, torch.Tensor]], ref: torch.Tensor,
                     priors: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> list[dict]:
    """One row per entry of ``found`` (row id -> (losses ``(B,)``, index grids ``(B, h, w)``)): relative final
    loss (median, mean), pairs within 1.1× the own code, and the mean log-likelihood under each prior.

    Args:
        ref: ``(B,)`` the loss of each target's own code (:func:`vqtto.search.reference_losses`).
        priors: prior name -> index grids ``(B, h, w)`` -> ``(B,)`` log-likelihood (nats per grid).
    """
    rows = []
    for row, (losses, indices) in found.items():
        rel = losses.cpu() / ref.cpu()
        entry = {"method": row_label(row), "relative loss, median": stats.median(rel),
                 "relative loss, mean": float(rel.mean()),
                 "pairs at most 1.1× own code": f"{int((rel <= 1.1).sum())}/{len(rel)}"}
        for prior, log_likelihood in priors.items():
            entry[f"log-lik. under {prior} (nats/grid)"] = float(log_likelihood(indices).float().mean())
        rows.append(entry)
    return rows


@dataclass
class SearchFindings:
    """What the search table shows, decided once; the search verdict is written from these.

    Attributes:
        prior_fitted: the code-grid flow did not diverge (otherwise nothing below is about a fitted prior).
        prior_gain_nats: mean log-likelihood under the per-position categorical of the codes found through
            the trained flow minus that of the codes found through the untrained one (nats per grid).
        more_plausible_than_control: ``prior_gain_nats > 1``.
        as_plausible_as_own_code: the trained flow's codes score within 10% of the targets' own codes.
        loss_above_control: the trained flow's median relative loss is above the control's.
        pixelcnn_below_own_code: under the PixelCNN the trained flow's codes score more than 10% below the
            targets' own codes (None: the PixelCNN was not used).
    """

    prior_fitted: bool
    prior_gain_nats: float
    more_plausible_than_control: bool
    as_plausible_as_own_code: bool
    loss_above_control: bool
    pixelcnn_below_own_code: bool | None


_MEDIAN = "relative loss, median"
_CATEGORICAL = "log-lik. under per-position categorical (nats/grid)"
_PIXELCNN = "log-lik. under PixelCNN (nats/grid)"


def _rows_by_id(rows: list[dict]) -> dict[str, dict]:
    by_label = {r["method"]: r for r in rows}
    return {row: by_label[row_label(row)] for row in ("alg2", "pulse", "pulse-untrained", "own-code")}


def search_findings(rows: list[dict], fit: GridFlowFit) -> SearchFindings:
    """The :class:`SearchFindings` of the rows of :func:`pulse_table_rows`."""
    by = _rows_by_id(rows)
    flow, control, own = by["pulse"], by["pulse-untrained"], by["own-code"]
    cnn = None
    if _PIXELCNN in flow:
        cnn = flow[_PIXELCNN] < own[_PIXELCNN] - 0.1 * abs(own[_PIXELCNN])
    gain = flow[_CATEGORICAL] - control[_CATEGORICAL]
    return SearchFindings(prior_fitted=not fit.diverged, prior_gain_nats=gain, more_plausible_than_control=gain > 1.0,
                          as_plausible_as_own_code=abs(flow[_CATEGORICAL] - own[_CATEGORICAL]) <= 0.1 * abs(own[_CATEGORICAL]),
                          loss_above_control=control[_MEDIAN] < flow[_MEDIAN], pixelcnn_below_own_code=cnn)


def pulse_verdict(rows: list[dict], fit: GridFlowFit) -> str:
    """Sentences comparing the searches of the table (rows of :func:`pulse_table_rows`), from :func:`search_findings`."""
    by, found = _rows_by_id(rows), search_findings(rows, fit)
    flow, alg2, control, own = by["pulse"], by["alg2"], by["pulse-untrained"], by["own-code"]
    text = (f"Median relative loss: {flow[_MEDIAN]:.3g} through the trained flow, {alg2[_MEDIAN]:.3g} for Algorithm 2, "
            f"{control[_MEDIAN]:.3g} through the untrained flow. ")
    if not found.prior_fitted:
        return text + (f"The code-grid flow diverged at step {fit.diverged_at} ({fit.reason}), so there is no fitted "
                       "prior to search through: the rows through the trained flow measure a broken flow and are no "
                       "evidence for or against the reduction to PULSE.")
    text += ("Log-likelihood of the codes found under the per-position categorical the flow relaxes: "
             f"{flow[_CATEGORICAL]:.1f} nats per grid through the trained flow, {control[_CATEGORICAL]:.1f} through the "
             f"untrained one, {own[_CATEGORICAL]:.1f} for the targets' own codes. ")
    if found.more_plausible_than_control:
        text += (f"The fitted prior makes the codes found more plausible than the control's, by "
                 f"{found.prior_gain_nats:.1f} nats per grid")
        if found.as_plausible_as_own_code:
            text += " (about as plausible as the targets' own codes)"
        text += (", at the price of a higher median loss than the control's." if found.loss_above_control
                 else ", with a median loss no higher than the control's.")
    else:
        text += "The fitted prior does not make the codes found more plausible than the control's here."
    if found.pixelcnn_below_own_code is not None:
        text += (f" Under the PixelCNN, which also scores how neighbouring codes fit together, the codes found through "
                 f"the flow score {flow[_PIXELCNN]:.1f} nats per grid, the control's {control[_PIXELCNN]:.1f}, Algorithm "
                 f"2's {alg2[_PIXELCNN]:.1f} and the targets' own codes {own[_PIXELCNN]:.1f}"
                 + (": a per-position prior keeps each code plausible in its place, not the grid as a whole."
                    if found.pixelcnn_below_own_code else "."))
    return text


def relative_loss_strips(rel: Mapping[str, torch.Tensor]):
    """Per-pair relative final losses as a jittered strip per row (row id -> ``(B,)``), black bar at the median."""
    fig, ax = plt.subplots(figsize=(8.5, 0.9 + 0.6 * len(rel)))
    for i, (row, values) in enumerate(rel.items()):
        v = values.cpu().numpy()
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(v))
        ax.scatter(v, i + jitter, s=12, alpha=0.7, color=row_color(row))
        ax.plot([stats.median(values)] * 2, [i - 0.3, i + 0.3], color="k", lw=2)
    ax.set_yticks(range(len(rel)), [row_label(row) for row in rel])
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("final MSE / MSE of the target's own encoder code (log scale; black bar: median)")
    ax.set_title("Search result per pair, relative to encoding the target itself")
    fig.tight_layout()
    return fig


@torch.no_grad()
def searched_images_figure(model, sources: torch.Tensor, targets: torch.Tensor,
                           found: Mapping[str, tuple[torch.Tensor, torch.Tensor]], n_show: int):
    """Source, target, and the decoded best grid of the own code, Algorithm 2 and the search through the flow."""
    rows = {"source image": sources[:n_show].cpu(), method_label("target"): targets[:n_show].cpu()}
    for row in ("own-code", "alg2", "pulse"):
        rows[row_label(row)] = model.decode_indices(found[row][1][:n_show]).cpu()
    return image_rows(rows, title="searches towards the target (MSE), best index grid found")


# --- the result ------------------------------------------------------------------------------------

@dataclass
class SimplexFlowResult(ToyExperimentResult):
    """What chapter 5 measured: the flows onto the simplex on the toy targets, the code-grid flow, the searches.

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
        pulse_relative_loss_median, control_relative_loss_median, alg2_relative_loss_median,
        start_relative_loss_median: median of final loss / loss of the target's own code, through the
            trained flow, through the untrained flow, for Algorithm 2, and of the flow sample at the start.
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
                        found: Mapping[str, tuple[torch.Tensor, torch.Tensor]], ref: torch.Tensor,
                        pulse_rows: list[dict], seconds: float) -> SimplexFlowResult:
    """The chapter's :class:`SimplexFlowResult`, verdicts included."""
    fields = toy_result_fields(P, runs, P.kinds)
    fractions = fields["divergence_fraction"]
    rel = {row: stats.median(losses.cpu() / ref.cpu()) for row, (losses, _) in found.items()}

    def diverged_in(kind: str) -> list[int] | None:
        return diverged_configurations(fractions, kind) if kind in P.kinds else None

    return SimplexFlowResult(
        **fields, kinds=list(P.kinds), final_kl_simplex=final_kls(runs, P, "simplex"),
        final_kl_untempered=final_kls(runs, P, "simplex-untempered"),
        simplex_diverged_configurations=diverged_in("simplex"),
        untempered_diverged_configurations=diverged_in("simplex-untempered"), toy_verdict=simplex_toy_verdict(fractions),
        grid_flow=fit, flow_tv_distance=distances["flow"], sampling_tv_distance=distances["sampling"],
        n_pairs=P.n_pairs, pulse_relative_loss_median=rel["pulse"], control_relative_loss_median=rel["pulse-untrained"],
        alg2_relative_loss_median=rel["alg2"], start_relative_loss_median=rel[START], pulse_table=pulse_rows,
        search_findings=search_findings(pulse_rows, fit), search_verdict=pulse_verdict(pulse_rows, fit),
        seconds=seconds)
