"""Chapter 4, a PixelCNN prior over the code grids (paper section 5.3, Figures 5 and 8)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ... import stats
from ...data import DATASETS
from ...params import Param, above, between, chapter_schema, each, nonempty, one_of, seed, work
from ..plots import finish, method_color
from ..report import ChapterResult

LN2 = math.log(2.0)

PARAMS = chapter_schema({
    "dataset": Param(str, "data set whose VQ-VAE codes the prior models", one_of(*DATASETS), default='fashion-mnist'),
    "k": Param(int, "codebook size of the VQ-VAE (paper: 512)", between(2, 4096), default=512),
    "class_conditional": Param(bool, "condition the prior on the class label", default=False),
    "epochs": Param(int, "prior training epochs; None takes the profile's", work(1, smoke=10, quick=30, full=300), nullable=True, default=None),
    "seed": Param(int, "seed of the prior's initialisation, batch order and samples", seed(), default=0),
    "n_samples": Param(int, "samples per row in the samples figure", between(1, 64), default=10),
    "temperatures": Param(list, "sampling temperatures, one row of samples each (YAML list; -y/-f)", nonempty(each(above(0.0, 10.0), float, most=10)), default=[1.0, 0.7]),
    "n_random": Param(int, "uniform-random grids scored by the prior", work(1, smoke=2000, quick=50000, full=500000), default=1000),
    "n_pairs": Param(int, "source-target test pairs searched with Algorithm 2 (paper: 200)", work(1, smoke=64, quick=1000, full=5000), default=100),
    "pair_seed": Param(int, "seed of the test pairs (the same pairs in every chapter)", seed(), default=0),
    "alpha": Param(float, "step size of Algorithm 2 (paper: 0.1)", above(0.0, 10000.0), default=0.1),
    "lam": Param(int, "most repeats of one Algorithm 2 step before it counts as stalled", work(1, smoke=1000, quick=2000, full=10000), default=100),
    "relaxed_lr": Param(float, "Adam step size of the relaxed search (the control of chapter 2)", above(0.0, 100.0), default=0.1),
    "relaxed_steps": Param(int, "decoder rounds of the relaxed search per pair", work(1, smoke=500, quick=5000, full=50000), default=100),
    "max_unique": Param(int, "most distinct grids per Algorithm 2 search", work(2, smoke=1000, quick=5000, full=50000), default=200),
    "samplers": Param(list, "chapter 3's samplers whose best grids are scored too (ids of its METHOD_IDS)",
                      each(one_of("gwg", "dmala", "dmala-codebook", "pas-sa", "screened-sa"), str, most=5),
                      default=["gwg", "dmala", "pas-sa", "screened-sa"]),
    "sampler_budget": Param(float, "decoder-call equivalents per pair of each sampler (chapter 3 runs 1000)",
                            work(0.0, smoke=600.0, quick=20000.0, full=100000.0, lo_open=True), default=300.0),
    "sampler_chains": Param(int, "chains per pair of each sampler (chapter 3's default)", between(1, 64), default=2),
    "sampler_temperature": Param(float, "start temperature of the samplers (one of chapter 3's candidates; it tunes it)",
                                 above(0.0, 10.0), default=0.02),
})


def prior_curves(history, k: int, grid: tuple[int, int], title: str):
    """Figure 5: train and validation loss (nats per position; bits per image on the right) vs epochs."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.plot(history.epoch, history.train_nats, "--", color=method_color("prior"), alpha=0.7, label="train")
    ax.plot(history.epoch, history.val_nats, "-", color=method_color("prior"), label="validation (test grids)")
    ax.axhline(math.log(k), color=method_color("uniform"), lw=1.5, label=f"uniform prior, log k = {math.log(k):.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats per latent position)")
    positions = grid[0] * grid[1]
    sec = ax.secondary_yaxis("right", functions=(lambda n: n * positions / LN2, lambda b: b * LN2 / positions))
    sec.set_ylabel(f"bits per image ({grid[0]}x{grid[1]} grid)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def position_map(nll: torch.Tensor, k: int, title: str):
    """Mean test NLL at each latent position ``(h, w)`` in nats, with ``log k`` for scale."""
    fig, ax = plt.subplots(figsize=(4.6, 4))
    im = ax.imshow(nll.numpy(), cmap="magma", vmin=0, vmax=math.log(k))
    for (r, c), v in np.ndenumerate(nll.numpy()):
        ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 * math.log(k) else "black")
    ax.set_xlabel("latent column")
    ax.set_ylabel("latent row")
    fig.colorbar(im, ax=ax, label=f"nats per position (colour scale ends at log k = {math.log(k):.2f})")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def loglik_rows(groups: Mapping[str, torch.Tensor], positions: int, k: int) -> list[dict]:
    """One table row per group of grids: its log-likelihood under the prior, in three units."""
    rows = []
    for label, lp in groups.items():
        rows.append({
            "grids": label,
            "n": int(lp.numel()),
            "mean log p (nats / grid)": round(float(lp.mean()), 1),
            "median log p": round(stats.median(lp), 1),
            "NLL (nats / position)": round(float(-lp.mean()) / positions, 3),
            "NLL (bits / image)": round(float(-lp.mean()) / LN2, 1),
        })
    rows.append({"grids": "uniform prior (any grid)", "n": "", "mean log p (nats / grid)": round(-positions * math.log(k), 1),
                 "median log p": round(-positions * math.log(k), 1), "NLL (nats / position)": round(math.log(k), 3),
                 "NLL (bits / image)": round(positions * math.log(k) / LN2, 1)})
    return rows


