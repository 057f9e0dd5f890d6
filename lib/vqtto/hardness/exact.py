"""Exact latent search on small instances, and what exhaustive search costs as the grid grows.

Brute force enumerates all ``2^n`` labellings of a graph (as MAX-CUT), all ``2^n`` spin
configurations of a spin glass (its ground state), or all ``2^n`` index grids of either's reduction
(as a latent search that only decodes and scores); branch and bound searches the latent loss with
interval bounds through the decoder, fully connected or convolutional. :func:`verify_reduction`,
:func:`verify_spin_glass`, :func:`time_exact_solvers` and :func:`time_spin_glass_solvers` check
them against each other; :func:`search_space_log10` and
:func:`growth_per_position` say how far exhaustive search is from a real latent grid.

Shapes: assignments ``(M, n)`` int64 with values 0/1, index grids ``(h, w)`` int64.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import Graph, Reduction, cut_values, random_graph, reduce_max_cut, squarest_grid
from .spin_glass import SpinGlass, SpinGlassReduction, random_spin_glass, reduce_spin_glass

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
        from ..progress import progress_bar

        starts = progress_bar(starts, desc=f"brute force 2^{n}", leave=False)
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


def branch_and_bound_latent(red, max_nodes: int = 5_000_000) -> BranchAndBound:
    """Exact latent search by branch and bound on the *loss*, with interval bounds through the decoder.

    Works on any instance whose decoder has one-dimensional codes and ``output_bounds()`` (the fully
    connected :class:`~vqtto.hardness.CutDecoder` and the convolutional
    :class:`~vqtto.hardness.spin_glass.ConvDecoder`). Branching fixes one latent position to each of the
    ``k`` codes in turn (no order on the codes is used); a partial grid's bound is the MSE that the
    decoder's output intervals allow when each free position may take any value between the
    smallest and largest code (interval bound propagation through the layers). A subtree is cut
    when its bound is no lower than the best loss found so far. Positions are fixed in order of
    decreasing number of pixels they reach.

    Raises:
        RuntimeError: when more than ``max_nodes`` nodes would be needed.
    """
    outputs = red.decoder.output_bounds()
    target = red.target.detach().double().cpu().numpy().reshape(-1)           # (P,)
    codes = red.decoder.codebook.detach().double().cpu().numpy()[:, 0]        # (k,)
    h, w = red.grid
    n = h * w
    lo_free, hi_free = np.full(n, codes.min()), np.full(n, codes.max())
    reach = []
    for p in range(n):  # pixels that move when position p alone is free
        hi_one = lo_free.copy()
        hi_one[p] = codes.max()
        out_lo, out_hi = outputs(lo_free, hi_one)
        reach.append(int((out_hi > out_lo).sum()))
    order = np.argsort(-np.array(reach), kind="stable")
    state = {"best": math.inf, "grid": None, "nodes": 0}

    def bound(zlo, zhi):
        lo, hi = outputs(zlo, zhi)
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
    grid = torch.from_numpy(state["grid"]).view(h, w)
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
class SolverTiming:
    """What the exact latent solvers did on one instance of ``n`` positions on ``grid`` (k = 2).

    Attributes:
        n, grid, edges: latent positions, ``[h, w]``, edges of the instance's graph.
        bb_agrees: branch and bound's optimum is the instance's optimum.
        latent_seconds, bb_seconds: wall times of the brute-force latent search and of branch and bound.
        bb_nodes: search-tree nodes branch and bound visited or bounded.
    """

    n: int
    grid: list[int]
    edges: int
    bb_agrees: bool
    latent_seconds: float
    bb_nodes: int
    bb_seconds: float

    @property
    def bb_node_share(self) -> float:
        """Branch and bound's nodes over the ``2^(n+1) - 1`` nodes of the full search tree."""
        return self.bb_nodes / (2 ** (self.n + 1) - 1)


@dataclass
class SolverComparison(SolverTiming):
    """The three exact solvers on one random graph of ``n`` vertices, reduced to a ``grid`` (k = 2).

    Attributes (besides :class:`SolverTiming`'s; ``edges`` are the decoded pixels):
        max_cut: the maximum cut, by enumerating labellings.
        cut_from_min_mse: the minimum MSE over all index grids, mapped back to a cut weight.
        latent_grid_is_max_cut: the MSE-minimal grid, scored as a cut, is a maximum cut.
        cut_seconds: wall time of the enumeration of labellings.
    """

    max_cut: float
    cut_from_min_mse: float
    latent_grid_is_max_cut: bool
    cut_seconds: float


def time_exact_solvers(ns, edge_p: float, weighted: bool, seed: int, progress: bool = True) -> list[SolverComparison]:
    """Brute-force MAX-CUT, brute-force latent search and branch and bound on one random graph per ``n``.

    The graph on ``n`` vertices is ``random_graph(n, edge_p, weighted, seed + n)``, reduced (float32)
    onto :func:`~vqtto.hardness.squarest_grid` ``(n)``; each comparison checks that the three agree.
    """
    if progress:
        from ..progress import progress_bar

        ns = progress_bar(ns, desc="brute force")
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


