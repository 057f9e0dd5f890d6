"""Chapter 5, the paper's flow and why it fails (paper section 5.4, Figure 6, appendix A.5).

The chapter's parameter schema, its tables and figures, and its verdict on the paper's claim that
the flow was unstable in all four configurations. The toy experiment itself (configurations,
targets, training) is :mod:`vqtto.flows`; chapter 6 reuses the toy parameters, tables and the
reverse-KL figure defined here for the flows onto the simplex.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from ... import flows, stats
from .. import paper
from ...flows.gumbel import GumbelSoftmax
from ...params import Param, above, between, chapter_schema, each, nonempty, one_of, work
from ..plots import method_color, method_label
from ..report import ChapterResult

# How each flow kind of :data:`vqtto.flows.FLOW_KINDS` is drawn (the ablation: the simplex flow, dotted).
KIND_STYLE = {
    "paper": dict(color=method_color("paper-flow"), ls="-", label=method_label("paper-flow")),
    "simplex": dict(color=method_color("simplex-flow"), ls="-", label=method_label("simplex-flow")),
    "simplex-untempered": dict(color=method_color("simplex-flow"), ls=":",
                               label=method_label("simplex-flow") + ", τ not in the softmax"),
}

# The toy experiment's parameters, shared with chapter 6 (which trains other flows on the same targets).
TOY_PARAMS = {
    "configurations": Param(list, "which of the paper's four configurations to run, e.g. [1, 2, 3, 4]",
                            nonempty(each(one_of(*flows.CONFIGURATIONS), most=len(flows.CONFIGURATIONS))), default=[1, 2, 3, 4]),
    "ks": Param(list, "numbers of classes of the toy targets (the paper gives none), e.g. [4, 40]",
                nonempty(each(between(3, 1000), most=10)), default=[4, 40]),
    "zipf_s": Param(float, "toy class probabilities pi_i proportional to 1/i^zipf_s", between(0.0, 10.0), default=1.0),
    "seeds": Param(int, "seeds per configuration, k and flow", work(1, smoke=10, quick=20, full=100), default=3),
    "steps": Param(int, "reverse-KL steps per toy run", work(1, smoke=500, quick=10000, full=50000), default=400),
    "batch": Param(int, "samples per reverse-KL estimate", between(1, 16384), default=256),
    "n_blocks": Param(int, f"affine coupling blocks per flow (paper: {paper.FLOW_BLOCKS.value})", between(1, 64),
                      default=paper.FLOW_BLOCKS.value),
    "hidden": Param(int, "width of the MLP conditioners", between(1, 4096), default=32),
    "lr_adam": Param(float, "learning rate with Adam (the paper gives none)", above(0.0, 100.0), default=0.001),
    "lr_sgd": Param(float, "learning rate with SGD-Nesterov, momentum 0.9 (the paper gives none)", above(0.0, 100.0),
                    default=0.001),
}

PARAMS = chapter_schema(TOY_PARAMS)

# The check of the issue: k=4, tau=0.1, samples of N(5, I), rescaled by these factors.
INVARIANCE_CHECK = dict(k=4, tau=0.1, base_mean=5.0, scales=(1.0, 0.5, 0.1, 0.01))

# The only flow this chapter trains.
PAPER_KINDS = ("paper",)


# --- the toy runs and their tables ---------------------------------------------------------------

def run_toy(P, kinds, device: torch.device, progress: bool = True) -> list[flows.FlowRun]:
    """:func:`vqtto.flows.run_toy_experiment` with the chapter's parameters ``P``, for flows ``kinds``."""
    return flows.run_toy_experiment(P.configurations, P.ks, list(kinds), P.seeds, steps=P.steps, batch=P.batch,
                                    n_blocks=P.n_blocks, hidden=P.hidden, lr_adam=P.lr_adam, lr_sgd=P.lr_sgd,
                                    zipf_s=P.zipf_s, device=device, progress=progress)


def initial_support_rows(P, device: torch.device) -> list[dict]:
    """Where the untrained paper flow's samples fall, per configuration and k, and what each reading of the target gives there."""
    rows = []
    for c in P.configurations:
        cfg = flows.CONFIGURATIONS[c]
        for k in P.ks:
            torch.manual_seed(0)
            flow = flows.paper_flow(flows.toy_target(k, cfg.tau, P.zipf_s), P.n_blocks, P.hidden, cfg.base_mean)
            fall = flows.where_samples_fall(flow.to(device), 4096)
            rows.append({"configuration": cfg.label(c), "k": k,
                         "some coordinate < 0 (literal reading: NaN)": fall["nan"],
                         "all > 0, sum ≠ 1 (literal: finite, off the simplex)": fall["off_simplex_finite"],
                         "on the simplex": fall["on_simplex"],
                         "log-coordinate reading: finite": fall["log_reading_finite"]})
    return rows


