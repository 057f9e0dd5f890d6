"""Exact latent search on small instances, and what exhaustive search costs as the grid grows.

Brute force enumerates all ``2^n`` labellings of a graph (as MAX-CUT) or all ``2^n`` index grids of
its reduction (as a latent search that only decodes and scores); branch and bound searches the
latent loss with interval bounds through the decoder. :func:`verify_reduction` and
:func:`time_exact_solvers` check the three against each other; :func:`search_space_log10` and
:func:`growth_per_position` say how far exhaustive search is from a real latent grid.

Shapes: assignments ``(M, n)`` int64 with values 0/1, index grids ``(h, w)`` int64.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .hardness import Graph, Reduction, cut_values, random_graph, reduce_max_cut, squarest_grid

# Assignments decoded per chunk in the brute-force solvers (memory stays a few tens of MB).
DEFAULT_CHUNK = 1 << 15
# Brute force enumerates 2^N assignments; refuse sizes that would run for hours.
MAX_BRUTE_FORCE_VERTICES = 26
# Agreement of two float64 cut weights (relative to max(1, cut)).
EXACT_TOL = 1e-9
# Agreement of a cut recovered from a float32 loss (relative to max(1, cut)).
FLOAT32_TOL = 1e-6
SECONDS_PER_YEAR = 3.156e7


def same_cut(a: float, b: float, tol: float = EXACT_TOL) -> bool:
    """Whether two cut weights agree to ``tol`` relative to ``max(1, |b|)``."""
    return abs(float(a) - float(b)) < tol * max(1.0, abs(float(b)))


def assignments(n: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows ``start..stop-1`` of all ``2^n`` 0/1 assignments, row ``r`` = binary digits of ``r``: ``(M, n)`` int64."""
    stop = 2 ** n if stop is None else stop
    r = torch.arange(start, stop, dtype=torch.long)
    return (r[:, None] >> torch.arange(n - 1, -1, -1)) & 1


@dataclass
class Exact:
    """The result of a brute-force solve.

    Attributes:
        best_value: the optimum (maximum cut, or minimum MSE).
        best: ``(n,)`` or ``(h, w)`` int64, the first optimal assignment in enumeration order.
        values: ``(2^n,)`` every assignment's value in enumeration order (``keep_values``) or None.
        seconds: wall time of the enumeration.
    """

    best_value: float
    best: torch.Tensor
    values: torch.Tensor | None
    seconds: float


def _enumerate(n: int, score, maximise: bool, chunk: int, keep_values: bool, progress: bool) -> tuple:
    if n > MAX_BRUTE_FORCE_VERTICES:
        raise ValueError(f"brute force over 2^{n} assignments refused; n must be <= {MAX_BRUTE_FORCE_VERTICES}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk!r}")
    total = 2 ** n
    starts = range(0, total, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"brute force 2^{n}", leave=False)
    t0 = time.perf_counter()
    best_value, best, kept = None, None, []
    for s in starts:
        x = assignments(n, s, min(s + chunk, total))
        v = score(x)
        pos = int(v.argmax() if maximise else v.argmin())
        if best_value is None or (v[pos] > best_value if maximise else v[pos] < best_value):
            best_value, best = float(v[pos]), x[pos]
        if keep_values:
            kept.append(v)
    values = torch.cat(kept) if keep_values else None
    return best_value, best, values, time.perf_counter() - t0


def brute_force_cut(g: Graph, chunk: int = DEFAULT_CHUNK, keep_values: bool = False, progress: bool = False) -> Exact:
    """Maximum cut of ``g`` by enumerating all ``2^n`` labellings (vectorised in chunks)."""
    value, best, values, sec = _enumerate(g.n, lambda x: cut_values(g, x), True, chunk, keep_values, progress)
    return Exact(value, best, values, sec)


def brute_force_latent(red: Reduction, chunk: int = DEFAULT_CHUNK, keep_values: bool = False, progress: bool = False) -> Exact:
    """Minimum MSE over all ``2^(h w)`` index grids, by decoding every grid (vectorised in chunks).

    This never looks at the graph: it runs the decoder and the loss, like any latent search would.
    """
    h, w = red.grid
    value, best, values, sec = _enumerate(
        h * w, lambda x: red.mse_of_grids(x.view(-1, h, w)), False, chunk, keep_values, progress)
    return Exact(value, best.view(h, w), values, sec)


