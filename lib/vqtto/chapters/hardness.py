"""Chapter 5, the hardness of latent search (paper, section 4.2 and appendices A.2, A.3).

The chapter's computations: search-space sizes, brute-force timings against the number of latent
positions, and the gradient searches run on reduced MAX-CUT instances against the exact optimum.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import hardness
from ..params import Param, at_least, between, chapter_schema, each, greater_than, one_of
from ..plots import METHOD_COLORS
from ..profiles import PROFILES


def _pairs(v) -> str | None:
    ok = all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, int) and s >= 1 for s in p) for p in v)
    return None if ok and v else "a non-empty list of [h, w] pairs of positive ints"


def _grid(v) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(isinstance(s, int) and s >= 1 for s in v)
    if not ok:
        return "a pair [h, w] of positive ints"
    return None if 3 <= v[0] * v[1] <= 20 else "a grid of 3..20 positions (brute force enumerates 2^(h w))"


PARAMS = chapter_schema({
    "example_grid": Param(list, "latent grid [h, w] of the worked example (all 2^(h w) grids are drawn)", _grid, default=[3, 4]),
    "space_ks": Param(list, "codebook sizes for the search-space table (paper: 512 and 40)", each(at_least(2)), default=[512, 40]),
    "space_grids": Param(list, "latent grids [h, w] for the search-space table (7x7 Fashion-MNIST, ...)", _pairs, default=[[7, 7], [8, 8], [21, 21]]),
    "timing_n": Param(list, "numbers of latent positions (graph vertices) to brute-force and time", each(between(3, 24)), default=[4, 6, 8, 10, 12, 14, 16, 18, 20]),
    "edge_p": Param(float, "edge probability of the random graphs G(n, p)", between(0.05, 1.0), default=0.5),
    "weighted": Param(bool, "random edge weights in [0.1, 1] instead of unit weights", default=False),
    "search_grid": Param(list, "latent grid [h, w] of the instances the gradient searches attack", _grid, default=[4, 4]),
    "n_instances": Param(int, "random MAX-CUT instances for the search comparison", at_least(1), default=40),
    "starts": Param(int, "random starting latents per instance and search", at_least(1), default=8),
    "alphas": Param(list, "step sizes alpha of the straight-through searches (Algorithms 2 and 3)", each(greater_than(0), float), default=[0.1, 1.0, 10.0]),
    "lam": Param(int, "most repeats of one straight-through step (the paper's lambda)", at_least(1), default=100),
    "random_grids": Param(int, "uniformly random grids per run for the random baseline", at_least(1), default=32),
    "seed": Param(int, "seed of the random graphs and starting latents", at_least(0), default=0),
})


def squarest_grid(n: int) -> tuple[int, int]:
    """The ``(h, w)`` with ``h * w == n`` and ``h <= w`` closest to square."""
    h = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
    return h, n // h


def search_space_rows(ks, grids) -> list[dict]:
    """One row per latent grid: ``log10`` of the number of index grids for each ``k``."""
    rows = []
    for h, w in grids:
        row = {"latent grid": f"{h}x{w}", "positions": h * w}
        for k in ks:
            row[f"log10 #grids, k={k}"] = round(hardness.search_space_log10(k, h, w), 1)
        rows.append(row)
    return rows


def time_brute_force(ns, edge_p: float, weighted: bool, seed: int) -> list[dict]:
    """Brute-force MAX-CUT, brute-force latent search and branch and bound on one random graph per ``n``.

    Every row checks that the three agree: the MSE-minimal grid is a maximum cut, and branch and
    bound (on the loss, with interval bounds) finds the same optimum.
    """
    from tqdm.auto import tqdm

    rows = []
    for n in tqdm(ns, desc="brute force"):
        g = hardness.random_graph(n, edge_p, weighted=weighted, seed=seed + n)
        red = hardness.reduce_max_cut(g, squarest_grid(n))
        cut = hardness.brute_force_cut(g)
        lat = hardness.brute_force_latent(red)
        bb = hardness.branch_and_bound_latent(red)
        rows.append({
            "n": n, "grid": "x".join(map(str, red.grid)), "edges": int(g.edges.shape[0]),
            "assignments": 2 ** n, "max cut": cut.best_value,
            "cut from min MSE": round(float(red.cut_from_loss(lat.best_value)), 4),
            "latent grid is a max cut": bool(abs(float(hardness.cut_values(g, lat.best.view(1, -1))) - cut.best_value) < 1e-9),
            "B&B agrees": bool(abs(float(red.cut_from_loss(bb.best_value)) - cut.best_value) < 1e-6 * max(1.0, cut.best_value)),
            "cut seconds": cut.seconds, "latent seconds": lat.seconds,
            "B&B nodes": bb.nodes, "B&B nodes / full tree": round(bb.nodes / (2 ** (n + 1) - 1), 4), "B&B seconds": bb.seconds,
        })
    return rows


def doubling_factor(rows, key: str = "latent seconds", min_seconds: float = 0.01) -> float | None:
    """Least-squares growth factor of time per added position, from the rows whose time exceeds ``min_seconds``."""
    pts = [(r["n"], r[key]) for r in rows if r[key] >= min_seconds]
    if len(pts) < 2:
        return None
    n, t = np.array(pts, dtype=float).T
    return float(2 ** np.polyfit(n, np.log2(t), 1)[0])


def timing_figure(rows):
    """Brute-force wall time (log scale) against the number of latent positions."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    n = [r["n"] for r in rows]
    ax.semilogy(n, [r["latent seconds"] for r in rows], "o-", color=METHOD_COLORS["exact"],
                label="latent search: decode all $2^n$ grids")
    ax.semilogy(n, [r["cut seconds"] for r in rows], "s--", color=METHOD_COLORS["uniform"],
                label="MAX-CUT: evaluate all $2^n$ labellings")
    ax.semilogy(n, [r["B&B seconds"] for r in rows], "^-.", color=METHOD_COLORS["improved"],
                label="branch and bound on the loss (interval bounds)")
    ax.set_xlabel("latent positions n = h·w (graph vertices), k = 2")
    ax.set_ylabel("wall time (seconds, log scale)")
    ax.set_title("Exact latent search: time against grid size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def instances(n_instances: int, grid, edge_p: float, weighted: bool, seed: int):
    """``n_instances`` reduced random graphs on ``grid``, each with its brute-force maximum cut."""
    h, w = grid
    out = []
    for i in range(n_instances):
        g = hardness.random_graph(h * w, edge_p, weighted=weighted, seed=seed + 1000 + i)
        red = hardness.reduce_max_cut(g, (h, w))
        out.append((red, hardness.brute_force_cut(g).best_value))
    return out


def visited_scores(red, trace, start_indices: torch.Tensor, max_cut: float) -> dict[str, torch.Tensor]:
    """Exact score of the best grid each run visited: ``(B,)`` cut, ratio and solved.

    Scores every visited grid with :func:`vqtto.hardness.score_grids` (float64 cuts from the
    grids themselves) instead of trusting the float32 losses; the start grid is taken from
    ``start_indices`` ``(B, h, w)``, the ``nearest(z_start)`` every search begins from.
    """
    best = []
    for i, grids in enumerate(trace.grids):
        visited = torch.cat([start_indices[i:i + 1].cpu(), grids[1:].cpu()])
        best.append(hardness.cut_values(red.graph, visited).max())
    cuts = torch.stack(best)
    return {"cut": cuts, "ratio": cuts / max_cut, "solved": cuts >= max_cut - 1e-9 * max(1.0, max_cut)}


def run_searches(cases, starts: int, alphas, lam: int, random_grids: int, seed: int, device) -> tuple[dict, dict]:
    """Every search on every reduced instance from the same ``starts`` random latents.

    Args:
        cases: ``[(Reduction, max_cut), ...]`` from :func:`instances`.
        starts: B, random start latents ``(B, 1, h, w)`` uniform in [0, 1] per instance.

    Returns:
        ``scores``: method label -> one :func:`visited_scores`-like dict per instance;
        ``decoded``: method label -> mean decoded images per run.
    """
    from tqdm.auto import tqdm

    from .. import search

    scores, decoded = {}, {}

    def add(label, score, n_decoded):
        scores.setdefault(label, []).append(score)
        decoded[label] = decoded.get(label, 0.0) + n_decoded / (starts * len(cases))

    for c, (red, max_cut) in enumerate(tqdm(cases, desc="instances")):
        gen = torch.Generator().manual_seed(seed + c)
        h, w = red.grid
        z = torch.rand(starts, 1, h, w, generator=gen).to(device)
        dec = red.decoder.to(device)
        loss = search.mse_to(red.targets(starts).to(device))
        start_idx = dec.nearest(z)
        for mask, name in (("all", "alg2"), ("single", "alg3")):
            for a in alphas:
                tr = search.straight_through(dec, z, loss, alpha=a, lam=lam, mask=mask)
                add(f"{name} α={a:g}", visited_scores(red, tr, start_idx, max_cut), tr.decoded_images)
        tr = search.greedy_coordinate(dec, z, loss, positions=min(4, h * w), candidates=1)
        add("improved (greedy coordinate)", visited_scores(red, tr, start_idx, max_cut), tr.decoded_images)
        local = hardness.one_flip_local_search(red.graph, start_idx.cpu())
        add("1-flip local search", hardness.score_grids(red, local, max_cut), float("nan"))
        rnd = torch.randint(2, (starts * random_grids, h, w), generator=gen)
        cuts = hardness.cut_values(red.graph, rnd).view(starts, random_grids).max(1).values
        add(f"best of {random_grids} random grids", {"cut": cuts, "ratio": cuts / max_cut,
            "solved": cuts >= max_cut - 1e-9 * max(1.0, max_cut)}, starts * random_grids)
    return scores, decoded


def method_color(label: str) -> str:
    """The book's colour of the method a row label names."""
    for prefix, key in (("alg2", "alg2"), ("alg3", "alg3"), ("improved", "improved"), ("1-flip", "local_search"),
                        ("best of", "uniform")):
        if label.startswith(prefix):
            return METHOD_COLORS.get(key, "#e377c2")
    return "#7f7f7f"


def best_per_algorithm(rows) -> list[str]:
    """The labels to draw: the best alpha of each straight-through algorithm, and every other method."""
    keep, best = [], {}
    for r in rows:
        algo = r["method"].split()[0]
        if algo in ("alg2", "alg3"):
            if algo not in best or r["mean cut / max cut"] > best[algo]["mean cut / max cut"]:
                best[algo] = r
        else:
            keep.append(r["method"])
    return [best[a]["method"] for a in ("alg2", "alg3") if a in best] + keep


def summary_rows(scores: dict[str, list[dict]], decoded: dict[str, float] | None = None) -> list[dict]:
    """Per method: fraction of runs that reached the exact optimum, mean/min ratio to the maximum cut."""
    rows = []
    for method, per_instance in scores.items():
        solved = torch.cat([s["solved"] for s in per_instance]).double()
        ratio = torch.cat([s["ratio"] for s in per_instance])
        best_solved = torch.tensor([bool(s["solved"].any()) for s in per_instance]).double()
        rows.append({
            "method": method, "runs": int(solved.numel()),
            "fraction of runs exact": round(float(solved.mean()), 3),
            "instances solved by some start": round(float(best_solved.mean()), 3),
            "mean cut / max cut": round(float(ratio.mean()), 4),
            "worst cut / max cut": round(float(ratio.min()), 4),
        })
        if decoded is not None:
            d = decoded[method]
            rows[-1]["decoded images per run"] = "— (uses the graph)" if math.isnan(d) else round(d, 1)
    return rows


def ratio_figure(scores: dict[str, list[dict]], labels):
    """Left: distribution (ECDF) of cut / max cut over all runs; right: fraction of runs solved exactly."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for method in labels:
        r = np.sort(torch.cat([s["ratio"] for s in scores[method]]).numpy())
        ax.step(r, np.arange(1, r.size + 1) / r.size, where="post", lw=2, color=method_color(method), label=method)
    ax.axvline(1.0, color=METHOD_COLORS["exact"], ls=":", label="exact optimum")
    ax.set_xlabel("cut weight of the best grid found / maximum cut")
    ax.set_ylabel("fraction of runs with at most this ratio")
    ax.set_title("Distribution of the quality reached")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    solved = [float(torch.cat([s["solved"] for s in scores[m]]).double().mean()) for m in labels]
    bx.barh(range(len(labels)), solved, color=[method_color(m) for m in labels])
    bx.set_yticks(range(len(labels)), labels, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    bx.set_xlabel("fraction of runs that reach the exact optimum")
    bx.set_title("Solved exactly")
    bx.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def verdict(rows) -> str:
    """A sentence comparing the best straight-through setting with random guessing and local search."""
    by = {r["method"]: r for r in rows}
    st = [r for r in rows if r["method"].startswith(("alg2", "alg3"))]
    best = max(st, key=lambda r: r["mean cut / max cut"])
    rnd = next(r for r in rows if r["method"].startswith("best of"))
    loc = by["1-flip local search"]
    cmp = "above" if best["mean cut / max cut"] > rnd["mean cut / max cut"] else "at or below"
    return (f"The best straight-through setting, {best['method']}, reaches the exact optimum in "
            f"{best['fraction of runs exact']:.1%} of runs with a mean ratio of {best['mean cut / max cut']:.3f}, "
            f"{cmp} the {rnd['mean cut / max cut']:.3f} of {rnd['method']}; 1-flip local search solves "
            f"{loc['fraction of runs exact']:.1%} of runs (mean ratio {loc['mean cut / max cut']:.3f}).")


def map_figure(red, cut, lat):
    """Every assignment's MSE against its cut weight: all ``2^n`` points on one falling line."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(cut.values.numpy(), lat.values.numpy(), "o", ms=3, alpha=0.3, color=METHOD_COLORS["alg2"],
            label=f"all {cut.values.numel()} index grids")
    xs = np.array([0.0, red.graph.total_weight])
    ax.plot(xs, red.loss_from_cut(xs), "-", lw=1, color=METHOD_COLORS["target"], label="MSE = (W − cut) / (4 w_max E)")
    ax.plot([cut.best_value], [lat.best_value], "*", ms=14, color=METHOD_COLORS["exact"], label="optimum of both")
    ax.set_xlabel("cut weight of the labelling")
    ax.set_ylabel("MSE of the decoded grid to the target")
    ax.set_title("Latent loss is an exact affine function of the cut")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cut_figure(red, labels: torch.Tensor, title: str):
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