def divergence_rows(runs: list[flows.FlowRun], P, kinds) -> list[dict]:
    """Per configuration, k and flow kind: runs diverged, their steps, the median final KL of the rest."""
    rows = []
    for c in P.configurations:
        for k in P.ks:
            for kind in kinds:
                group = flows.select_runs(runs, configuration=c, k=k, kind=kind)
                div = [r for r in group if r.diverged]
                finals = [r.final_kl for r in group if not r.diverged]
                final = stats.median(finals) if finals else "-"
                if finals and kind == "paper":  # a finite loss against an improper density
                    final = f"{final:.4g} (not a KL)"
                rows.append({
                    "configuration": flows.CONFIGURATIONS[c].label(c), "k": k, "flow": kind,
                    "diverged": f"{len(div)}/{len(group)}",
                    "at steps": ", ".join(str(r.diverged_at) for r in div) or "-",
                    "first non-finite value in": "; ".join(sorted({r.nan_origin for r in div})) or "-",
                    "final reverse KL (median of the rest)": final,
                })
    return rows


def divergence_fractions(runs: list[flows.FlowRun], P, kinds) -> dict[str, dict[str, float]]:
    """``{configuration: {kind: fraction of its runs (all k and seeds) that diverged}}``."""
    return {str(c): {kind: stats.share([r.diverged for r in flows.select_runs(runs, configuration=c, kind=kind)])
                     for kind in kinds}
            for c in P.configurations}


def final_kls(runs: list[flows.FlowRun], P, kind: str) -> dict[str, float | None]:
    """``{"<configuration>/k=<k>": median final KL}`` of the runs of ``kind`` that finished (None: none did)."""
    out = {}
    for c in P.configurations:
        for k in P.ks:
            finals = [r.final_kl for r in flows.select_runs(runs, configuration=c, k=k, kind=kind) if not r.diverged]
            out[f"{c}/k={k}"] = stats.median(finals) if finals else None
    return out


def diverged_configurations(fractions: dict[str, dict[str, float]], kind: str) -> list[int]:
    """The configurations in which at least one run of ``kind`` diverged."""
    return [int(c) for c, f in fractions.items() if f.get(kind, 0) > 0]


def finished_configurations(fractions: dict[str, dict[str, float]], kind: str) -> list[int]:
    """The configurations in which at least one run of ``kind`` went to the end without a non-finite value."""
    return [int(c) for c, f in fractions.items() if kind in f and f[kind] < 1]


# --- figures ----------------------------------------------------------------------------------

def simplex_samples_figure(probs: list[float], taus: list[float], n: int = 2000, seed: int = 0):
    """Gumbel-softmax samples for k=3 in barycentric coordinates, one panel per temperature."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    fig, axes = plt.subplots(1, len(taus), figsize=(3.4 * len(taus), 3.2), squeeze=False)
    for ax, tau in zip(axes[0], taus):
        y = GumbelSoftmax(torch.tensor(probs), tau).sample(n, generator=torch.Generator().manual_seed(seed)).numpy()
        xy = y @ corners
        ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.3, color=method_color("paper-flow"))
        ax.plot(*np.vstack([corners, corners[:1]]).T, "k-", lw=0.8)
        for (cx, cy), p in zip(corners, probs):
            ax.annotate(f"π={p:g}", (cx, cy), fontsize=8, ha="center", va="top" if cy == 0 else "bottom")
        ax.set_title(f"τ = {tau:g}")
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle("Gumbel-softmax samples on the 3-class simplex")
    fig.tight_layout()
    return fig


def formula_scaling_figure(k: int, tau: float, zipf_s: float, n: int = 8, seed: int = 0):
    """The density formula at ``c * y`` for simplex samples ``y`` against the scale ``c``: slope ``-k``."""
    gs = flows.toy_target(k, tau, zipf_s)
    y = gs.sample(n, generator=torch.Generator().manual_seed(seed)).double()
    scales = np.logspace(-2, 1, 40)
    values = np.stack([gs.formula_anywhere(float(c) * y).numpy() for c in scales])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(scales, values - values[np.argmin(np.abs(scales - 1.0))], color=method_color("paper-flow"), alpha=0.6)
    ax.plot(scales, -k * np.log(scales), "k--", label=f"-k log c  (k={k})")
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("scale c of a simplex point y (c = 1 is on the simplex)")
    ax.set_ylabel("formula(c·y) − formula(y)  (nats)")
    ax.set_title("The density formula off the simplex, along rays through the origin")
    ax.legend()
    fig.tight_layout()
    return fig


def _mark_divergence(ax, run: flows.FlowRun, style: dict, y) -> None:
    """A diverged run: a cross at ``(step, y)``, a dashed vertical line over the whole panel at its step, and 'NaN' above."""
    ax.plot([run.diverged_at], [y], "x", color=style["color"], ms=9, mew=2.5)
    ax.axvline(run.diverged_at, color=style["color"], ls="--", lw=0.8, alpha=0.7)
    ax.annotate("NaN", (run.diverged_at, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                fontsize=7, color=style["color"], fontweight="bold")


def _draw_run(ax, run: flows.FlowRun, style: dict) -> None:
    """One run's losses against steps; a run that diverged later is marked by :func:`_mark_divergence`."""
    ax.plot(np.arange(len(run.losses)), run.losses, color=style["color"], ls=style["ls"], lw=1, alpha=0.8)
    if run.diverged:
        _mark_divergence(ax, run, style, run.losses[-1])


