"""Sub-problems with a known optimum: all positions but m fixed, every assignment of the m enumerated.

For each pair, all positions of a base grid (the target's own code) are fixed except m free
ones; the ``k ** m`` grids that differ only there are decoded in chunks and scored, which gives
the exact optimum of the sub-problem (:func:`enumerate_subproblem`). A search restricted to the
same free positions (its ``movable`` mask, from :func:`free_mask`) can then be judged by how
often it finds that optimum and by its gap when it does not (:func:`optimum_rate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import LossFn
from .driver import check_positive, pair_losses

__all__ = ["MAX_GRIDS", "Subproblem", "enumerate_subproblem", "free_mask", "free_positions", "optimum_rate"]

#: The most grids one pair's sub-problem may hold (``k ** m``): 262,144 = k=512 with m=2, or
#: k=40 with m=3 (64,000). Decoding is chunked, so memory holds ``chunk`` images at a time.
MAX_GRIDS = 262_144


@dataclass
class Subproblem:
    """The exact optimum of each pair's sub-problem.

    Attributes:
        positions: ``(B, m)`` int64 the free positions (row-major indices into ``h * w``).
        best_grids: ``(B, h, w)`` int64 the optimal grids.
        best_losses: ``(B,)`` their losses.
        second_losses: ``(B,)`` the second-best losses (how unique the optimum is).
        n_grids: grids enumerated per pair (``k ** m``).
        seconds: wall time.
    """

    positions: torch.Tensor
    best_grids: torch.Tensor
    best_losses: torch.Tensor
    second_losses: torch.Tensor
    n_grids: int
    seconds: float


def free_positions(n_pairs: int, h: int, w: int, m: int, seed: int = 0) -> torch.Tensor:
    """``(B, m)`` int64: m distinct random positions per pair (seeded)."""
    check_positive("m", m, integer=True, minimum=1)
    if m > h * w:
        raise ValueError(f"m must be <= h*w = {h * w}, got {m!r}")
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(h * w, generator=gen)[:m] for _ in range(n_pairs)])


def free_mask(positions: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, h, w)`` bool, True at the free ``positions`` ``(B, m)``."""
    mask = torch.zeros(positions.shape[0], h * w, dtype=torch.bool)
    return mask.scatter_(1, positions.cpu(), True).view(-1, h, w)


@torch.no_grad()
def enumerate_subproblem(model, loss: LossFn, base: torch.Tensor, positions: torch.Tensor, *, chunk: int = 4096,
                         max_grids: int = MAX_GRIDS) -> Subproblem:
    """Decode every assignment of the free ``positions`` of each ``base`` grid; the exact optimum.

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)``.
        loss: images ``(B, C, H, W)`` -> ``(B,)``, pair i with base grid i (a PairLoss).
        base: ``(B, h, w)`` int64, e.g. the target's own code.
        positions: ``(B, m)`` int64 free positions per pair.
        chunk: images decoded at a time, >= 1.
        max_grids: refuse when ``k ** m`` exceeds this (default :data:`MAX_GRIDS`).

    Raises:
        ValueError: before any decoding, when ``k ** m > max_grids`` (naming k, m and the limit).
    """
    import time

    check_positive("chunk", chunk, integer=True, minimum=1)
    k = model.codebook.shape[0]
    b, h, w = base.shape
    if positions.dim() != 2 or positions.shape[0] != b:
        raise ValueError(f"positions must be (B, m) with B={b}, got {tuple(positions.shape)}")
    m = positions.shape[1]
    n_grids = k ** m
    if n_grids > max_grids:
        raise ValueError(f"the sub-problem holds k**m = {k}**{m} = {n_grids:,} grids per pair, more than "
                         f"max_grids={max_grids:,}: lower m (free positions) or k, or raise max_grids")
    if not hasattr(loss, "rows"):
        raise ValueError("enumerate_subproblem needs a loss with .rows() (a vqtto.search.losses.PairLoss)")
    t0 = time.perf_counter()
    dev = base.device
    digits = torch.arange(n_grids, device=dev)[:, None] // (k ** torch.arange(m, device=dev))[None] % k   # (N, m)
    best_l, second_l, best_g = [], [], []
    for i in range(b):
        flat = base[i].reshape(-1)
        pos = positions[i].to(dev)
        losses = []
        for s in range(0, n_grids, chunk):
            grids = flat.repeat(min(chunk, n_grids - s), 1)
            grids[:, pos] = digits[s:s + chunk]
            rows = torch.full((grids.shape[0],), i, dtype=torch.long, device=dev)
            losses.append(pair_losses(loss, model.decode(model.lookup(grids.view(-1, h, w))), rows, b))
        losses = torch.cat(losses)
        two = losses.topk(min(2, n_grids), largest=False)
        g = flat.clone()
        g[pos] = digits[two.indices[0]]
        best_g.append(g.view(h, w))
        best_l.append(two.values[0])
        second_l.append(two.values[-1])
    return Subproblem(positions=positions.cpu(), best_grids=torch.stack(best_g).cpu(), best_losses=torch.stack(best_l).cpu(),
                      second_losses=torch.stack(second_l).cpu(), n_grids=n_grids, seconds=time.perf_counter() - t0)


def optimum_rate(found: torch.Tensor, exact: Subproblem, rtol: float = 1e-6) -> dict:
    """How a search's best losses ``(B,)`` compare with the exact optima of the sub-problems.

    Returns ``{"found": share of pairs at the optimum (within rtol), "median gap": median relative
    gap (found / optimum - 1) of the pairs that missed it (0 if none), "gaps": (B,) all gaps}``.
    """
    from .. import stats

    gaps = found.cpu().double() / exact.best_losses.double() - 1
    hit = gaps <= rtol
    missed = gaps[~hit]
    return {"found": stats.share(hit), "median gap": stats.median(missed) if missed.numel() else 0.0, "gaps": gaps}