@dataclass
class BranchAndBound:
    """The result of :func:`branch_and_bound_latent`.

    Attributes:
        best_value: the minimum MSE (proved optimal when the search finishes).
        best: ``(h, w)`` int64, an optimal grid.
        nodes: search-tree nodes visited or bounded and pruned, i.e. the root plus every child
            whose bound was computed (the full binary tree has ``2^(n+1) - 1``).
        seconds: wall time.
    """

    best_value: float
    best: torch.Tensor
    nodes: int
    seconds: float


def branch_and_bound_latent(red: Reduction, max_nodes: int = 5_000_000) -> BranchAndBound:
    """Exact latent search by branch and bound on the *loss*, with interval bounds through the decoder.

    Branching fixes one latent position to each of the ``k`` codes in turn (no order on the codes
    is used); a partial grid's bound is the MSE that the decoder's output intervals allow when
    each free position may take any value between the smallest and largest code (interval bound
    propagation through the linear layer). A subtree is cut when its bound is no lower than the
    best loss found so far. Positions are fixed in order of decreasing degree in the decoder.

    Raises:
        RuntimeError: when more than ``max_nodes`` nodes would be needed.
    """
    weight = red.decoder.layer.weight.detach().double().cpu().numpy()           # (P, n)
    target = red.target.detach().double().cpu().numpy().reshape(-1)           # (P,)
    codes = red.decoder.codebook.detach().double().cpu().numpy()[:, 0]        # (k,)
    w_pos, w_neg = np.clip(weight, 0, None), np.clip(weight, None, 0)
    n = weight.shape[1]
    order = np.argsort(-(weight != 0).sum(0), kind="stable")
    lo_free, hi_free = np.full(n, codes.min()), np.full(n, codes.max())
    state = {"best": math.inf, "grid": None, "nodes": 0}

    def bound(zlo, zhi):
        lo = w_pos @ zlo + w_neg @ zhi
        hi = w_pos @ zhi + w_neg @ zlo
        gap = np.maximum(lo - target, 0) + np.maximum(target - hi, 0)
        return float((gap ** 2).mean())

    def visit(depth, zlo, zhi, assign):
        if state["nodes"] > max_nodes:
            raise RuntimeError(f"branch and bound needs more than max_nodes={max_nodes} nodes")
        if depth == n:
            value = bound(zlo, zhi)  # exact: every position is fixed
            if value < state["best"]:
                state["best"], state["grid"] = value, assign.copy()
            return
        pos = order[depth]
        children = []
        for c, v in enumerate(codes):
            clo, chi = zlo.copy(), zhi.copy()
            clo[pos] = chi[pos] = v
            children.append((bound(clo, chi), c, clo, chi))
        state["nodes"] += len(codes)
        for b, c, clo, chi in sorted(children, key=lambda t: t[0]):
            if b < state["best"] - 1e-15:
                assign[pos] = c
                visit(depth + 1, clo, chi, assign)

    t0 = time.perf_counter()
    state["nodes"] = 1  # the root
    visit(0, lo_free.copy(), hi_free.copy(), np.zeros(n, dtype=np.int64))
    grid = torch.from_numpy(state["grid"]).view(*red.grid)
    return BranchAndBound(state["best"], grid, state["nodes"], time.perf_counter() - t0)


@dataclass
class ReductionCheck:
    """The reduction checked on every grid of one instance (:func:`verify_reduction`).

    Attributes:
        cut: every labelling's cut weight (``values`` kept), maximum first.
        latent: every index grid's MSE to the target (``values`` kept), minimum first.
        map_error: largest ``|cut_from_loss(MSE(X)) - cut(X)|`` over all ``2^n`` grids.
        best_grid_cut: cut weight of the MSE-minimal grid, from the grid itself.
    """

    cut: Exact
    latent: Exact
    map_error: float
    best_grid_cut: float

    @property
    def optimum_matches(self) -> bool:
        """The MSE-minimal grid is a maximum cut."""
        return same_cut(self.best_grid_cut, self.cut.best_value)

    @property
    def holds(self) -> bool:
        """The affine map is exact on every grid (to :data:`EXACT_TOL`) and the optima coincide."""
        return self.map_error < EXACT_TOL and self.optimum_matches


def verify_reduction(red: Reduction) -> ReductionCheck:
    """Enumerate every labelling as a cut and every grid as a decoded image, and compare the two.

    Use a float64 reduction (``reduce_max_cut(..., dtype=torch.float64)``) for an exact check.
    """
    cut = brute_force_cut(red.graph, keep_values=True)
    latent = brute_force_latent(red, keep_values=True)
    map_error = float((red.cut_from_loss(latent.values) - cut.values).abs().max())
    best_grid_cut = float(cut_values(red.graph, latent.best.view(1, -1)))
    return ReductionCheck(cut, latent, map_error, best_grid_cut)


