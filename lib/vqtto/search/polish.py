"""Gradient-screened polish: greedy single moves, truly scored, to a certified screened optimum.

From given grids, each round takes the loss gradient at the current codes (3 decoder-call
equivalents), screens m single-position moves in the first-order table
(:mod:`~vqtto.search.first_order`): by default each position's best code at the m positions of
lowest predicted change, so the candidates are spread over m positions, decodes all m (m equivalents) and takes the truly best
one if it lowers the loss. A pair that stops ``"stalled"`` is certified: none of the m screened
neighbours of its final grid is better (a 1-move local optimum among the screened candidates;
:mod:`~vqtto.search.certificate` checks all neighbours).
"""

from __future__ import annotations

import math
import time

import torch

from .losses import LossFn
from .chains import movable_mask
from .driver import MOVED, STALLED, Evaluator, check_positive, check_start, drive
from .first_order import apply_moves, best_moves, best_per_position, first_order_table
from .trace import SearchTrace

__all__ = ["SCREENS", "screened_polish"]

#: How the polish picks its m candidates from the first-order table.
SCREENS = ("per-position", "global")


class _Polish:
    def __init__(self, model, ev: Evaluator, m: int, movable: torch.Tensor, screen: str) -> None:
        self.cb, self.ev, self.m, self.movable = model.codebook.detach(), ev, m, movable
        self.pick = best_per_position if screen == "per-position" else best_moves

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        d = first_order_table(self.cb, grads, idx)
        d.scatter_(2, idx.flatten(1)[..., None], math.inf).masked_fill_(~self.movable[rows][..., None], math.inf)
        moves = self.pick(d, self.m)
        finite = d.flatten(1).gather(1, moves).isfinite()
        moves = torch.where(finite, moves, moves[:, :1])  # a frozen position's slot repeats the first move
        cands = apply_moves(idx, moves, self.cb.shape[0])
        cl = self.ev.losses(cands, rows, base=idx)
        best_l, best = cl.min(1)
        better = best_l < values
        new = cands.gather(1, best[:, None, None, None].expand(-1, 1, *idx.shape[1:]))[:, 0]
        status = torch.where(better, MOVED, STALLED).to(torch.long)
        return torch.where(better[:, None, None], new, idx), torch.ones_like(status), status


def screened_polish(model, z_start: torch.Tensor, loss: LossFn, *, m: int = 64, max_rounds: int = 100,
                    start: torch.Tensor | None = None, movable: torch.Tensor | None = None,
                    screen: str = "per-position", progress: bool = False) -> SearchTrace:
    """Greedy descent by the truly best of the m gradient-screened single moves, until none helps.

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)``.
        z_start: ``(B, D, h, w)``; the search starts at ``nearest(z_start)`` or at ``start``.
        loss: images -> ``(B,)``.
        m: moves decoded per pair and round, >= 1.
        max_rounds: most rounds per pair, >= 1.
        start: ``(B, h, w)`` int64 start grids (e.g. another search's best grids).
        movable: ``(B, h, w)`` or ``(h, w)`` bool, the positions it may change.
        screen: ``"per-position"`` (each position's best code, the m most promising positions:
            :func:`~vqtto.search.first_order.best_per_position`) or ``"global"`` (the m moves of lowest
            predicted change anywhere, which extreme codes at a few high-gradient positions dominate).

    Returns:
        :class:`SearchTrace` ``"polish"``; ``"stalled"`` pairs are certified optima among their
        screened neighbours, ``"budget"`` pairs ran out of rounds.
    """
    check_positive("m", m, integer=True, minimum=1)
    check_positive("max_rounds", max_rounds, integer=True, minimum=1)
    check_start(model, z_start)
    if screen not in SCREENS:
        raise ValueError(f"screen must be one of {list(SCREENS)}, got {screen!r}")
    t0 = time.perf_counter()
    b, _, h, w = z_start.shape
    ev = Evaluator(model, loss, b)
    proposer = _Polish(model, ev, m, movable_mask(movable, b, h, w, z_start.device), screen)
    rec = drive(model, z_start, proposer, ev.loss_and_grad, max_unique=max_rounds + 1, max_rounds=max_rounds,
                on_revisit="skip", progress=progress, desc="polish", start=start, clock=ev.clock)
    return rec.trace(method="polish", params={"m": m, "max_rounds": max_rounds, "screen": screen}, decoded_images=ev.decoded,
                     seconds=time.perf_counter() - t0, decoder_equivalents=ev.equivalents)
