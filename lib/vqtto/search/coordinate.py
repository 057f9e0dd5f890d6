"""An exact coordinate reference: every single move decoded, then the product of each position's best few.

For each pair's grid ``(h, w)`` and its free positions (a ``movable`` mask, e.g. a sub-problem's,
see :mod:`~vqtto.search.subproblems`), :func:`exact_coordinate` decodes every single-position
change (``m * (k - 1)`` grids for m free positions), keeps at each position the ``top`` codes of
lowest loss (its current code counts as one of them), and decodes every combination of those
(``top ** m`` grids). With ``top = k`` this is the whole sub-problem; with a small ``top`` it is a
cheap reference that is exact whenever the best grid's codes are each among their position's
best single moves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .losses import LossFn
from .chains import movable_mask
from .driver import check_positive, pair_losses
from .subproblems import MAX_GRIDS
from .trace import FORWARD

__all__ = ["CoordinateResult", "exact_coordinate"]


@dataclass
class CoordinateResult:
    """What :func:`exact_coordinate` found.

    Attributes:
        best_grids: ``(B, h, w)`` int64, the best grid decoded per pair.
        best_losses: ``(B,)`` its loss.
        single_losses: ``(B, h*w, k)`` the loss of every single move (+inf at frozen positions; the
            current code's entry is the grid's own loss).
        equivalents: ``(B,)`` float64 decoder-call equivalents per pair (1 per image decoded).
        seconds: wall time.
    """

    best_grids: torch.Tensor
    best_losses: torch.Tensor
    single_losses: torch.Tensor
    equivalents: torch.Tensor
    seconds: float


def _decode(model, loss, grids: torch.Tensor, row: int, b: int, chunk: int) -> torch.Tensor:
    out = []
    for s in range(0, grids.shape[0], chunk):
        g = grids[s:s + chunk]
        rows = torch.full((g.shape[0],), row, dtype=torch.long, device=g.device)
        out.append(pair_losses(loss, model.decode(model.lookup(g)), rows, b))
    return torch.cat(out)


@torch.no_grad()
def exact_coordinate(model, loss: LossFn, grids: torch.Tensor, *, top: int = 3, movable: torch.Tensor | None = None,
                     chunk: int = 4096, max_grids: int = MAX_GRIDS) -> CoordinateResult:
    """All single moves of each free position decoded exactly, then every product of the positions' best ``top``.

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)``.
        loss: images -> ``(B,)``, pair i with grid i (a :class:`~vqtto.search.losses.PairLoss`).
        grids: ``(B, h, w)`` int64 the grids to start from.
        top: codes kept per position for the product, 1 <= top <= k.
        movable: ``(B, h, w)`` or ``(h, w)`` bool, the free positions (None: all, which only fits
            ``max_grids`` for tiny grids or ``top = 1``).
        chunk: images decoded at a time, >= 1.
        max_grids: refuse before any work when ``top ** m`` exceeds this for some pair.

    Returns:
        :class:`CoordinateResult`.
    """
    check_positive("top", top, integer=True, minimum=1)
    check_positive("chunk", chunk, integer=True, minimum=1)
    if not hasattr(loss, "rows"):
        raise ValueError("exact_coordinate needs a loss with .rows() (a vqtto.search.losses.PairLoss)")
    if not isinstance(grids, torch.Tensor) or grids.dim() != 3:
        raise ValueError(f"grids must be a (B, h, w) int64 tensor, got {getattr(grids, 'shape', type(grids))}")
    k = model.codebook.shape[0]
    if top > k:
        raise ValueError(f"top must be <= k={k}, got {top!r}")
    b, h, w = grids.shape
    free = movable_mask(movable, b, h, w, grids.device)
    most = int(free.sum(1).max())
    if top ** most > max_grids:
        raise ValueError(f"top**m = {top}**{most} = {top ** most:,} products exceed max_grids={max_grids:,}: "
                         "lower top or free fewer positions")
    t0 = time.perf_counter()
    dev = grids.device
    single = torch.full((b, h * w, k), float("inf"), device=dev)
    best_g, best_l = [], []
    spent = torch.zeros(b, dtype=torch.float64)
    for i in range(b):
        flat = grids[i].reshape(-1)
        pos = free[i].nonzero().squeeze(1)
        m = pos.numel()
        own = _decode(model, loss, flat[None].view(1, h, w), i, b, chunk)[0]
        cand = flat.repeat(m * k, 1)
        cand[torch.arange(m * k, device=dev), pos.repeat_interleave(k)] = torch.arange(k, device=dev).repeat(m)
        other = cand[torch.arange(m * k, device=dev), pos.repeat_interleave(k)] != flat[pos].repeat_interleave(k)
        vals = torch.full((m * k,), float(own), device=dev)
        vals[other] = _decode(model, loss, cand[other].view(-1, h, w), i, b, chunk)
        single[i, pos] = vals.view(m, k)
        codes = vals.view(m, k).topk(top, dim=1, largest=False).indices                    # (m, top)
        n = top ** m
        digits = torch.arange(n, device=dev)[:, None] // (top ** torch.arange(m, device=dev))[None] % top
        prod = flat.repeat(n, 1)
        prod[:, pos] = codes.gather(1, digits.t()).t()
        pl = _decode(model, loss, prod.view(-1, h, w), i, b, chunk)
        j = int(pl.argmin())
        best_g.append(prod[j].view(h, w))
        best_l.append(pl[j])
        spent[i] = FORWARD * (1 + int(other.sum()) + n)
    return CoordinateResult(best_grids=torch.stack(best_g).cpu(), best_losses=torch.stack(best_l).cpu(),
                            single_losses=single.cpu(), equivalents=spent, seconds=time.perf_counter() - t0)
