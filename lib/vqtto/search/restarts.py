"""Algorithm 2 with random restarts: the compute-matched baseline of the gradient samplers.

Algorithm 2 (:func:`~vqtto.search.straight_through`) ends in a loop after a few grids. Given a
budget of decoder-call equivalents per pair, this runs it again and again, each time from the
source's latent plus Gaussian noise (the first run without noise), until the pair's budget is
spent, and keeps the best grid of all runs, with the cost at which it was found. All pairs with
budget left run together in one batch per wave of restarts; a wave runs until its longest run
ends, and what a pair decoded past its own budget is cut off its record and not counted (a pair
searched alone would have stopped there; the trace's params say how much was discarded).
"""

from __future__ import annotations

import time

import torch

from .losses import LossFn
from .chains import best_paths, pair_seeds
from .driver import check_positive, check_start
from .straight import straight_through
from .trace import FORWARD_BACKWARD, SearchTrace

__all__ = ["restarted_straight_through"]


def restarted_straight_through(model, z_start: torch.Tensor, loss: LossFn, *, budget: float = 1000,
                               noise: float = 0.5, alpha: float = 0.1, lam: int = 100, seed=0,
                               progress: bool = False) -> SearchTrace:
    """Algorithm 2 restarted from noisy copies of ``z_start`` until ``budget`` is spent per pair.

    Args:
        model, z_start, loss: as :func:`~vqtto.search.straight_through` (``loss`` a PairLoss).
        budget: decoder-call equivalents per pair (each distinct grid costs 3), >= 3.
        noise: standard deviation of the restart noise, in units of the std of ``z_start``, >= 0.
        alpha, lam: Algorithm 2's step size and repeat limit.
        seed: an int, or one int per pair (each pair's noise comes from its own generator).

    Returns:
        :class:`SearchTrace` ``"alg2-restarts"``: per pair the best-so-far path over all runs.
    """
    check_positive("budget", budget, minimum=FORWARD_BACKWARD)
    check_positive("noise", noise, minimum=0.0)
    check_positive("alpha", alpha)
    check_positive("lam", lam, integer=True, minimum=1)
    check_start(model, z_start)
    if not hasattr(loss, "rows"):
        raise ValueError("restarted_straight_through needs a loss with .rows() (a vqtto.search.losses.PairLoss)")
    t0 = time.perf_counter()
    b = z_start.shape[0]
    gens = [torch.Generator().manual_seed(s) for s in pair_seeds(seed, b)]
    scale = float(z_start.detach().std())
    spent = torch.zeros(b, dtype=torch.float64)
    parts = [[] for _ in range(b)]
    decoded, discarded, wave = 0, 0.0, 0
    while True:
        rows = (budget - spent >= 2 * FORWARD_BACKWARD).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        eps = torch.stack([torch.randn(z_start.shape[1:], generator=gens[i]) for i in rows.tolist()])
        z = z_start[rows.to(z_start.device)] + (noise * scale if wave else 0.0) * eps.to(z_start.device)
        left = (budget - spent[rows]) // FORWARD_BACKWARD                  # grids each pair can still pay for
        tr = straight_through(model, z, loss.rows(rows.to(z_start.device)), alpha=alpha, lam=lam, max_unique=int(left.max()))
        offset = time.perf_counter() - t0 - tr.seconds
        for j, i in enumerate(rows.tolist()):
            n = min(tr.grids[j].shape[0], int(left[j]))  # a pair alone would have stopped at its budget: cut there
            parts[i].append((tr.grids[j][:n], tr.losses[j][:n], tr.costs[j][:n] + float(spent[i]), tr.times[j][:n] + offset))
            spent[i] += FORWARD_BACKWARD * n  # every distinct grid was decoded with its gradient
            decoded += n
        discarded += tr.decoder_equivalents - FORWARD_BACKWARD * sum(min(g.shape[0], int(c)) for g, c in zip(tr.grids, left))
        wave += 1
    return best_paths(parts, [False] * b, method="alg2-restarts",
                      params={"budget": budget, "noise": noise, "alpha": alpha, "lam": lam, "restarts": wave,
                              "discarded_equivalents": discarded},
                      decoded_images=decoded, decoder_equivalents=FORWARD_BACKWARD * decoded, seconds=time.perf_counter() - t0)
