"""Latent searches run on reduced instances, each scored exactly against the instance's known optimum.

A reduced instance (a MAX-CUT graph through :func:`vqtto.hardness.reduce_max_cut`, or a planar spin
glass through :func:`vqtto.hardness.spin_glass.reduce_spin_glass`) is a latent-search problem whose optimum
is known by brute force: the maximum cut, or the ground state. :func:`run_on_instances` runs the
book's searches on such instances from shared random starts, next to two references (the
classical 1-flip local search, which reads the graph or the couplings, and the best of uniformly
random grids); every grid a run visited is scored by recomputing its objective (cut weight, or
minus the energy) in float64 from the grid itself, never from a float32 loss.
:func:`summarise_runs` turns the scores of one method into the numbers the chapter reports, and
:func:`first_order_check` measures how often the straight-through gradient mispredicts a flip.

Methods are named by the book's ids (:data:`vqtto.book.plots.METHODS`): ``alg2`` and ``alg3`` (one run
per step size), ``greedy``, ``local-search`` and ``uniform``; :func:`run_name` adds the step size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import stats
from .exact import EXACT_TOL, brute_force_cut, brute_force_energy
from . import LatentSearchInstance, Reduction, adjacency, cut_values, random_graph, reduce_max_cut
from .spin_glass import SpinGlassReduction, coupling_matrix, random_spin_glass, reduce_spin_glass

STRAIGHT_THROUGH = ("alg2", "alg3")


@dataclass
class SearchInstance:
    """A latent-search instance whose optimum is known, with the objective it encodes.

    Attributes:
        reduction: the latent-search instance (:class:`~vqtto.hardness.LatentSearchInstance`).
        values: index grids ``(B, h, w)`` -> ``(B,)`` float64 objective, higher is better (the cut
            weight, or minus the energy), computed from the grids.
        best, worst: the largest and the smallest value over all grids.
        coupling, field: ``(n, n)`` and ``(n,)`` float64 with ``value = const + s^T coupling s / 2 +
            field^T s`` for spins ``s = 2 X - 1`` (what 1-flip local search reads).
    """

    reduction: LatentSearchInstance
    values: Callable[[torch.Tensor], torch.Tensor]
    best: float
    worst: float
    coupling: torch.Tensor
    field: torch.Tensor


def cut_instance(red: Reduction) -> SearchInstance:
    """A reduced MAX-CUT instance, its maximum cut by brute force; the smallest cut is 0."""
    g = red.graph
    return SearchInstance(red, lambda grids: cut_values(g, grids), brute_force_cut(g).best_value, 0.0,
                          -adjacency(g) / 2, torch.zeros(g.n, dtype=torch.float64))


def spin_glass_instance(red: SpinGlassReduction) -> SearchInstance:
    """A reduced spin glass; its values are minus the energies, the extremes by brute force."""
    sg = red.spin_glass
    energies = brute_force_energy(sg, keep_values=True).values
    return SearchInstance(red, lambda grids: -sg.energies(grids), -float(energies.min()), -float(energies.max()),
                          coupling_matrix(sg), sg.field.flatten())


def reduced_instances(n_instances: int, grid, edge_p: float, weighted: bool, seed: int) -> list[SearchInstance]:
    """``n_instances`` random graphs G(h w, ``edge_p``) reduced onto ``grid`` ``[h, w]`` (float32).

    Instance ``i`` is drawn with seed ``seed + 1000 + i``.
    """
    h, w = grid
    return [cut_instance(reduce_max_cut(random_graph(h * w, edge_p, weighted=weighted, seed=seed + 1000 + i), (h, w)))
            for i in range(n_instances)]


def spin_glass_instances(n_instances: int, grid, seed: int) -> list[SearchInstance]:
    """``n_instances`` random +-J spin glasses on ``grid`` ``[h, w]``, reduced to the convolutional decoder
    (float32); instance ``i`` is drawn with seed ``seed + 2000 + i``."""
    return [spin_glass_instance(reduce_spin_glass(random_spin_glass(tuple(grid), seed + 2000 + i)))
            for i in range(n_instances)]


@dataclass
class CutScores:
    """Exact scores of ``B`` runs on one instance.

    Attributes:
        value: ``(B,)`` float64 objective of each run's best grid (cut weight, or minus the energy).
        ratio: ``(B,)`` ``(value - worst) / (best - worst)``: 1 at the optimum, 0 at the worst grid
            (for MAX-CUT, whose smallest cut is 0, the cut over the maximum cut).
        solved: ``(B,)`` bool, the value is optimal (to :data:`vqtto.hardness.exact.EXACT_TOL`).
    """

    value: torch.Tensor
    ratio: torch.Tensor
    solved: torch.Tensor


def score_cuts(values: torch.Tensor, best: float, worst: float = 0.0) -> CutScores:
    """Objective values ``(B,)`` float64 -> :class:`CutScores` against the optimum ``best`` and the
    worst value ``worst`` (0, the smallest cut, by default)."""
    return CutScores(values, (values - worst) / (best - worst), values >= best - EXACT_TOL * max(1.0, abs(best)))


def score_grids(case: SearchInstance, indices: torch.Tensor) -> CutScores:
    """Score index grids ``(B, h, w)`` by the objective they encode, computed in float64 from the grids."""
    return score_cuts(case.values(indices), case.best, case.worst)


def best_visited(case: SearchInstance, trace, start_indices: torch.Tensor) -> CutScores:
    """Score the best grid each run of ``trace`` visited, its start grid included.

    Args:
        trace: a :class:`vqtto.search.SearchTrace` of ``B`` runs on ``case.reduction``.
        start_indices: ``(B, h, w)`` the ``nearest(z_start)`` every run began from.
    """
    best = []
    for i, grids in enumerate(trace.grids):
        visited = torch.cat([start_indices[i:i + 1].cpu(), grids[1:].cpu()])
        best.append(case.values(visited).max())
    return score_cuts(torch.stack(best), case.best, case.worst)


def one_flip_local_search(coupling: torch.Tensor, field: torch.Tensor, labels: torch.Tensor,
                 max_flips: int | None = None) -> torch.Tensor:
    """Steepest-ascent 1-flip local search on ``value = s^T coupling s / 2 + field^T s``, ``s = 2 x - 1``:
    flip the position that gains most, until none gains. Flipping ``i`` changes the value by
    ``-2 s_i ((coupling s)_i + field_i)``.

    The classical reference point; it reads the instance (the graph, or the couplings and fields),
    so it is not a latent search. For MAX-CUT every local optimum cuts at least half the weight.

    Args:
        labels: ``(B, n)`` or ``(B, h, w)`` 0/1 start labellings.
        max_flips: most flips per row (None: ``n * n``).

    Returns:
        local optima with the shape of ``labels``, int64.
    """
    shape, n = labels.shape, coupling.shape[0]
    x = labels.reshape(shape[0], -1).clone().long()
    for _ in range(max_flips if max_flips is not None else n * n):
        s = (2 * x - 1).double()
        gain = -2 * s * (s @ coupling + field)
        best, pos = gain.max(1)
        move = best > 1e-12
        if not bool(move.any()):
            break
        rows = move.nonzero().squeeze(1)
        x[rows, pos[rows]] = 1 - x[rows, pos[rows]]
    return x.view(shape)


def run_name(method: str, alpha: float | None = None) -> str:
    """The name of one setting of a method: its id, with the step size for a straight-through search."""
    return method if alpha is None else f"{method} α={alpha:g}"


@dataclass
class CutRuns:
    """Every run of one setting of one method, instance by instance.

    Attributes:
        method: the method's id (``alg2``, ``alg3``, ``greedy``, ``local-search``, ``uniform``).
        alpha: the step size of a straight-through search, else None.
        per_instance: one :class:`CutScores` per instance, ``starts`` runs each.
        decoded_images: images decoded by all runs together; None for a method that reads the graph.
    """

    method: str
    alpha: float | None = None
    per_instance: list[CutScores] = field(default_factory=list)
    decoded_images: float | None = 0.0

    def ratios(self) -> torch.Tensor:
        """``(runs,)`` every run's ratio (cut over maximum cut, for MAX-CUT), instance by instance."""
        return torch.cat([s.ratio for s in self.per_instance])

    def solved(self) -> torch.Tensor:
        """``(runs,)`` bool, every run's solved-or-not, instance by instance."""
        return torch.cat([s.solved for s in self.per_instance])


