"""The results page: the paper's claims beside the numbers the executed chapters recorded.

Every chapter calls :func:`vqtto.report.record`, which writes its headline numbers to
``<results dir>/<chapter>.json``. :func:`claims` reads those files and returns one row per
claim of the paper; nothing here is typed in except the paper's own numbers, quoted from its
text with the section they come from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report import results_dir

CHAPTER_PAGES = {
    "training": "01_training", "gradient_search": "02_gradient_search", "prior": "03_prior",
    "flows": "04_flows", "hardness": "06_hardness",
}


class MissingResults(RuntimeError):
    """A chapter's results are absent or come from another profile than the page's."""


def load_all(profile: str, folder: Path | None = None) -> dict[str, dict]:
    """Every chapter's recorded results for ``profile``.

    Raises:
        MissingResults: naming the chapters that were not executed with ``profile``.
    """
    folder = Path(folder) if folder is not None else results_dir()
    found, missing = {}, []
    for chapter in CHAPTER_PAGES:
        path = folder / f"{chapter}.json"
        data = json.loads(path.read_text()) if path.exists() else None
        if data is None or data.get("profile") != profile:
            missing.append(chapter)
        else:
            found[chapter] = data
    if missing:
        raise MissingResults(
            f"no {profile!r} results for chapters {missing} in {folder}; execute them first "
            f"(python -m vqtto.book run --profile {profile})")
    return found


def _link(chapter: str) -> str:
    return f"[{CHAPTER_PAGES[chapter]}]({CHAPTER_PAGES[chapter]}.html)"


def _fmt(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def training_rows(r: dict) -> list[dict]:
    paper = r.get("paper_gap")
    gap = r["gap"]
    verdict = "no paper number for this data set" if paper is None else (
        "agrees (our gap is no larger)" if gap <= paper else "does not agree (our gap is larger)")
    return [{
        "claim (paper section)": f"k={r['k_reference']} -> k={r['k']} costs little test reconstruction MSE (5.1)",
        "paper": f"{paper} on {r['dataset']}" if paper is not None else "-",
        "ours": f"{gap:+.4f} ({r['mse_reference']:.4f} -> {r['mse_small']:.4f}) on {r['dataset']}",
        "verdict": verdict, "chapter": _link("training")}]


def table1_rows(r: dict) -> list[dict]:
    rows = []
    for label, row in r["table1"].items():
        rows.append({
            "claim (paper section)": f"Table 1: unique steps before the first repeat, {label} (5.2)",
            "paper": "CIFAR-10 5.97 ± 5.00 [2, 34]; Mini-ImageNet 2?.47 ± 23.12 [2, 103] (tens digit illegible)",
            "ours": f"{row['mean']} ± {row['std']} [{row['min']}, {row['max']}], {row['ended in a loop']} ended in a loop",
            "verdict": "the paper has no Fashion-MNIST row; compare the spread and the loop rate",
            "chapter": _link("gradient_search")})
    rows.append({
        "claim (paper section)": "every run of Algorithm 2 ends in a loop (5.2)", "paper": "200 of 200",
        "ours": f"{r['loop_fraction_alg2']:.0%} loops, {r['stalled_fraction_alg2']:.0%} stalled",
        "verdict": "agrees" if r["loop_fraction_alg2"] >= 0.99 else "partly: some runs stall instead of looping",
        "chapter": _link("gradient_search")})
    return rows


def prior_rows(r: dict) -> list[dict]:
    d = r.get("search_drift") or {}
    drift = (f"nats/position: real codes {d['real']:.2f}, search starts {d['start']:.2f}, "
             f"Algorithm 2's final grids {d['found']:.2f}, uniform grids {d['random']:.2f}; "
             f"{d['tail_fraction']:.0%} of final grids in the real codes' least likely {d['tail']:.0%}") if d else "-"
    return [{
        "claim (paper section)": "a PixelCNN prior over the codes converges (5.3)",
        "paper": "converges (no number given)",
        "ours": f"{r['test_nats_per_position']:.3f} nats/position vs log k = {r['log_k']:.3f} "
                f"({r['test_bits_per_image']:.0f} vs {r['uniform_bits_per_image']:.0f} bits/image), k={r['k']}",
        "verdict": "agrees: far below the uniform prior" if r["test_nats_per_position"] < 0.9 * r["log_k"]
                   else "weak: close to the uniform prior",
        "chapter": _link("prior")}, {
        "claim (paper section)": "the gradient search leaves the prior's high-probability region (5.3, 6)",
        "paper": "argued, not measured",
        "ours": drift,
        "verdict": ("agrees: the final grids are less likely than the starts" if d and d["found"] > d["start"]
                    else "not seen in this run"),
        "chapter": _link("prior")}]


def flow_rows(r: dict) -> list[dict]:
    frac = r["divergence_fraction"]  # configuration -> flow kind -> fraction of runs that diverged
    paper = {c: v["paper"] for c, v in frac.items()}
    simplex = {c: v["simplex"] for c, v in frac.items()}
    return [{
        "claim (paper section)": "the Gaussian-to-Gumbel-softmax flow is unstable in all four configurations (5.4)",
        "paper": "unstable in all four",
        "ours": "the paper's flow diverged in " + ", ".join(f"({c}) {v:.0%}" for c, v in paper.items()) + " of runs",
        "verdict": ("agrees" if all(v > 0 for v in paper.values()) else
                    f"partly: unstable in {sum(v > 0 for v in paper.values())} of {len(paper)} configurations"),
        "chapter": _link("flows")}, {
        "claim (paper section)": "a source on the simplex would fix it (5.4, 6)",
        "paper": "proposed, not built",
        "ours": "our flow onto the simplex diverged in " + ", ".join(f"({c}) {v:.0%}" for c, v in simplex.items()) + " of runs",
        "verdict": "confirmed: stable in every run" if max(simplex.values()) == 0 else "not confirmed",
        "chapter": _link("flows")}]


def relative_losses(gs: dict, fl: dict) -> dict[str, float]:
    """Median final loss / loss of the target's own code, per search method (chapters 2 and 4)."""
    rel = {f"{k} (ch. 2)": v for k, v in gs["relative_loss_median"].items()}
    rel["alg2, best grid (ch. 4 pairs)"] = fl["alg2_relative_loss_median"]
    rel["PULSE through the flow (ch. 4)"] = fl["pulse_relative_loss_median"]
    return rel


