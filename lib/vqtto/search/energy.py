"""The prior term of a search's energy: ``E(x) = L(decode(x)) + lambda * NLL(x) / (h * w)``.

The paper (section 5.3) says the search must stay where the prior puts its mass but never puts
the prior into the search. :class:`GridPrior` does: a PixelCNN's negative log-likelihood of an
index grid, in nats per position, times a weight ``lambda >= 0`` (the unit of ``lambda`` is then
"loss per nat per position"), added to the task loss of every grid a sampler scores.

The samplers also read their proposals off the first-order table (:mod:`~vqtto.search.first_order`);
:meth:`GridPrior.penalty_table` gives the prior's part of that table from one PixelCNN pass:
moving position ``p`` to code ``j`` changes the penalty by about
``lambda / (h w) * (log p(x_p | x_<p) - log p(j | x_<p))``. It ignores that the move also changes
the conditionals of the positions after ``p``; the exact energy of every grid actually proposed
is scored in full, so Metropolis-Hastings stays exact.

A search asks three things of its current grids each round: their energy, their first-order
table and, for the candidates it decodes, the prior's rows above each move. :class:`GridPrior`
answers all three from one PixelCNN pass per grid
(:meth:`~vqtto.models.pixelcnn.GatedPixelCNN.table_and_cache`), kept for the last
:data:`MEMO_GRIDS` grids it saw; before, each was a pass of its own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import torch

__all__ = ["GridPrior", "MEMO_GRIDS"]

#: Grids whose PixelCNN pass a :class:`GridPrior` keeps: every code's log-probability at every position
#: ``(h*w, k)`` and the vertical stack's inputs (about 120 kB a grid for the quick k=512 prior on 7x7
#: grids). A batch of more grids than this is scored by a pass of its own and not kept.
MEMO_GRIDS = 1024


class _KeptPass(NamedTuple):
    """One grid's PixelCNN pass as :class:`GridPrior` keeps it."""

    table: torch.Tensor      # (h*w, k) log p(z_i = j | z_<i)
    v_inputs: list           # per gated layer, the vertical stack's input (C, h, w)
    row_lp: torch.Tensor     # (h,) the grid's log-probability of each row


