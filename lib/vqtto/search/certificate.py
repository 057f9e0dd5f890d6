"""The radius-1 certificate: is a grid a 1-move local optimum? Decode all its neighbours.

A grid of h*w positions over k codes has ``h * w * (k - 1)`` single-position neighbours (25,088
for 7x7 at k=512). :func:`radius1_certificate` decodes all of them (chunked) and reports, per
grid, whether none is better (a 1-move local optimum) and how much better the best one is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import LossFn
from .driver import check_positive, pair_losses
from .first_order import apply_moves

__all__ = ["Certificate", "radius1_certificate"]


@dataclass
class Certificate:
    """Per grid: ``local_optimum`` ``(B,)`` bool, ``loss`` ``(B,)``, ``best_neighbour_loss`` ``(B,)``,
    ``improvement`` ``(B,)`` (1 - best neighbour / loss, <= 0 at a local optimum), ``better_neighbours``
    ``(B,)`` int64, ``neighbours`` per grid, and ``seconds``."""

    local_optimum: torch.Tensor
    loss: torch.Tensor
    best_neighbour_loss: torch.Tensor
    improvement: torch.Tensor
    better_neighbours: torch.Tensor
    neighbours: int
    seconds: float


@torch.no_grad()
def radius1_certificate(model, loss: LossFn, grids: torch.Tensor, *, chunk: int = 4096) -> Certificate:
    """Decode every single-position neighbour of each grid ``(B, h, w)``; pair i scored by loss row i.

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)``.
        loss: a PairLoss over the B pairs.
        grids: ``(B, h, w)`` int64, e.g. a search's ``best_indices``.
        chunk: images decoded at a time, >= 1.
    """
    import time

    check_positive("chunk", chunk, integer=True, minimum=1)
    if not hasattr(loss, "rows"):
        raise ValueError("radius1_certificate needs a loss with .rows() (a vqtto.search.losses.PairLoss)")
    t0 = time.perf_counter()
    k = model.codebook.shape[0]
    b, h, w = grids.shape
    dev = grids.device
    moves = torch.arange(h * w * k, device=dev)
    out = {name: [] for name in ("loss", "best", "better")}
    for i in range(b):
        g = grids[i:i + 1]
        rows = torch.full((1,), i, dtype=torch.long, device=dev)
        own = pair_losses(loss, model.decode(model.lookup(g)), rows, b)[0]
        keep = moves[(moves % k) != g.reshape(-1)[moves // k]]                       # (h*w*(k-1),)
        values = []
        for s in range(0, keep.numel(), chunk):
            cand = apply_moves(g, keep[None, s:s + chunk], k)[0]
            values.append(pair_losses(loss, model.decode(model.lookup(cand)), rows.expand(cand.shape[0]), b))
        values = torch.cat(values)
        out["loss"].append(own)
        out["best"].append(values.min())
        out["better"].append((values < own).sum())
    own, best = torch.stack(out["loss"]).cpu(), torch.stack(out["best"]).cpu()
    return Certificate(local_optimum=best >= own, loss=own, best_neighbour_loss=best, improvement=1 - best / own,
                       better_neighbours=torch.stack(out["better"]).cpu(), neighbours=h * w * (k - 1),
                       seconds=time.perf_counter() - t0)
