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
"""

from __future__ import annotations

import math

import torch

__all__ = ["GridPrior"]


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

    def nll(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` int64 -> ``(n,)`` negative log-likelihood in nats per position."""
        with torch.no_grad():
            return -self.prior.log_prob(idx.to(self.prior.embed.device)).to(idx.device) / self.positions

    def penalty(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` int64 -> ``(n,)`` the energy's prior term, ``lambda * nll``."""
        if self.weight == 0:
            return torch.zeros(idx.shape[0], device=idx.device)
        return self.weight * self.nll(idx)

    def penalty_from(self, cands: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Candidates ``(n, M, h, w)`` int64, each a change of its base grid ``base[i]`` ``(n, h, w)`` ->
        ``(n * M,)`` their :meth:`penalty`, the same numbers up to rounding: each candidate's rows above
        its first change are taken from one pass over the bases
        (:meth:`~vqtto.models.pixelcnn.GatedPixelCNN.log_prob_from`), so a move in row ``r`` costs
        ``(h - r) / h`` of a PixelCNN pass."""
        n, m = cands.shape[:2]
        if self.weight == 0:
            return torch.zeros(n * m, device=cands.device)
        dev = self.prior.embed.device
        with torch.no_grad():
            cache = self.prior.row_cache(base.to(dev))
            which = torch.arange(n, device=dev).repeat_interleave(m)
            lp = self.prior.log_prob_from(cands.reshape(n * m, *cands.shape[2:]).to(dev), cache, which)
        return (-self.weight / self.positions) * lp.to(cands.device)

    def penalty_table(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` -> ``(n, h*w, k)``: first-order change of :meth:`penalty` for each single move."""
        n = idx.shape[0]
        if self.weight == 0:
            return torch.zeros(n, self.positions, self.prior.cfg.k, device=idx.device)
        with torch.no_grad():
            lp = self.prior.log_probs_all(idx.to(self.prior.embed.device)).to(idx.device)  # (n, k, h, w)
        lp = lp.flatten(2).transpose(1, 2)  # (n, h*w, k)
        cur = lp.gather(2, idx.flatten(1)[..., None])
        return (self.weight / self.positions) * (cur - lp)

    def __repr__(self) -> str:
        return f"GridPrior(lambda={self.weight:g}, k={self.prior.cfg.k})"