def space_rows_with_time(ks, grids, rate: float = 1e9) -> list[dict]:
    """:func:`search_space_rows` plus ``log10`` of the years exhaustive search takes at ``rate`` grids/s."""
    rows = search_space_rows(ks, grids)
    for row in rows:
        for k in ks:
            row[f"log10 years, k={k}"] = round(row[f"log10 #grids, k={k}"] - math.log10(rate * 3.156e7), 1)
    return rows


def first_order_check(red, indices: torch.Tensor) -> dict[str, float]:
    """How well the straight-through gradient predicts the effect of flipping one position.

    For each grid ``(B, h, w)`` and position ``i`` it compares the first-order prediction
    ``dL/dz_i * (c_new - c_old)`` with the true change of the loss when ``X_i`` flips.

    Returns:
        ``predicted improving``: fraction of single flips the gradient says lower the loss;
        ``truly improving``: fraction that really do; ``wrong among predicted``: fraction of the
        predicted-improving flips that in fact raise or keep the loss.
    """
    dec = red.decoder
    b, (h, w) = indices.shape[0], red.grid
    codes = dec.lookup(indices).detach().double().requires_grad_(True)
    target = red.target.double()
    weight = dec.layer.weight.detach().double()
    base = (codes.flatten(1) @ weight.t() - target.flatten(1)).pow(2).mean(1)
    (grad,) = torch.autograd.grad(base.sum(), codes)
    delta = (1 - 2 * indices).double()                                     # code change of a flip
    predicted = (grad[:, 0] * delta).flatten(1)                             # (B, n)
    flips = indices.flatten(1)[:, None, :].repeat(1, h * w, 1)
    flips[:, torch.arange(h * w), torch.arange(h * w)] ^= 1
    flip_codes = dec.lookup(flips.view(-1, h, w)).double().flatten(1)
    flip_loss = (flip_codes @ weight.t() - target.flatten(1)).pow(2).mean(1).view(b, h * w)
    true = flip_loss - base.detach()[:, None]
    pred_imp, true_imp = predicted < -1e-12, true < -1e-9
    return {"predicted improving": float(pred_imp.double().mean()), "truly improving": float(true_imp.double().mean()),
            "wrong among predicted": float((pred_imp & ~true_imp).sum() / pred_imp.sum().clamp(min=1))}