def loglik_histogram(groups: Mapping[str, torch.Tensor], colors: Mapping[str, str], positions: int, k: int):
    """Histograms of the NLL per position (nats) of several groups of grids, ``log k`` marked."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    values = {label: (-lp / positions).numpy() for label, lp in groups.items()}
    lo = min(v.min() for v in values.values())
    hi = max(max(v.max() for v in values.values()), math.log(k))
    bins = np.linspace(lo, hi * 1.02, 60)
    for label, v in values.items():
        ax.hist(v, bins=bins, density=True, alpha=0.55, color=colors[label], label=f"{label} (n={v.size})")
    ax.axvline(math.log(k), color=method_color("uniform"), ls=":", lw=2, label=f"log k = {math.log(k):.2f}")
    return finish(fig, ax, "negative log-likelihood under the prior (nats per latent position)", "density",
                  "How probable does the prior find each kind of index grid?")


def traversal_logliks(prior_model, trace, labels: torch.Tensor | None, device: torch.device) -> list[torch.Tensor]:
    """``log p`` (nats) of every distinct grid each search visited: per pair ``(T_i,)``."""
    from ...models.pixelcnn import score

    out = []
    for i, grids in enumerate(trace.grids):
        y = labels[i:i + 1].expand(grids.shape[0]) if labels is not None else None
        out.append(score(prior_model, grids, y, device))
    return out


def nll_along_searches(logliks: list[torch.Tensor], target_lp: torch.Tensor, positions: int, k: int):
    """NLL per position along each Algorithm 2 search (faint) and their median, targets for scale."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    longest = max(t.numel() for t in logliks)
    padded = torch.full((len(logliks), longest), float("nan"))
    for i, lp in enumerate(logliks):
        nll = -lp / positions
        padded[i, : nll.numel()] = nll
        ax.plot(np.arange(nll.numel()), nll.numpy(), color=method_color("alg2"), alpha=0.12, lw=0.8)
    med = np.nanmedian(padded.numpy(), axis=0)
    count = (~torch.isnan(padded)).sum(0).numpy()
    keep = count >= max(3, len(logliks) // 10)
    ax.plot(np.arange(longest)[keep], med[keep], color=method_color("alg2"), lw=2.5,
            label="Algorithm 2, median over the pairs still searching")
    ax.axhline(float(-target_lp.mean()) / positions, color=method_color("own-code"), ls="--",
               label="targets' own codes (mean)")
    ax.axhline(math.log(k), color=method_color("uniform"), ls=":", lw=2, label=f"uniform grids, log k = {math.log(k):.2f}")
    return finish(fig, ax, "distinct index grid visited (0 = the source's codes)",
                  "NLL under the prior (nats per position)", "Does the search leave the region the prior finds probable?")


def search_drift(real: torch.Tensor, random: torch.Tensor, start: torch.Tensor, found: torch.Tensor,
                 positions: int, tail: float = 0.05) -> dict[str, float]:
    """How far the grids a search ends on lie from real codes, under the prior.

    Arguments are ``log p`` (nats) per grid: ``real`` test codes, ``random`` uniform grids, the
    searches' ``start`` grids (the sources' codes) and the grids they ``found``, pair by pair.

    Returns NLL per position of each group (``real``, ``random``, ``start``, ``found``),
    ``drift`` (mean NLL per position gained from start to end of a search), ``tail_real`` (the
    ``tail`` quantile of the real codes' log p), ``tail_fraction`` (fraction of found grids
    less probable than that: about ``tail`` if they were like real codes) and its 95% interval
    ``tail_low``, ``tail_high`` (:func:`vqtto.stats.share_estimate`).
    """
    nll = {name: float(-t.mean()) / positions for name, t in
           (("real", real), ("random", random), ("start", start), ("found", found))}
    threshold = float(torch.quantile(real.double(), tail))
    share = stats.share_estimate(found < threshold)
    return {**nll, "drift": float((start - found).mean()) / positions, "tail": tail, "tail_real": threshold,
            "tail_fraction": share.value, "tail_low": share.low, "tail_high": share.high, "n": int(found.numel())}


def mixed_grids(start: torch.Tensor, target: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Control grids ``(B, h, w)``: each position takes the target's code with probability ``fraction``, else the start's.

    No search is involved, so these say how probable a mere blend of two real codes is.
    """
    gen = torch.Generator().manual_seed(seed)
    pick = torch.rand(start.shape, generator=gen) < fraction
    return torch.where(pick, target.cpu(), start.cpu())


def changed_fraction(start: torch.Tensor, found: torch.Tensor) -> float:
    """Mean share of positions where ``found`` ``(B, h, w)`` differs from ``start``."""
    return stats.share((start.cpu() != found.cpu()).flatten())


@dataclass
class Control:
    """One group of grids of the controls table, each grid scored against its pair's start grid.

    Attributes:
        label: what the grids are (``"Algorithm 2, final grid"``, ``"blend, 25% target codes"``...).
        kind: ``"search"``, ``"blend"`` or ``"reference"`` (the targets' own codes).
        method: the method id that colours it (:func:`vqtto.book.plots.method_color`).
        changed: mean share of positions that differ from the start grid.
        nll: mean NLL per position of the grids (nats).
        gained: median NLL per position gained from the start grid, with its 95% interval over pairs.
        tail: share of the grids less probable than all but the real codes' least likely ``tail_level``,
            with its 95% interval.
        tail_level: that quantile of the real codes (0.05).
    """

    label: str
    kind: str
    method: str
    changed: float
    nll: float
    gained: stats.Estimate
    tail: stats.Estimate
    tail_level: float


def control(label: str, kind: str, method: str, start_lp: torch.Tensor, found_lp: torch.Tensor, real_lp: torch.Tensor,
            positions: int, changed: float, tail: float = 0.05) -> Control:
    """How probable a group of grids is, relative to where it started (one :class:`Control`).

    ``start_lp``/``found_lp`` ``(B,)`` are log p of each pair's start and found grid; ``real_lp`` of the
    real test codes (their ``tail`` quantile is the threshold of "improbable").
    """
    threshold = float(torch.quantile(real_lp.double(), tail))
    return Control(label, kind, method, changed, float(-found_lp.mean()) / positions,
                   stats.median_estimate((start_lp - found_lp) / positions), stats.share_estimate(found_lp < threshold),
                   tail)


def control_rows(controls: Sequence[Control]) -> list[dict]:
    """The controls table: one row per :class:`Control`, medians and shares with their 95% intervals."""
    return [{"grids": c.label, "positions changed": f"{c.changed:.0%}", "NLL (nats / position)": round(c.nll, 3),
             "median NLL gained from the start (95% CI)": c.gained.text(".3f"),
             f"in the real codes' least likely {c.tail_level:.0%}": c.tail.percent()} for c in controls]


def controls_figure(controls: Sequence[Control], title: str):
    """Median NLL per position gained from the start grid, with its 95% interval, one bar per group of grids."""
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(controls) + 1.2))
    y = np.arange(len(controls))
    med = np.array([c.gained.value for c in controls])
    err = np.array([[c.gained.value - c.gained.low for c in controls], [c.gained.high - c.gained.value for c in controls]])
    ax.barh(y, med, xerr=err, capsize=3, ecolor="0.3", color=[method_color(c.method) for c in controls], alpha=0.85)
    ax.set_yticks(y, [c.label for c in controls], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="k", lw=0.8)
    return finish(fig, ax, "median NLL gained from the start grid (nats per position; 95% interval over pairs)", "",
                  title, legend=False)


def _alg2(controls: Sequence[Control]) -> Control:
    return next(c for c in controls if c.label.startswith("Algorithm 2"))


def beyond_blends(controls: Sequence[Control]) -> bool:
    """The rule: Algorithm 2's final grids lose more probability than every blend of real codes, and the
    lower end of their interval is above zero (so the drift is not what any mixing of two codes does)."""
    alg2 = _alg2(controls)
    return alg2.gained.low > 0 and all(alg2.gained.value > c.gained.value for c in controls if c.kind == "blend")


def controls_sentence(controls: Sequence[Control]) -> str:
    """What the blends and the other searches say about the drift of Algorithm 2's grids."""
    alg2 = _alg2(controls)
    blends = [c for c in controls if c.kind == "blend"]
    lost = f"Algorithm 2's final grids lose {alg2.gained.text('.2f')} nats per position (median, 95% interval)"
    if beyond_blends(controls):
        text = lost + ", more than any blend of source and target codes: the drift is not what merely mixing two real codes does."
    elif all(alg2.gained.value < b.gained.value for b in blends):
        least = min(blends, key=lambda b: b.gained.value)
        text = (lost + f", while a blend that changes {least.changed:.0%} of the positions without any search loses "
                f"{least.gained.text('.2f')}: the search changes many codes yet keeps its grids far more probable than "
                "mixing two real codes would. It drifts from real codes, but less than any such blend.")
    else:
        text = lost + ", within the range of the blends of source and target codes: the controls do not separate the search from mixing two codes."
    others = [c for c in controls if c.kind == "search" and c is not alg2]
    if others:
        more = [c.label for c in others if c.gained.low > alg2.gained.high]
        less = [c.label for c in others if c.gained.high < alg2.gained.low]
        text += (" Of the other searches, " + ", ".join(f"{c.label} loses {c.gained.text('.2f')}" for c in others) + ". "
                 + (f"Their intervals lie above Algorithm 2's for {', '.join(more)}" if more else
                    "None of their intervals lies above Algorithm 2's")
                 + (f", below it for {', '.join(less)}." if less else "."))
    return text


def sampler_traces(model, pp, device: torch.device, methods: Sequence[str], budget: float, chains: int,
                   temperature: float) -> dict:
    """Chapter 3's samplers on the pairs ``pp`` (a :class:`vqtto.data.pairs.Pairs`), run as that chapter runs them
    (:func:`vqtto.tasks.pair_benchmark.run_method`) at ``temperature`` with ``budget`` equivalents per pair:
    method id -> its :class:`vqtto.search.SearchTrace` (``best_indices`` ``(B, h, w)``)."""
    from ...tasks import pair_benchmark

    pb = pair_benchmark.problem(model, pp, device)
    return {m: pair_benchmark.run_method(m, pb, budget, {"temperature": temperature}, chains) for m in methods}


def drift_at_steps(logliks: list[torch.Tensor], steps: Sequence[int], positions: int) -> list[dict]:
    """NLL per position gained after exactly ``t`` distinct grids, over the searches that got that far.

    Comparing every search at the same step count keeps long searches from dominating the right
    end of a drift curve. ``logliks`` is per pair the ``(T_i,)`` log p of its visited grids.
    """
    rows = []
    for t in steps:
        gains = torch.tensor([float(lp[0] - lp[t]) / positions for lp in logliks if lp.numel() > t])
        if gains.numel() == 0:
            continue
        lo, hi = stats.bootstrap_interval(gains) if gains.numel() > 1 else (float("nan"), float("nan"))
        rows.append({"distinct grids": t, "searches that got there": int(gains.numel()),
                     "median NLL gained (nats / position)": round(stats.median(gains), 3),
                     "95% CI": f"[{lo:.3f}, {hi:.3f}]"})
    return rows


def validation_trend(history) -> dict:
    """How much the prior's validation NLL still fell over its last epoch (nats per position).

    A fall that is a sizeable share of the total fall means the prior is under-trained: its
    own samples, and the scores it gives, would still move with more training.
    """
    epochs, val = np.asarray(history.epoch), np.asarray(history.val_nats)
    last = val[epochs >= epochs[-1] - 1.0]
    fall_last = float(last[0] - last[-1]) if last.size > 1 else 0.0
    fall_total = float(val[0] - val[-1]) if val.size > 1 else 0.0
    share = fall_last / fall_total if fall_total > 0 else 0.0
    return {"last_epoch_fall": fall_last, "total_fall": fall_total, "share_in_last_epoch": share,
            "undertrained": share > 0.1}


def leaves_region(d: Mapping[str, float]) -> bool:
    """The rule: the searches leave the high-probability region when the 95% interval of the share of
    their final grids in the real codes' lower ``tail`` lies above ``tail`` (what real codes would give),
    and the NLL rose along the search."""
    return d["tail_low"] > d["tail"] and d["drift"] > 0


def fits(test_nats_per_position: float, k: int) -> bool:
    """The rule for "the prior learned something": test NLL below 90% of the uniform prior's log k."""
    return test_nats_per_position < 0.9 * math.log(k)


def drift_verdict(d: Mapping[str, float], k: int) -> str:
    """A sentence saying whether the searches leave the region the prior finds probable (:func:`leaves_region`)."""
    tail = d["tail"]
    share = f"{d['tail_fraction']:.0%} [{d['tail_low']:.0%}, {d['tail_high']:.0%}]"
    where = ("above" if d["tail_low"] > tail else "below" if d["tail_high"] < tail else "around")
    text = (f"Under the prior, codes of real test images cost {d['real']:.2f} nats per position and "
            f"uniform-random grids {d['random']:.2f} (the uniform prior pays log k = {math.log(k):.2f} everywhere). "
            f"Algorithm 2 starts from the sources' codes at {d['start']:.2f} and ends on grids at {d['found']:.2f}, "
            f"{d['drift']:+.2f} nats per position along the search. {share} of its final grids (95% interval over "
            f"pairs) are less probable than all but the least probable {tail:.0%} of real codes: an interval {where} "
            f"the {tail:.0%} that real codes would give. ")
    text += ("This is a correlation: the grids are scored after the search, which never looked at the prior. "
             "Whether keeping the prior in the objective helps a task is the causal test, made with the "
             "constrained tasks. ")
    if leaves_region(d):
        return text + "This supports the paper's argument: the search drifts out of the high-probability region."
    return text + ("By this measure the search does not clearly leave the high-probability region, "
                   "which the paper argues it does.")


@dataclass
class PriorResult(ChapterResult):
    """What chapter 4 measured: how well the prior fits, and where Algorithm 2's grids lie under it.

    Attributes:
        test_nats_per_position: the prior's test NLL (log_k: the uniform prior's).
        fits: :func:`fits` (test NLL below 90% of log k).
        search_drift: :func:`search_drift` of Algorithm 2 on the chapter's pairs.
        tail_share: the share of Algorithm 2's final grids in the real codes' least likely 5%, with its
            95% interval (from ``search_drift``).
        leaves_region: :func:`leaves_region`; ``drift_verdict`` the sentence.
        loglik_table: the table of log-likelihoods per group of grids.
        controls: :class:`Control` per group of grids: Algorithm 2, the relaxed search, chapter 3's
            samplers (run with ``sampler_budget`` equivalents per pair), blends, the targets' own codes.
        beyond_blends: :func:`beyond_blends`; controls_verdict: :func:`controls_sentence`.
    """

    CHAPTER: ClassVar[str] = "prior"
    dataset: str
    k: int
    test_nats_per_position: float
    log_k: float
    test_bits_per_image: float
    uniform_bits_per_image: float
    prior_parameters: int
    prior_train_seconds: float
    fits: bool
    loglik_table: list[dict]
    n_pairs: int
    alpha: float
    lam: int
    search_drift: dict
    tail_share: stats.Estimate
    leaves_region: bool
    drift_verdict: str
    sampler_budget: float
    controls: list[Control]
    beyond_blends: bool
    controls_verdict: str
    drift_at_steps: list[dict]
    validation: dict
    yardstick_note: str


def yardstick_note(validation: dict, real_nll: float, sample_nll: float) -> str:
    """What the prior's training state and its own samples' score mean for using it as a yardstick."""
    state = ("still falling" if validation["undertrained"] else "flat")
    text = (f"The validation NLL fell {validation['last_epoch_fall']:.3f} nats per position in the last epoch "
            f"({validation['share_in_last_epoch']:.0%} of its whole fall): the curve is {state} at the end. "
            f"The prior's own samples score {sample_nll:.2f} nats per position against {real_nll:.2f} for real test codes")
    gap = sample_nll - real_nll
    if gap > 0:
        text += (f", {gap:.2f} worse: sampling position by position compounds the model's errors, so what it draws is "
                 "less typical than what it scores. Differences between groups of grids smaller than this gap "
                 "should not be read as meaningful.")
    else:
        text += ": its samples are as probable as real codes."
    return text + (" The prior is still learning; a longer-trained one may score the groups differently."
                   if validation["undertrained"] else "")


def prior_result(profile: str, dataset: str, prior, loglik_table: list[dict], drift: dict, n_pairs: int,
                 alpha: float, lam: int, controls: list[Control], at_steps: list[dict], sample_nll: float,
                 sampler_budget: float) -> PriorResult:
    """The chapter's typed result from the trained prior (a :class:`vqtto.models.TrainedPrior`), its
    log-likelihood table, the drift of Algorithm 2 (run with ``alpha``, ``lam`` on ``n_pairs`` pairs) and
    the controls (chapter 3's samplers run with ``sampler_budget`` equivalents per pair)."""
    k, (h, w) = prior.k, prior.test_codes.grid_shape
    nll = prior.test["nats_per_position"]
    return PriorResult(
        profile=profile, dataset=dataset, k=k, test_nats_per_position=nll, log_k=math.log(k),
        test_bits_per_image=prior.test["bits_per_image"], uniform_bits_per_image=h * w * math.log(k) / LN2,
        prior_parameters=sum(p.numel() for p in prior.model.parameters()), prior_train_seconds=prior.history.seconds,
        fits=fits(nll, k), loglik_table=loglik_table, n_pairs=n_pairs, alpha=alpha, lam=lam,
        search_drift=dict(drift), tail_share=stats.Estimate(drift["tail_fraction"], drift["tail_low"], drift["tail_high"],
                                                            drift["n"]),
        leaves_region=leaves_region(drift), drift_verdict=drift_verdict(drift, k), sampler_budget=sampler_budget,
        controls=list(controls), beyond_blends=beyond_blends(controls), controls_verdict=controls_sentence(controls),
        drift_at_steps=at_steps, validation=validation_trend(prior.history),
        yardstick_note=yardstick_note(validation_trend(prior.history), drift["real"], sample_nll))