def brute_force_energy(sg: SpinGlass, chunk: int = DEFAULT_CHUNK, keep_values: bool = False,
                       progress: bool = False) -> Exact:
    """Ground-state energy of ``sg`` by enumerating all ``2^n`` spin configurations (index 1 = spin +1)."""
    h, w = sg.grid
    value, best, values, sec = _enumerate(sg.n, sg.energies, False, chunk, keep_values, progress)
    return Exact(value, best.view(h, w), values, sec)


@dataclass
class SpinGlassCheck:
    """The convolutional reduction checked on every grid of one spin glass (:func:`verify_spin_glass`).

    Attributes:
        grid: ``[h, w]``.
        energy: every configuration's energy (``values`` kept), minimum first.
        latent: every index grid's MSE to the target (``values`` kept), minimum first.
        map_error: largest ``|energy_from_loss(MSE(X)) - E(X)|`` over all ``2^n`` grids.
        best_grid_energy: energy of the MSE-minimal grid, from the grid itself.
        is_ground_state: that energy is the ground-state energy (to :data:`EXACT_TOL`).
    """

    grid: list[int]
    energy: Exact
    latent: Exact
    map_error: float
    best_grid_energy: float
    is_ground_state: bool

    @property
    def holds(self) -> bool:
        """The affine map is exact on every grid (to :data:`EXACT_TOL`) and the MSE-minimal grid is a ground state."""
        return self.is_ground_state and self.map_error < EXACT_TOL


def verify_spin_glass(red: SpinGlassReduction) -> SpinGlassCheck:
    """Enumerate every configuration by its energy and every grid by its decoded MSE, and compare.

    Use a float64 reduction (``reduce_spin_glass(..., dtype=torch.float64)``) for an exact check.
    """
    energy = brute_force_energy(red.spin_glass, keep_values=True)
    latent = brute_force_latent(red, keep_values=True)
    errors = (red.energy_from_loss(latent.values) - energy.values).abs()
    best = float(red.spin_glass.energies(latent.best.view(1, -1)))
    return SpinGlassCheck(list(red.grid), energy, latent, float(errors.max()), best, same_cut(best, energy.best_value))


def verify_random_spin_glasses(grids, per_grid: int, seed: int) -> list[SpinGlassCheck]:
    """:func:`verify_spin_glass` on ``per_grid`` random spin glasses per grid ``[h, w]`` (float64).

    The ``i``-th spin glass overall is ``random_spin_glass((h, w), seed + 3000 + i)``.
    """
    out = []
    for h, w in grids:
        for _ in range(per_grid):
            sg = random_spin_glass((h, w), seed + 3000 + len(out))
            out.append(verify_spin_glass(reduce_spin_glass(sg, dtype=torch.float64)))
    return out


@dataclass
class SpinGlassTiming(SolverTiming):
    """The exact solvers on one random spin glass on ``grid``, reduced to the convolutional decoder.

    Attributes (besides :class:`SolverTiming`'s; ``edges`` are the couplings):
        ground_energy: the ground-state energy, by enumerating configurations.
        energy_from_min_mse: the minimum MSE over all index grids, mapped back to an energy.
        latent_grid_is_ground_state: the MSE-minimal grid is a ground state (its energy from the grid).
        energy_seconds: wall time of the enumeration of configurations.
    """

    ground_energy: float
    energy_from_min_mse: float
    latent_grid_is_ground_state: bool
    energy_seconds: float


def time_spin_glass_solvers(grids, seed: int, progress: bool = True) -> list[SpinGlassTiming]:
    """Brute-force ground state, brute-force latent search and branch and bound, one spin glass per grid.

    The spin glass on ``[h, w]`` is ``random_spin_glass((h, w), seed + h * w)``, reduced in float32
    (as a latent search would run); each row checks, from the grids themselves, that the three agree.
    """
    if progress:
        from ..progress import progress_bar

        grids = progress_bar(grids, desc="brute force")
    out = []
    for h, w in grids:
        sg = random_spin_glass((h, w), seed + h * w)
        red = reduce_spin_glass(sg)
        ground = brute_force_energy(sg)
        lat = brute_force_latent(red)
        bb = branch_and_bound_latent(red)
        grid_energy = sg.energies(torch.stack([lat.best, bb.best]))
        out.append(SpinGlassTiming(
            n=sg.n, grid=[h, w], edges=sg.n_edges, ground_energy=ground.best_value,
            energy_from_min_mse=float(red.energy_from_loss(lat.best_value)),
            latent_grid_is_ground_state=same_cut(float(grid_energy[0]), ground.best_value),
            bb_agrees=same_cut(float(grid_energy[1]), ground.best_value),
            energy_seconds=ground.seconds, latent_seconds=lat.seconds, bb_nodes=bb.nodes, bb_seconds=bb.seconds))
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