@dataclass
class SolverComparison:
    """The three exact solvers on one random graph of ``n`` vertices, reduced to a ``grid`` (k = 2).

    Attributes:
        n, grid, edges: vertices (latent positions), ``[h, w]``, edges (decoded pixels).
        max_cut: the maximum cut, by enumerating labellings.
        cut_from_min_mse: the minimum MSE over all index grids, mapped back to a cut weight.
        latent_grid_is_max_cut: the MSE-minimal grid, scored as a cut, is a maximum cut.
        bb_agrees: branch and bound's optimum, mapped to a cut, is the maximum cut.
        cut_seconds, latent_seconds, bb_seconds: wall times of the three solvers.
        bb_nodes: search-tree nodes branch and bound visited or bounded.
    """

    n: int
    grid: list[int]
    edges: int
    max_cut: float
    cut_from_min_mse: float
    latent_grid_is_max_cut: bool
    bb_agrees: bool
    cut_seconds: float
    latent_seconds: float
    bb_nodes: int
    bb_seconds: float

    @property
    def bb_node_share(self) -> float:
        """Branch and bound's nodes over the ``2^(n+1) - 1`` nodes of the full search tree."""
        return self.bb_nodes / (2 ** (self.n + 1) - 1)


def time_exact_solvers(ns, edge_p: float, weighted: bool, seed: int, progress: bool = True) -> list[SolverComparison]:
    """Brute-force MAX-CUT, brute-force latent search and branch and bound on one random graph per ``n``.

    The graph on ``n`` vertices is ``random_graph(n, edge_p, weighted, seed + n)``, reduced (float32)
    onto :func:`~vqtto.hardness.squarest_grid` ``(n)``; each comparison checks that the three agree.
    """
    if progress:
        from tqdm.auto import tqdm

        ns = tqdm(ns, desc="brute force")
    out = []
    for n in ns:
        g = random_graph(n, edge_p, weighted=weighted, seed=seed + n)
        red = reduce_max_cut(g, squarest_grid(n))
        cut = brute_force_cut(g)
        lat = brute_force_latent(red)
        bb = branch_and_bound_latent(red)
        out.append(SolverComparison(
            n=n, grid=list(red.grid), edges=int(g.edges.shape[0]), max_cut=cut.best_value,
            cut_from_min_mse=float(red.cut_from_loss(lat.best_value)),
            latent_grid_is_max_cut=same_cut(float(cut_values(g, lat.best.view(1, -1))), cut.best_value),
            bb_agrees=same_cut(float(red.cut_from_loss(bb.best_value)), cut.best_value, FLOAT32_TOL),
            cut_seconds=cut.seconds, latent_seconds=lat.seconds, bb_nodes=bb.nodes, bb_seconds=bb.seconds))
    return out


def search_space_log10(k: int, h: int, w: int | None = None) -> float:
    """``log10(k^(h w))``, the number of index grids of an ``h x w`` latent with ``k`` codes."""
    w = h if w is None else w
    if k < 1 or h < 1 or w < 1:
        raise ValueError(f"k, h and w must be >= 1, got k={k!r}, h={h!r}, w={w!r}")
    return h * w * math.log10(k)


def enumeration_years_log10(k: int, h: int, w: int, rate: float = 1e9) -> float:
    """``log10`` of the years it takes to decode every index grid of an ``h x w`` latent at ``rate`` grids/s."""
    if rate <= 0:
        raise ValueError(f"rate (grids per second) must be > 0, got {rate!r}")
    return search_space_log10(k, h, w) - math.log10(rate * SECONDS_PER_YEAR)


def growth_per_position(ns, seconds, min_seconds: float = 0.01) -> float | None:
    """Least-squares growth factor of wall time per added position, ``2^slope`` of ``log2(seconds)`` on ``n``.

    Only runs of at least ``min_seconds`` count (shorter ones measure fixed overheads); None when
    fewer than two do.
    """
    pts = [(n, t) for n, t in zip(ns, seconds) if t >= min_seconds]
    if len(pts) < 2:
        return None
    n, t = np.array(pts, dtype=float).T
    return float(2 ** np.polyfit(n, np.log2(t), 1)[0])


def extrapolated_years(n: int, seconds: float, factor: float, n_target: int) -> float:
    """Years a run of ``seconds`` at ``n`` positions takes at ``n_target``, growing ``factor``-fold per position."""
    return seconds * factor ** (n_target - n) / SECONDS_PER_YEAR
