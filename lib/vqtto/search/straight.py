"""Algorithms 2 and 3 of the paper: straight-through search over index grids.

From continuous latents ``e`` ``(B, D, h, w)`` (float64 here), each round decodes the codes of
the grid ``nearest(e)`` ``(B, h, w)`` int64, takes the loss gradient at those codes, masks it
(all positions, the single largest, or the top m) and adds ``-alpha * grad`` to ``e`` again and
again until an index changes. The repeats are counted with :mod:`~vqtto.search.voronoi`, so they
cost no decoder call; a pair stops at the first grid it has seen before. The paper's two
remedies are options: an adaptive step size and a tabu memory of the grids seen.
"""

from __future__ import annotations

import time

import torch

from .losses import LossFn
from .driver import MOVED, STALLED, Evaluator, check_positive, check_start, drive
from .trace import SearchTrace
from .voronoi import nearest_exact, position_steps

__all__ = ["MASKS", "mask_gradient", "straight_through"]

MASKS = ("all", "single", "top")


def mask_gradient(grad: torch.Tensor, mask: str = "all", m: int = 1) -> torch.Tensor:
    """Keep the gradient ``(n, D, h, w)`` at all positions, the single largest-norm one, or the top ``m``."""
    if mask == "all":
        return grad
    keep_n = 1 if mask == "single" else m
    n, _, h, w = grad.shape
    norms = grad.norm(dim=1).flatten(1)
    top = norms.topk(min(keep_n, h * w), dim=1).indices
    keep = torch.zeros_like(norms).scatter_(1, top, 1.0).view(n, 1, h, w)
    return grad * keep