def run_on_instances(instances: list[SearchInstance], starts: int, alphas, lam: int, random_grids: int, seed: int,
                     device, progress: bool = True) -> dict[str, CutRuns]:
    """Every search on every instance from the same ``starts`` random latents.

    Per instance ``c`` a generator seeded ``seed + c`` draws the start latents ``(starts, 1, h, w)``
    uniform between the two codes (so each start grid is a uniformly random labelling), then the
    ``starts * random_grids`` grids of the random reference. The searches: Algorithm 2 and 3
    (:func:`vqtto.search.straight_through`) at every step size in ``alphas`` with repeat limit
    ``lam``, and the greedy search (:func:`vqtto.search.greedy_coordinate`, ``min(4, h w)``
    positions, one candidate each); the references: 1-flip local search from the start grids and
    the best of ``random_grids`` uniformly random grids per run.

    Returns:
        run name (:func:`run_name`) -> :class:`CutRuns`, in the order above.
    """
    from .. import search

    runs: dict[str, CutRuns] = {}

    def keep(method: str, alpha: float | None, scores: CutScores, decoded: float | None) -> None:
        entry = runs.setdefault(run_name(method, alpha), CutRuns(method, alpha))
        entry.per_instance.append(scores)
        entry.decoded_images = None if decoded is None else entry.decoded_images + decoded

    cases = instances
    if progress:
        from ..progress import progress_bar

        cases = progress_bar(instances, desc="instances")
    for c, case in enumerate(cases):
        red = case.reduction
        gen = torch.Generator().manual_seed(seed + c)
        h, w = red.grid
        lo, hi = float(red.decoder.codebook.min()), float(red.decoder.codebook.max())
        z = (lo + (hi - lo) * torch.rand(starts, 1, h, w, generator=gen)).to(device)
        dec = red.decoder.to(device)
        loss = search.mse_to(red.targets(starts).to(device))
        start_idx = dec.nearest(z)
        for mask, method in (("all", "alg2"), ("single", "alg3")):
            for a in alphas:
                tr = search.straight_through(dec, z, loss, alpha=a, lam=lam, mask=mask)
                keep(method, a, best_visited(case, tr, start_idx), tr.decoded_images)
        tr = search.greedy_coordinate(dec, z, loss, positions=min(4, h * w), candidates=1)
        keep("greedy", None, best_visited(case, tr, start_idx), tr.decoded_images)
        local = one_flip_local_search(case.coupling, case.field, start_idx.cpu())
        keep("local-search", None, score_grids(case, local), None)
        rnd = torch.randint(2, (starts * random_grids, h, w), generator=gen)
        values = case.values(rnd).view(starts, random_grids).max(1).values
        keep("uniform", None, score_cuts(values, case.best, case.worst), starts * random_grids)
    return runs