def search_rows(gs: dict, fl: dict) -> list[dict]:
    rel = relative_losses(gs, fl)
    grids = {k: v for k, v in rel.items() if "continuous" not in k and "source" not in k}
    best = min(grids, key=grids.get)
    return [{
        "claim (paper section)": "best search: median final loss / loss of the target's own code (ours; 1 = as good as encoding the target)",
        "paper": "no search reaches the target (5.2, Figure 4)",
        "ours": "; ".join(f"{k}: {v:.3g}" for k, v in rel.items()),
        "verdict": f"best index-grid search: {best}", "chapter": _link("gradient_search") + ", " + _link("flows")}]


def hardness_rows(r: dict) -> list[dict]:
    searches = r.get("searches", {})
    holds = r["optimum_matches"] and r["map_error"] < 1e-9
    return [{
        "claim (paper section)": "latent search is NP-hard (4.2, A.2)",
        "paper": "rewrites the search as an integer program (the reduction runs the wrong way)",
        "ours": f"MAX-CUT reduces to it (k=2, fully connected decoder): loss = affine(cut) on every grid of the "
                f"worked example (largest error {r['map_error']:.1e}), optimal grid = maximum cut on every timed "
                "instance; share of runs solved exactly: " +
                "; ".join(f"{m} {s['fraction_exact']:.0%}" for m, s in searches.items()),
        "verdict": "the claim holds, by a reduction checked in the chapter" if holds else "the reduction check failed",
        "chapter": _link("hardness")}]


def claims(results: dict[str, dict]) -> list[dict]:
    """All rows of the results page, in book order."""
    return [*training_rows(results["training"]), *table1_rows(results["gradient_search"]),
            *prior_rows(results["prior"]), *flow_rows(results["flows"]),
            *search_rows(results["gradient_search"], results["flows"]), *hardness_rows(results["hardness"])]


def search_figure(gs: dict, fl: dict):
    """Bar chart of the median relative final loss of every search (log scale; 1 = target's own code)."""
    import matplotlib.pyplot as plt

    from .plots import METHOD_COLORS

    rel = relative_losses(gs, fl)
    colors = [METHOD_COLORS["alg1"] if "alg1" in k else METHOD_COLORS["alg2"] if "alg2" in k else
              METHOD_COLORS["alg3"] if "alg3" in k else METHOD_COLORS["improved"] if "improved" in k else
              METHOD_COLORS["flow"] if "PULSE" in k else METHOD_COLORS["source"] for k in rel]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rel) + 1))
    ax.barh(list(rel), list(rel.values()), color=colors)
    ax.axvline(1.0, color="k", lw=1, ls="--", label="loss of the target's own code")
    ax.set_xscale("log")
    ax.set_xlabel("median final MSE / MSE of the target's own code (log scale)")
    ax.set_title("Which search gets closest to the target?")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def search_verdict(gs: dict, fl: dict) -> str:
    """One sentence, computed from the recorded medians, on how the searches compare."""
    rel = relative_losses(gs, fl)
    paper = {k: v for k, v in rel.items() if k.startswith(("alg2", "alg3"))}
    ours = {k: v for k, v in rel.items() if "improved" in k or "PULSE" in k}
    worst_paper = min(paper.values())
    best_ours_name = min(ours, key=ours.get)
    ratio = worst_paper / ours[best_ours_name]
    return (f"The best of the paper's straight-through searches ends at {worst_paper:.3g} times the loss of the "
            f"target's own code; the best search that goes past the paper, {best_ours_name}, ends at "
            f"{ours[best_ours_name]:.3g} ({ratio:.3g}x lower).")