class GridPrior:
    """``lambda`` times a PixelCNN's NLL per position, for grids of one VQ-VAE.

    Args:
        prior: a :class:`~vqtto.models.pixelcnn.GatedPixelCNN` (unconditional) over the model's codes.
        weight: ``lambda`` >= 0 (0: the term is there but weighs nothing).
        k: the searched model's codebook size; must be the prior's.
        grid: ``(h, w)`` of the searched model's index grids; must be the prior's.

    Raises:
        ValueError: naming the mismatch, for a prior of another k or grid size, a class-conditional
            prior, or a weight that is negative or not finite.
    """

    def __init__(self, prior, weight: float, k: int, grid: tuple[int, int]) -> None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"lambda (prior weight) must be a finite number >= 0, got {weight!r}")
        cfg = getattr(prior, "cfg", None)
        if cfg is None or not hasattr(prior, "log_probs_all"):
            raise ValueError(f"prior must be a vqtto.models.pixelcnn.GatedPixelCNN, got {type(prior).__name__}")
        if cfg.k != k:
            raise ValueError(f"prior was trained for k={cfg.k} codes but the searched model has k={k}")
        if (cfg.height, cfg.width) != tuple(grid):
            raise ValueError(f"prior was trained on {cfg.height}x{cfg.width} grids but the searched model's grids are "
                             f"{grid[0]}x{grid[1]}")
        if cfg.n_classes:
            raise ValueError("prior is class-conditional; a search's energy needs an unconditional prior")
        self.prior, self.weight, self.positions = prior, float(weight), grid[0] * grid[1]
        self._memo: OrderedDict = OrderedDict()  # grid bytes -> _KeptPass

    def _passes(self, idx: torch.Tensor) -> list[_KeptPass] | None:
        """The kept pass of each grid of ``idx`` ``(n, h, w)`` (one pass over those not kept yet), or None
        when ``n`` exceeds :data:`MEMO_GRIDS` (the caller then makes its own pass)."""
        if idx.shape[0] > MEMO_GRIDS:
            return None
        keys = [row.tobytes() for row in idx.detach().flatten(1).cpu().numpy()]
        new = list(dict.fromkeys(key for key in keys if key not in self._memo))
        if new:
            first = {key: i for i, key in reversed(list(enumerate(keys)))}
            rows = idx[torch.tensor([first[key] for key in new], device=idx.device)].to(self.prior.embed.device)
            with torch.no_grad():
                table, cache = self.prior.table_and_cache(rows)
            for j, key in enumerate(new):
                self._memo[key] = _KeptPass(table[j].clone(), [v[j].clone() for v in cache.v_inputs], cache.row_lp[j].clone())
        for key in keys:
            self._memo.move_to_end(key)
        while len(self._memo) > MEMO_GRIDS:
            self._memo.popitem(last=False)
        return [self._memo[key] for key in keys]

    def nll(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` int64 -> ``(n,)`` negative log-likelihood in nats per position."""
        with torch.no_grad():
            return -self.prior.log_prob(idx.to(self.prior.embed.device)).to(idx.device) / self.positions

    def penalty(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` int64 -> ``(n,)`` the energy's prior term, ``lambda * nll``."""
        if self.weight == 0:
            return torch.zeros(idx.shape[0], device=idx.device)
        kept = self._passes(idx)
        if kept is None:
            return self.weight * self.nll(idx)
        row_lp = torch.stack([entry.row_lp for entry in kept])
        return (-self.weight / self.positions) * row_lp.sum(1).to(idx.device)

    def penalty_from(self, cands: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Candidates ``(n, M, h, w)`` int64, each a change of its base grid ``base[i]`` ``(n, h, w)`` ->
        ``(n * M,)`` their :meth:`penalty`, the same numbers up to rounding: each candidate's rows above
        its first change are taken from one pass over the bases
        (:meth:`~vqtto.models.pixelcnn.GatedPixelCNN.log_prob_from`; the bases' pass is the one kept for
        :meth:`penalty`), so a move in row ``r`` costs ``(h - r) / h`` of a PixelCNN pass."""
        n, m = cands.shape[:2]
        if self.weight == 0:
            return torch.zeros(n * m, device=cands.device)
        from ..models.pixelcnn import RowCache

        dev = self.prior.embed.device
        kept = self._passes(base)
        with torch.no_grad():
            if kept is None:
                cache = self.prior.row_cache(base.to(dev))
            else:
                cache = RowCache(base.to(dev), [torch.stack(vs) for vs in zip(*(entry.v_inputs for entry in kept))],
                                 torch.stack([entry.row_lp for entry in kept]))
            which = torch.arange(n, device=dev).repeat_interleave(m)
            lp = self.prior.log_prob_from(cands.reshape(n * m, *cands.shape[2:]).to(dev), cache, which)
        return (-self.weight / self.positions) * lp.to(cands.device)

    def penalty_table(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` -> ``(n, h*w, k)``: first-order change of :meth:`penalty` for each single move."""
        n = idx.shape[0]
        if self.weight == 0:
            return torch.zeros(n, self.positions, self.prior.cfg.k, device=idx.device)
        kept = self._passes(idx)
        if kept is None:
            with torch.no_grad():
                lp = self.prior.log_probs_all(idx.to(self.prior.embed.device)).to(idx.device)  # (n, k, h, w)
            lp = lp.flatten(2).transpose(1, 2)
        else:
            lp = torch.stack([entry.table for entry in kept]).to(idx.device)
        # lp: (n, h*w, k)
        cur = lp.gather(2, idx.flatten(1)[..., None])
        return (self.weight / self.positions) * (cur - lp)

    def __repr__(self) -> str:
        return f"GridPrior(lambda={self.weight:g}, k={self.prior.cfg.k})"
