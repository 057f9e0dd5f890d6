"""Our gradient search: straight-through gradients on per-position code logits, stepped by Adam.

Every position of the grid holds logits ``(B, h*w, k)`` over the k codes; the grid ``(B, h, w)``
int64 is their argmax. The loss is always that of the decoded hard grid; its gradient at the
codes ``(B, D, h, w)`` reaches the logits through a softmax, and Adam's momentum carries the
search through grids it has seen before, so a revisit does not end it.
"""

from __future__ import annotations

import time

import torch

from ..constraints import LossFn
from .driver import MOVED, STALLED, Evaluator, check_positive, check_start, drive
from .trace import SearchTrace

__all__ = ["relaxed_straight_through"]


class _RelaxedStraightThrough:
    """Proposer of :func:`relaxed_straight_through`.

    Each position holds logits over the k codes; the grid is their argmax. The forward pass uses
    the hard codes (so every loss is the true loss of a grid), the backward pass goes through the
    softmax: with ``g`` the gradient at the codes, ``dL/dp_j = g . c_j`` and
    ``dL/dlogit = p * (dL/dp - sum(p * dL/dp)) / tau``. Adam steps the logits; while the argmax
    does not change the same gradient is reused (no decoder call), at most ``lam`` times.
    """

    def __init__(self, model, z_start: torch.Tensor, lr: float, tau: float, init_scale: float, lam: int) -> None:
        self.cb = model.codebook.detach().float()
        self.lr, self.tau, self.lam = lr, tau, lam
        n, dim, h, w = z_start.shape
        e = z_start.detach().float().permute(0, 2, 3, 1).reshape(n, h * w, dim)
        dist = e.pow(2).sum(-1, keepdim=True) - 2 * e @ self.cb.t() + self.cb.pow(2).sum(1)
        self.logits = -init_scale * dist / dist.std().clamp_min(1e-12)  # argmax = nearest code
        self.m1 = torch.zeros_like(self.logits)
        self.m2 = torch.zeros_like(self.logits)
        self.t = torch.zeros(n, device=self.logits.device)

    def start(self, shape) -> torch.Tensor:
        """``shape`` = ``(B, h, w)`` -> the start grids, the argmax of the initial logits."""
        return self.logits.argmax(-1).view(shape)

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        n, dim, h, w = grads.shape
        everyone = n == self.logits.shape[0]  # all pairs active: work on the state in place
        g = grads.float().permute(0, 2, 3, 1).reshape(n, h * w, dim)
        gp = g @ self.cb.t()                                              # dL/dp (n, hw, k)
        lg, m1, m2, t = ((self.logits, self.m1, self.m2, self.t) if everyone else
                         (self.logits[rows], self.m1[rows], self.m2[rows], self.t[rows]))
        p = torch.softmax(lg / self.tau, -1)
        grad = gp.sub_((p * gp).sum(-1, keepdim=True)).mul_(p).div_(self.tau)
        flat_idx = idx.reshape(n, h * w)
        steps = torch.zeros(n, dtype=torch.long, device=idx.device)
        sel = torch.arange(n, device=idx.device)
        new = flat_idx.clone()
        while sel.numel() and int(steps[sel[0]]) < self.lam:
            whole = sel.numel() == n
            lg_s, m1_s, m2_s, g_s = (lg, m1, m2, grad) if whole else (lg[sel], m1[sel], m2[sel], grad[sel])
            t[sel] += 1
            m1_s.mul_(0.9).add_(g_s, alpha=0.1)
            m2_s.mul_(0.999).addcmul_(g_s, g_s, value=0.001)
            c1 = (1 - 0.9 ** t[sel])[:, None, None]
            c2 = (1 - 0.999 ** t[sel])[:, None, None]
            lg_s.sub_((m1_s / c1).div_((m2_s / c2).sqrt_().add_(1e-8)).mul_(self.lr))
            if not whole:
                lg[sel], m1[sel], m2[sel] = lg_s, m1_s, m2_s
            steps[sel] += 1
            arg = lg_s.argmax(-1)
            new[sel] = arg
            sel = sel[(arg == flat_idx[sel]).all(1)]                      # argmax unchanged: repeat
        if not everyone:
            self.logits[rows], self.m1[rows], self.m2[rows], self.t[rows] = lg, m1, m2, t
        status = torch.full((n,), MOVED, dtype=torch.long, device=idx.device)
        status[sel] = STALLED
        return new.view(n, h, w), steps, status


def relaxed_straight_through(model, z_start: torch.Tensor, loss: LossFn, *, lr: float = 0.1, tau: float = 1.0,
                             init_scale: float = 3.0, lam: int = 100, max_steps: int = 200,
                             max_unique: int = 500, progress: bool = False) -> SearchTrace:
    """Our improved search: straight-through gradients on per-position code logits, with Adam.

    Algorithm 2 moves a point in latent space and reads off its nearest codes; here every
    position instead holds a score (logit) for each of the k codes, initialised so that the
    start grid is ``nearest(z_start)``, and the grid is the argmax. The loss is always that of the
    decoded hard grid; its gradient reaches the logits through a softmax of temperature ``tau``
    (the straight-through softmax of Gumbel-softmax training, without noise), and Adam's momentum
    carries the search through grids it has visited before, so a revisit does not end it. It
    stops after ``max_steps`` decoder rounds or ``max_unique`` distinct grids (``"budget"``), or
    when ``lam`` repeats of one gradient change no argmax (``"stalled"``). Report
    :attr:`SearchTrace.best_losses`: the search visits worse grids on its way.

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)`` (see :mod:`vqtto.search`).
        z_start: ``(B, D, h, w)`` continuous start latents.
        loss: images ``(B, C, H, W)`` -> ``(B,)``.
        lr: Adam step size on the logits, > 0.
        tau: softmax temperature, > 0.
        init_scale: how peaked the initial logits are (negative squared distances to the
            codes divided by their standard deviation, times this), > 0.
        lam: most repeats of one gradient, >= 1.
        max_steps: decoder rounds per pair, >= 1.
        max_unique: most distinct grids per pair, >= 1.

    Returns:
        :class:`SearchTrace` with method ``"relaxed"``.
    """
    for name, value in (("lr", lr), ("tau", tau), ("init_scale", init_scale)):
        check_positive(name, value)
    check_positive("lam", lam, integer=True, minimum=1)
    check_positive("max_steps", max_steps, integer=True, minimum=1)
    check_positive("max_unique", max_unique, integer=True, minimum=1)
    check_start(model, z_start)
    t0 = time.perf_counter()
    ev = Evaluator(model, loss, z_start.shape[0])
    proposer = _RelaxedStraightThrough(model, z_start, float(lr), float(tau), float(init_scale), lam)
    start = proposer.start((z_start.shape[0],) + tuple(z_start.shape[-2:]))
    rec = drive(model, z_start, proposer, ev.loss_and_grad, max_unique=max_unique, max_rounds=max_steps,
                on_revisit="skip", progress=progress, desc="relaxed", start=start)
    return rec.trace(method="relaxed", params={"lr": lr, "tau": tau, "init_scale": init_scale, "lam": lam,
                                               "max_steps": max_steps, "max_unique": max_unique},
                     decoded_images=ev.decoded, seconds=time.perf_counter() - t0)