@dataclass
class CutSearchScore:
    """How one setting of one method did over all instances and starts (:func:`summarise_runs`).

    Attributes:
        method: the method's id; alpha: its step size (straight-through searches) or None.
        runs: instances times starts.
        fraction_exact: share of runs whose best grid is optimal (a maximum cut, a ground state).
        instances_solved: share of instances that some start solved.
        mean_ratio, worst_ratio: mean and smallest ratio (:class:`CutScores`) over all runs.
        decoded_per_run: mean images decoded per run; None for local search (it reads the graph).
    """

    method: str
    alpha: float | None
    runs: int
    fraction_exact: float
    instances_solved: float
    mean_ratio: float
    worst_ratio: float
    decoded_per_run: float | None


def summarise_runs(runs: CutRuns) -> CutSearchScore:
    """The numbers of :class:`CutSearchScore` from every run of one method."""
    solved, ratio = runs.solved(), runs.ratios()
    some_start = torch.tensor([bool(s.solved.any()) for s in runs.per_instance])
    decoded = None if runs.decoded_images is None else runs.decoded_images / solved.numel()
    return CutSearchScore(method=runs.method, alpha=runs.alpha, runs=int(solved.numel()),
                       fraction_exact=stats.share(solved), instances_solved=stats.share(some_start),
                       mean_ratio=float(ratio.double().mean()), worst_ratio=float(ratio.min()),
                       decoded_per_run=decoded)


def best_setting(scores: dict[str, CutSearchScore], methods=STRAIGHT_THROUGH) -> str:
    """The run name with the highest mean ratio among the settings of ``methods`` (the first on ties).

    Raises:
        ValueError: when ``scores`` holds no setting of ``methods``.
    """
    names = [name for name, s in scores.items() if s.method in methods]
    if not names:
        raise ValueError(f"no run of {list(methods)} among {list(scores)}")
    return max(names, key=lambda name: scores[name].mean_ratio)


@dataclass
class FirstOrderCheck:
    """How well the straight-through gradient predicts the effect of flipping one position.

    Attributes:
        predicted_improving: share of single flips the first-order term says lower the loss.
        truly_improving: share of single flips that really do.
        wrong_among_predicted: share of the predicted-improving flips that raise or keep the loss.
    """

    predicted_improving: float
    truly_improving: float
    wrong_among_predicted: float


def first_order_check(red: Reduction, indices: torch.Tensor) -> FirstOrderCheck:
    """Compare, for each grid ``(B, h, w)`` and position ``i``, ``dL/dz_i * (c_new - c_old)`` with the
    true change of the loss when ``X_i`` flips (in float64)."""
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
    return FirstOrderCheck(predicted_improving=float(pred_imp.double().mean()),
                           truly_improving=float(true_imp.double().mean()),
                           wrong_among_predicted=float((pred_imp & ~true_imp).sum() / pred_imp.sum().clamp(min=1)))