def _note_step0_divergences(ax, notes: list[tuple[str, int, int]], empty: bool) -> None:
    """Boxed notes 'diverged at step 0: n of m runs', one per kind; a panel with nothing drawn is greyed."""
    if empty:
        ax.set_facecolor("#ececec")
        ax.set_yticks([])
    for i, (kind, n, total) in enumerate(notes):
        style = KIND_STYLE[kind]
        ax.text(0.5 if empty else 0.97, (0.62 if empty else 0.95) - 0.16 * i,
                f"{style['label']}:\ndiverged at step 0 in {n} of {total} run{'s' if total > 1 else ''}\n(no finite loss)",
                transform=ax.transAxes, ha="center" if empty else "right", va="top", fontsize=7, color=style["color"],
                bbox=dict(boxstyle="round", fc="white", ec=style["color"], alpha=0.9))


def _panel_title(k: int, c: int, group: list[flows.FlowRun]) -> str:
    """``k=4  (1) mean 0, τ=0.1, Adam`` and, below, how many of the panel's runs diverged."""
    n_div = sum(r.diverged for r in group)
    return (f"k={k}  " + flows.CONFIGURATIONS[c].label(c) + "\n"
            + (f"DIVERGED: {n_div} of {len(group)} runs" if n_div else f"all {len(group)} runs finite"))