class _StraightThrough:
    """Proposer of Algorithms 2 and 3: repeat the masked straight-through step until an index changes.

    The continuous latents ``e`` ``(B, D, h, w)`` are kept in float64 so that the repeat counts
    and :func:`nearest_exact` agree. Counts come in float32 per position
    (:func:`position_steps`); then exact float64 nearest codes are taken at the few positions that
    can have changed (those within one step of the earliest), one step further in the rare case
    that rounding made the count short.
    """

    def __init__(self, model, z_start: torch.Tensor, alpha: float, lam: int, mask: str, m: int,
                 adaptive: bool = False, tabu: bool = False) -> None:
        self.alpha, self.lam, self.mask, self.m = alpha, lam, mask, m
        self.codebook = model.codebook
        self.e = z_start.detach().clone().double()
        self.adaptive, self.tabu = adaptive, tabu
        self.scale = torch.ones(z_start.shape[0], dtype=torch.float64, device=z_start.device)  # adaptive: alpha multiplier
        self.seen: list[set[bytes]] = [set() for _ in range(z_start.shape[0])]                # grids met so far

    def start(self) -> torch.Tensor:
        """``(B, h, w)`` int64: the start grids ``nearest_exact(z_start)``."""
        return nearest_exact(self.e, self.codebook)

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        d = -self.alpha * mask_gradient(grads, self.mask, self.m).to(self.e.dtype)
        if self.adaptive:
            d = d * self.scale[rows][:, None, None, None]
        e = self.e[rows]
        if self.adaptive or self.tabu:
            for i, g in zip(rows.tolist(), idx.cpu().numpy()):
                self.seen[i].add(g.tobytes())
        new, steps = self._advance(e, d, idx, self.lam)
        if self.tabu:  # masking seen grids: step on past every grid met before, within lam repeats
            again = (steps <= self.lam) & self._met(rows, new)
            while bool(again.any()):
                sel = again.nonzero().squeeze(1)
                more, extra = self._advance(e[sel] + steps[sel].to(e.dtype)[:, None, None, None] * d[sel], d[sel], new[sel],
                                            self.lam)
                steps[sel] += extra
                new[sel] = more
                again = (steps <= self.lam) & self._met(rows, new)
        status = torch.where(steps <= self.lam, MOVED, STALLED).to(torch.long)
        steps = steps.clamp(max=self.lam)
        if self.adaptive:  # a revisit doubles the pair's step (up to 2**10), a new grid halves it (down to 1)
            hit = self._met(rows, new).to(self.scale.device)
            self.scale[rows] = torch.where(hit, self.scale[rows] * 2, self.scale[rows] / 2).clamp(1.0, 1024.0)
        self.e[rows] = e + steps.to(e.dtype)[:, None, None, None] * d
        return new, steps, status

    def _met(self, rows: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        """``(n,)`` bool: each grid ``(n, h, w)`` was met before by its pair."""
        return torch.tensor([g.tobytes() in self.seen[i] for i, g in zip(rows.tolist(), grids.cpu().numpy())],
                            dtype=torch.bool, device=grids.device)

    def _advance(self, e: torch.Tensor, d: torch.Tensor, idx: torch.Tensor, lam: int) -> tuple[torch.Tensor, torch.Tensor]:
        """From latents ``e`` on grids ``idx``, repeat step ``d`` until an index changes.

        Returns the new grids ``(n, h, w)`` and the repeats ``(n,)`` it took (``lam + 1``: none within lam).
        """
        n, dim, h, w = e.shape
        tp = position_steps(e, d, idx, self.codebook, torch.float32)                 # (n, hw)
        steps = tp.amin(1).clamp(min=1, max=lam + 1).to(torch.long)  # >= 1: the loop below is bounded by lam
        cb = self.codebook.detach().double()
        c2 = cb.pow(2).sum(1)
        ef = e.permute(0, 2, 3, 1).reshape(n, h * w, dim)
        df = d.permute(0, 2, 3, 1).reshape(n, h * w, dim)
        old = idx.reshape(n, h * w)
        new = old.clone()
        todo = steps <= lam
        while bool(todo.any()):
            sel = todo.nonzero().squeeze(1)
            r, p = (tp[sel] <= (steps[sel] + 1)[:, None].to(tp.dtype)).nonzero(as_tuple=True)
            rows_, t = sel[r], steps[sel[r]].to(ef.dtype)[:, None]
            pts = ef[rows_, p] + t * df[rows_, p]                                      # (m, D)
            nn = (c2 - 2 * pts @ cb.t()).argmin(1)
            moved = nn != old[rows_, p]
            new[rows_[moved], p[moved]] = nn[moved]
            hit = torch.zeros(n, dtype=torch.bool, device=e.device)
            hit[rows_[moved]] = True
            todo &= ~hit
            steps[todo] += 1
            todo &= steps <= lam
        return new.view(n, h, w), steps


def straight_through(model, z_start: torch.Tensor, loss: LossFn, *, alpha: float = 0.1, lam: int = 100,
                     max_unique: int = 500, mask: str = "all", m: int = 1, adaptive: bool = False, tabu: bool = False,
                     max_rounds: int | None = None, progress: bool = False) -> SearchTrace:
    """Algorithm 2 (``mask="all"``), Algorithm 3 (``mask="single"``) or its top-``m`` variant.

    From ``e = z_start`` the search quantises, decodes, takes the gradient of the loss at the
    quantised codes (straight-through), and adds ``-alpha * grad`` (masked) to ``e`` again and
    again until a nearest-neighbour index changes; the repeats are counted analytically
    (:func:`~vqtto.search.steps_to_change`), so they cost no decoder call. It stops at the first
    grid seen before (``"loop"``), when ``lam`` repeats change nothing (``"stalled"``), or after
    ``max_unique`` distinct grids (``"budget"``).

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)`` (see :mod:`vqtto.search`).
        z_start: ``(B, D, h, w)`` continuous start latents, e.g. ``model.encode(sources)``.
        loss: images ``(B, C, H, W)`` -> ``(B,)``, e.g. ``search.mse_to(targets)``.
        alpha: step size > 0.
        lam: most repeats of one step, >= 1 (the paper's lambda).
        max_unique: most distinct grids per pair, >= 1.
        mask: ``"all"`` | ``"single"`` | ``"top"``.
        m: positions moved per step when ``mask="top"``, >= 1.
        adaptive: the paper's first remedy, a dynamic step size: a step that lands on a grid met
            before doubles that pair's step (up to 1024 alpha) and the search goes on; a new grid
            halves it again (down to alpha). Revisits are decoded (and paid for) but not recorded.
        tabu: the paper's second remedy, masking seen combinations: a step that would land on a
            grid met before steps on (same gradient, within lam repeats) to the next grid not met
            yet, so no grid is visited twice; ``"stalled"`` when lam repeats find none.
        max_rounds: most decoder rounds per pair with either remedy (default: ``max_unique``).

    Returns:
        :class:`SearchTrace` with method ``"alg2"``, ``"alg3"`` or ``"top{m}"``; its
        ``final_latents`` are the last ``e``.
    """
    check_positive("alpha", alpha)
    check_positive("lam", lam, integer=True, minimum=1)
    check_positive("max_unique", max_unique, integer=True, minimum=1)
    check_positive("m", m, integer=True, minimum=1)
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {list(MASKS)}, got {mask!r}")
    if max_rounds is not None:
        check_positive("max_rounds", max_rounds, integer=True, minimum=1)
    check_start(model, z_start)
    t0 = time.perf_counter()
    ev = Evaluator(model, loss, z_start.shape[0])
    proposer = _StraightThrough(model, z_start, float(alpha), lam, mask, m, bool(adaptive), bool(tabu))
    method = {"all": "alg2", "single": "alg3"}.get(mask, f"top{m}")
    params = {"alpha": alpha, "lam": lam, "max_unique": max_unique, "mask": mask, "m": m}
    remedy = adaptive or tabu
    if remedy:
        method += "-adaptive" * bool(adaptive) + "-tabu" * bool(tabu)
        params.update(adaptive=bool(adaptive), tabu=bool(tabu), max_rounds=max_rounds or max_unique)
    rec = drive(model, z_start, proposer, ev.loss_and_grad, max_unique=max_unique,
                max_rounds=(max_rounds or max_unique) if remedy else max_unique, on_revisit="skip" if remedy else "stop",
                progress=progress, desc=method, start=proposer.start(), clock=ev.clock)
    return rec.trace(method=method, params=params,
                     decoded_images=ev.decoded, seconds=time.perf_counter() - t0, decoder_equivalents=ev.equivalents,
                     final_latents=proposer.e.to(z_start.dtype))