def reverse_kl_figure(runs: list[flows.FlowRun], P, kinds, title: str):
    """The paper's Figure 6 for ``kinds``: reverse KL against steps, one panel per (k, configuration).

    A run that diverged after some steps is drawn up to its last finite step and ends in a cross, with
    a dashed vertical line over the whole panel at the step it diverged and 'NaN' above it; each
    panel's title counts its diverged runs. A run that diverged at step 0 has no finite loss: nothing
    of it is drawn in the data area; a boxed note counts such runs per kind, and a panel where no run
    has a curve is greyed out. A grey line marks 0, below which no true KL can go.
    """
    fig, axes = plt.subplots(len(P.ks), len(P.configurations), figsize=(3.6 * len(P.configurations), 3.2 * len(P.ks)),
                             squeeze=False, sharex=True)
    for i, k in enumerate(P.ks):
        for j, c in enumerate(P.configurations):
            ax = axes[i, j]
            notes, drawn, panel = [], 0, []
            for kind in kinds:
                group = flows.select_runs(runs, configuration=c, k=k, kind=kind)
                panel += group
                for r in group:
                    if r.losses:
                        _draw_run(ax, r, KIND_STYLE[kind])
                        drawn += 1
                at_start = sum(1 for r in group if not r.losses)
                if at_start:
                    notes.append((kind, at_start, len(group)))
            if drawn:
                ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_xlim(0, P.steps)
            ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
            ax.set_yscale("symlog", linthresh=1.0)
            ax.grid(alpha=0.3)
            _note_step0_divergences(ax, notes, empty=drawn == 0)
            ax.set_title(_panel_title(k, c, panel), fontsize=8, pad=12,
                         color="#b00000" if any(r.diverged for r in panel) else "black")
            if i == len(P.ks) - 1:
                ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel("reverse-KL estimate (nats)")
    handles = [plt.Line2D([], [], color=KIND_STYLE[kd]["color"], ls=KIND_STYLE[kd]["ls"], label=KIND_STYLE[kd]["label"])
               for kd in kinds]
    handles.append(plt.Line2D([], [], color="k", marker="x", ls="--", lw=0.8,
                              label="diverged: last finite loss (×), NaN at the dashed step"))
    handles.append(plt.Line2D([], [], color="grey", lw=0.8, label="0: a true KL never goes below"))
    handles.append(plt.Rectangle((0, 0), 1, 1, fc="#ececec", label="grey panel: every run diverged at step 0"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def log_scale_figure(runs: list[flows.FlowRun], P, kind: str = "paper"):
    """What the samples do while the loss falls: the log-scale ``s = log sum_i y_i`` of the batch (0 on the
    simplex) against steps, one panel per (k, configuration), a band from its 10% to its 90% quantile
    and a line at its median for every run; a diverged run is marked as in :func:`reverse_kl_figure`."""
    style = KIND_STYLE[kind]
    fig, axes = plt.subplots(len(P.ks), len(P.configurations), figsize=(3.6 * len(P.configurations), 3.0 * len(P.ks)),
                             squeeze=False, sharex=True)
    for i, k in enumerate(P.ks):
        for j, c in enumerate(P.configurations):
            ax = axes[i, j]
            group = flows.select_runs(runs, configuration=c, k=k, kind=kind)
            for r in group:
                if not r.log_scale:
                    continue
                q = np.asarray(r.log_scale)
                steps = np.arange(len(q))
                ax.fill_between(steps, q[:, 0], q[:, 2], color=style["color"], alpha=0.15, lw=0)
                ax.plot(steps, q[:, 1], color=style["color"], lw=1)
                if r.diverged:
                    _mark_divergence(ax, r, style, q[-1, 1])
            ax.axhline(0.0, color="k", lw=0.8, ls=":")
            ax.set_xlim(0, P.steps)
            ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
            ax.grid(alpha=0.3)
            ax.set_title(_panel_title(k, c, group), fontsize=8, pad=12)
            if i == len(P.ks) - 1:
                ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel("log-scale s = log Σ y_i")
    handles = [plt.Rectangle((0, 0), 1, 1, fc=style["color"], alpha=0.3, label="10%–90% of the batch (one band per run)"),
               plt.Line2D([], [], color=style["color"], label="median of the batch"),
               plt.Line2D([], [], color="k", ls=":", label="s = 0: the simplex")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("How far along its ray each sample sits, during training (the paper's flow)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def scale_invariance_rows(values: dict[float, float]) -> list[dict]:
    """The table of :func:`vqtto.flows.scaled_reverse_kl`: one row per scale factor."""
    base = values[1.0] if 1.0 in values else next(iter(values.values()))
    return [{"scale factor c": c, "reverse-KL estimate of c·x (nats)": v, "difference to c = 1": v - base}
            for c, v in values.items()]


def scale_measurements(runs: list[flows.FlowRun], P, kind: str = "paper") -> dict[str, dict[str, float] | None]:
    """Per configuration, medians over its runs of ``kind`` (all k and seeds) of the batch's log-scale at the first
    and the last finite step: ``centre_start``/``centre_end`` (its median), ``spread_start``/``spread_end`` (90% minus
    10% quantile), and ``spread_grew`` (the share of runs whose spread ended wider). None: no run had a finite step."""
    out: dict[str, dict[str, float] | None] = {}
    for c in P.configurations:
        group = [np.asarray(r.log_scale) for r in flows.select_runs(runs, configuration=c, kind=kind) if r.log_scale]
        if not group:
            out[str(c)] = None
            continue
        spread = [(q[0, 2] - q[0, 0], q[-1, 2] - q[-1, 0]) for q in group]
        out[str(c)] = {"centre_start": stats.median([q[0, 1] for q in group]),
                       "centre_end": stats.median([q[-1, 1] for q in group]),
                       "spread_start": stats.median([a for a, _ in spread]),
                       "spread_end": stats.median([b for _, b in spread]),
                       "spread_grew": stats.share([b > a for a, b in spread])}
    return out


def nan_origins(runs: list[flows.FlowRun], P, kind: str = "paper") -> dict[str, dict[str, int]]:
    """``{configuration: {where the first non-finite value appeared: number of runs}}`` over its diverged runs."""
    out = {}
    for c in P.configurations:
        counts: dict[str, int] = {}
        for r in flows.select_runs(runs, configuration=c, kind=kind):
            if r.diverged:
                counts[r.nan_origin] = counts.get(r.nan_origin, 0) + 1
        out[str(c)] = counts
    return out


# --- verdict and result ---------------------------------------------------------------------------

def instability_verdict(fractions: dict[str, dict[str, float]], below_zero: list[int] | None = None) -> str:
    """A sentence comparing the measured divergence of the paper's flow with the paper's claim.

    ``below_zero``: the configurations in which a run that finished ended with a loss below 0.
    """
    quote = paper.FLOW_UNSTABLE
    diverged = diverged_configurations(fractions, "paper")
    finished = finished_configurations(fractions, "paper")
    text = (f"The paper reports its flow {quote.value} (section {quote.section}). Measured here, the paper's flow "
            f"diverged (a non-finite loss or gradient) in at least one run of configurations {diverged or 'none'}")
    if finished:
        text += (f"; in configurations {finished} some runs went to the end, but what they lowered is a reverse KL "
                 "against a density that integrates to infinity, so a run that finishes has not fitted the "
                 "Gumbel-softmax either")
        if below_zero:
            text += (f" (in configurations {below_zero} the final loss is below 0, which no KL divergence between two "
                     "probability densities can be)")
        text += "."
    else:
        text += ", every run of every configuration."
    return text


def mechanism_verdict(invariance: dict[float, float], measured: dict[str, dict[str, float] | None],
                      origins: dict[str, dict[str, int]]) -> str:
    """What the measurements say about why the loss of the paper's flow runs away, in sentences."""
    spec, values = INVARIANCE_CHECK, list(invariance.values())
    text = (f"Rescaling the samples leaves the loss unchanged: for k={spec['k']}, τ={spec['tau']:g} and "
            f"N({spec['base_mean']:g}, I) samples, the scale factors {', '.join(f'{c:g}' for c in invariance)} give "
            f"{min(values):.6g} to {max(values):.6g} nats, so nothing in the loss pulls the samples towards zero. ")
    present = {c: m for c, m in measured.items() if m is not None}
    if present:
        grew = [int(c) for c, m in present.items() if m["spread_grew"] > 0.5]
        fell = [int(c) for c, m in present.items() if m["centre_end"] < m["centre_start"]]
        text += ("During training the spread of the samples' log-scale (10% to 90% of the batch, median over runs, "
                 "first to last finite step) went "
                 + ", ".join(f"({c}) {m['spread_start']:.2g} → {m['spread_end']:.2g}" for c, m in present.items())
                 + f"; it widened in most runs of configurations {grew or 'none'}. The median log-scale went "
                 + ", ".join(f"({c}) {m['centre_start']:.2g} → {m['centre_end']:.2g}" for c, m in present.items())
                 + (f": it fell (samples shrinking) in configurations {fell} only. " if fell else
                    ": it fell in none (the samples grew rather than shrank). "))
    places: dict[str, int] = {}
    for counts in origins.values():
        for where, n in counts.items():
            key = "the output of a coupling block" if where.startswith("coupling block") else where
            places[key] = places.get(key, 0) + n
    if places:
        text += ("In the runs that diverged, the first non-finite value appeared in "
                 + ", ".join(f"{where} ({n} runs)" for where, n in places.items()) + ".")
    return text


@dataclass
class ToyExperimentResult(ChapterResult):
    """What chapters 4 and 5 both record about their toy runs (each subclass adds its own fields).

    Attributes:
        configurations, ks, seeds, steps, n_blocks: the toy experiment's settings.
        divergence_fraction: ``{configuration: {kind: fraction of its runs (all k, seeds) that diverged}}``.
        divergence_table: the chapter's divergence table, one row per configuration, k and flow kind.
    """

    configurations: list[int]
    ks: list[int]
    seeds: int
    steps: int
    n_blocks: int
    divergence_fraction: dict[str, dict[str, float]]
    divergence_table: list[dict]


def toy_result_fields(P, runs: list[flows.FlowRun], kinds) -> dict:
    """The :class:`ToyExperimentResult` fields (and ``profile``) of the chapter's toy runs of ``kinds``."""
    return dict(profile=P.profile, configurations=list(P.configurations), ks=list(P.ks), seeds=P.seeds, steps=P.steps,
                n_blocks=P.n_blocks, divergence_fraction=divergence_fractions(runs, P, kinds),
                divergence_table=divergence_rows(runs, P, kinds))


@dataclass
class PaperFlowResult(ToyExperimentResult):
    """What chapter 5 measured, and its verdicts on the paper's 'unstable in all four configurations' and on why.

    Attributes:
        divergence_fraction: (inherited) here for the one kind ``"paper"``.
        final_kl_paper: ``{"<configuration>/k=<k>": median final loss of the runs that finished}`` (None: none
            did); a loss against a density that integrates to infinity, not a KL.
        initial_support: where the untrained flow's samples fall (the chapter's first table).
        diverged_configurations: configurations with at least one diverged run.
        finished_configurations: configurations with at least one run that went to the end.
        below_zero_configurations: configurations with a finished run whose final loss is below 0.
        unstable_in_every_configuration: every configuration run had a diverged run (the paper's claim).
        scale_invariance: ``{str(c): reverse-KL estimate}`` of :func:`vqtto.flows.scaled_reverse_kl` for
            :data:`INVARIANCE_CHECK` (k=4, τ=0.1, N(5, I) rescaled by c).
        scale_invariant: those estimates agree to within 1e-6 nats (rescaling is a free direction of the loss).
        log_scale_measurements: :func:`scale_measurements` per configuration (None: no finite step).
        spread_grew_everywhere: in every configuration with a finite step, most runs ended with a wider spread.
        pulled_towards_zero: in every such configuration the median log-scale fell (the samples shrank).
        nan_origins: :func:`nan_origins`, where each diverged run's first non-finite value appeared.
        nan_first_in_coupling_blocks: every diverged run's first non-finite value appeared in a coupling block.
        verdict: the sentence comparing the measurement with the paper; mechanism_verdict: why, from the measurements.
    """

    CHAPTER: ClassVar[str] = "paper_flow"
    final_kl_paper: dict[str, float | None]
    initial_support: list[dict]
    diverged_configurations: list[int]
    finished_configurations: list[int]
    below_zero_configurations: list[int]
    unstable_in_every_configuration: bool
    scale_invariance: dict[str, float]
    scale_invariant: bool
    log_scale_measurements: dict[str, dict[str, float] | None]
    spread_grew_everywhere: bool
    pulled_towards_zero: bool
    nan_origins: dict[str, dict[str, int]]
    nan_first_in_coupling_blocks: bool
    verdict: str
    mechanism_verdict: str
    seconds: float


def invariance_check() -> dict[float, float]:
    """:func:`vqtto.flows.scaled_reverse_kl` at :data:`INVARIANCE_CHECK`."""
    spec = INVARIANCE_CHECK
    return flows.scaled_reverse_kl(flows.toy_target(spec["k"], spec["tau"]), spec["base_mean"], list(spec["scales"]))


def paper_flow_result(P, runs: list[flows.FlowRun], support_rows: list[dict], invariance: dict[float, float],
                      seconds: float) -> PaperFlowResult:
    """The chapter's :class:`PaperFlowResult`, verdicts included, from its toy runs, support table and invariance check."""
    fields = toy_result_fields(P, runs, PAPER_KINDS)
    fractions = fields["divergence_fraction"]
    diverged = diverged_configurations(fractions, "paper")
    below_zero = sorted({r.meta["configuration"] for r in runs if r.final_kl is not None and r.final_kl < 0})
    measured = scale_measurements(runs, P)
    present = [m for m in measured.values() if m is not None]
    origins = nan_origins(runs, P)
    values = list(invariance.values())
    return PaperFlowResult(
        **fields, final_kl_paper=final_kls(runs, P, "paper"), initial_support=support_rows,
        diverged_configurations=diverged, finished_configurations=finished_configurations(fractions, "paper"),
        below_zero_configurations=below_zero, unstable_in_every_configuration=len(diverged) == len(P.configurations),
        scale_invariance={f"{c:g}": v for c, v in invariance.items()},
        scale_invariant=max(values) - min(values) < 1e-6, log_scale_measurements=measured,
        spread_grew_everywhere=bool(present) and all(m["spread_grew"] > 0.5 for m in present),
        pulled_towards_zero=bool(present) and all(m["centre_end"] < m["centre_start"] for m in present),
        nan_origins=origins,
        nan_first_in_coupling_blocks=all(w.startswith("coupling block") for o in origins.values() for w in o),
        verdict=instability_verdict(fractions, below_zero), mechanism_verdict=mechanism_verdict(invariance, measured, origins),
        seconds=seconds)
