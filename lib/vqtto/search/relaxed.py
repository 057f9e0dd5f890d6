"""Our gradient search: straight-through gradients on per-position code logits, stepped by Adam.

Every position of the grid holds logits ``(B, h*w, k)`` over the k codes; the grid ``(B, h, w)``
int64 is their argmax. The loss is always that of the decoded hard grid; its gradient at the
codes ``(B, D, h, w)`` reaches the logits through a softmax, and Adam's momentum carries the
search through grids it has seen before, so a revisit does not end it.
"""

from __future__ import annotations

import math
import time

import torch

from .losses import LossFn
from .chains import movable_mask
from .driver import MOVED, STALLED, Evaluator, check_positive, check_start, drive
from .trace import SearchTrace

__all__ = ["ball_argmax", "relaxed_straight_through"]


def ball_argmax(logits: torch.Tensor, centre: torch.Tensor, radius: int) -> torch.Tensor:
    """The grid of highest total logit within Hamming distance ``radius`` of ``centre``.

    Args:
        logits: ``(n, P, k)`` scores of every code at every position.
        centre: ``(n, P)`` int64, the ball's centre.
        radius: the most positions that may differ from ``centre``.

    Returns:
        ``(n, P)`` int64: per position the argmax where it is among the ``radius`` positions whose
        argmax gains most over the centre's code, else the centre's code.
    """
    top, best = logits.max(-1)
    gain = (top - logits.gather(-1, centre[..., None])[..., 0]).masked_fill(best == centre, -math.inf)
    if radius >= gain.shape[1]:
        return best
    keep = torch.zeros_like(best, dtype=torch.bool).scatter_(1, gain.topk(radius, 1).indices, True) & gain.isfinite()
    return torch.where(keep, best, centre)


class _RelaxedStraightThrough:
    """Proposer of :func:`relaxed_straight_through`.

    Each position holds logits over the k codes; the grid is their argmax. The forward pass uses
    the hard codes (so every loss is the true loss of a grid), the backward pass goes through the
    softmax: with ``g`` the gradient at the codes, ``dL/dp_j = g . c_j`` and
    ``dL/dlogit = p * (dL/dp - sum(p * dL/dp)) / tau``. Adam steps the logits; while the argmax
    does not change the same gradient is reused (no decoder call), at most ``lam`` times.
    """

    def __init__(self, model, z_start: torch.Tensor, lr: float, tau: float, init_scale: float, lam: int,
                 prior=None, movable: torch.Tensor | None = None, radius: int | None = None) -> None:
        self.cb = model.codebook.detach().float()
        self.prior, self.radius = prior, radius
        self.frozen = None if movable is None else ~movable  # (B, h*w) positions whose logits never move
        self.lr, self.tau, self.lam = lr, tau, lam
        n, dim, h, w = z_start.shape
        e = z_start.detach().float().permute(0, 2, 3, 1).reshape(n, h * w, dim)
        dist = e.pow(2).sum(-1, keepdim=True) - 2 * e @ self.cb.t() + self.cb.pow(2).sum(1)
        # argmax = nearest code; each pair is scaled by its own spread, so its start does not depend on
        # which other pairs share the batch (or the shard of a distributed run)
        spread = dist.flatten(1).std(1).clamp_min(1e-12)[:, None, None]
        self.logits = -init_scale * dist / spread
        self.m1 = torch.zeros_like(self.logits)
        self.m2 = torch.zeros_like(self.logits)
        self.t = torch.zeros(n, device=self.logits.device)
        self.schedule = None
        self.centre = self.logits.argmax(-1)  # the start grid: the ball's centre when there is a radius

    def set_schedule(self, max_steps: int, tau_end: float | None, noise: float, noise_until: float, pull: float,
                     seed: int) -> None:
        """Annealed temperature, Gumbel noise on the logits and a pull towards the start codes (all optional)."""
        self.schedule = (max_steps, tau_end, noise, noise_until, pull)
        self.start_codes = self.logits.argmax(-1)
        self.round = torch.zeros(self.logits.shape[0], device=self.logits.device)
        self.gen = torch.Generator(device=self.logits.device).manual_seed(seed)

    def scheduled(self, rows, lg, gp):
        """This round's temperature ``(n, 1, 1)``, the noisy logits, and ``dL/dp`` with the pull added."""
        max_steps, tau_end, noise, noise_until, pull = self.schedule
        frac = (self.round[rows] / max_steps).clamp(0, 1)[:, None, None]
        self.round[rows] += 1
        tau = self.tau * (tau_end / self.tau) ** frac if tau_end is not None else torch.full_like(frac, self.tau)
        if noise > 0:
            u = torch.rand(lg.shape, generator=self.gen, device=lg.device).clamp_(1e-12, 1 - 1e-7)
            lg = lg + noise * (1 - frac / noise_until).clamp(min=0) * -(-u.log()).log()
        p = torch.softmax(lg / tau, -1)
        if pull > 0:  # a penalty pull * mean|dL/dp| * (1 - p[start code]): its dL/dp, up to a constant
            away = 1 - torch.nn.functional.one_hot(self.start_codes[rows], gp.shape[-1]).to(gp.dtype)
            gp = gp + pull * gp.abs().mean((1, 2), keepdim=True) * away
        return tau, lg, p, gp

    def start(self, shape) -> torch.Tensor:
        """``shape`` = ``(B, h, w)`` -> the start grids, the argmax of the initial logits."""
        return self.logits.argmax(-1).view(shape)

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        n, dim, h, w = grads.shape
        everyone = n == self.logits.shape[0]  # all pairs active: work on the state in place
        g = grads.float().permute(0, 2, 3, 1).reshape(n, h * w, dim)
        gp = g @ self.cb.t()                                              # dL/dp (n, hw, k)
        if self.prior is not None:  # the prior's term, teacher-forced on the current grid
            gp = gp + self.prior.penalty_table(idx)
        lg, m1, m2, t = ((self.logits, self.m1, self.m2, self.t) if everyone else
                         (self.logits[rows], self.m1[rows], self.m2[rows], self.t[rows]))
        if self.schedule is None:
            p = torch.softmax(lg / self.tau, -1)
            grad = gp.sub_((p * gp).sum(-1, keepdim=True)).mul_(p).div_(self.tau)
            noisy = None
        else:
            tau, noisy, p, gp = self.scheduled(rows, lg, gp)
            grad = gp.sub_((p * gp).sum(-1, keepdim=True)).mul_(p).div_(tau)
            noisy = noisy - lg  # the noise added to the logits this round (also to their argmax)
        if self.frozen is not None:
            grad = grad.masked_fill_(self.frozen[rows][..., None], 0.0)  # Adam never moves a zero-gradient logit
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
            scores = lg_s if noisy is None else lg_s + noisy[sel]
            arg = scores.argmax(-1) if self.radius is None else ball_argmax(scores, self.centre[rows[sel]], self.radius)
            new[sel] = arg
            sel = sel[(arg == flat_idx[sel]).all(1)]                      # argmax unchanged: repeat
        if not everyone:
            self.logits[rows], self.m1[rows], self.m2[rows], self.t[rows] = lg, m1, m2, t
        status = torch.full((n,), MOVED, dtype=torch.long, device=idx.device)
        status[sel] = STALLED
        return new.view(n, h, w), steps, status


def relaxed_straight_through(model, z_start: torch.Tensor, loss: LossFn, *, lr: float = 0.1, tau: float = 1.0,
                             init_scale: float = 3.0, lam: int = 100, max_steps: int = 200,
                             max_unique: int = 500, tau_end: float | None = None, noise: float = 0.0,
                             noise_until: float = 1.0, pull: float = 0.0, seed: int = 0, prior=None,
                             movable: torch.Tensor | None = None, radius: int | None = None,
                             progress: bool = False) -> SearchTrace:
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
        tau_end: anneal the temperature geometrically from ``tau`` to ``tau_end`` (> 0) over
            ``max_steps`` rounds (None: constant ``tau``).
        noise: scale of Gumbel noise added to the logits (softmax and argmax), >= 0; it decays
            linearly to 0 at the fraction ``noise_until`` (in (0, 1]) of the run. token-opt's
            schedule (arXiv 2506.08257) is ``noise_until=2/3`` with ``pull > 0``.
        pull: strength of a pull towards the start codes, >= 0 (in units of the mean |dL/dp|).
        seed: seed of the noise.
        prior: a :class:`~vqtto.search.energy.GridPrior`: minimise ``L + lambda * NLL / (h w)``;
            its gradient with respect to the code probabilities at position p is read off the
            PixelCNN's conditionals given the current grid (and every recorded loss is the energy).
        movable: ``(B, h, w)`` or ``(h, w)`` bool, the positions that may change (None: all); the
            others keep the start grid's codes.
        radius: the grid stays within this Hamming distance (>= 1) of the start grid: it is the
            best grid under the logits inside that ball (:func:`ball_argmax`); None: no limit.

    Returns:
        :class:`SearchTrace` with method ``"relaxed"`` (``"relaxed-annealed"`` with any of
        tau_end, noise or pull).
    """
    return _relaxed_run(model, z_start, loss, lr=lr, tau=tau, init_scale=init_scale, lam=lam, max_steps=max_steps,
                        max_unique=max_unique, tau_end=tau_end, noise=noise, noise_until=noise_until, pull=pull,
                        seed=seed, prior=prior, movable=movable, radius=radius, progress=progress)[0]


def _relaxed_run(model, z_start: torch.Tensor, loss: LossFn, *, lr: float = 0.1, tau: float = 1.0,
                 init_scale: float = 3.0, lam: int = 100, max_steps: int = 200, max_unique: int = 500,
                 tau_end: float | None = None, noise: float = 0.0, noise_until: float = 1.0, pull: float = 0.0,
                 seed: int = 0, prior=None, movable: torch.Tensor | None = None, radius: int | None = None,
                 progress: bool = False) -> tuple[SearchTrace, torch.Tensor]:
    """:func:`relaxed_straight_through` and the ``(B,)`` float64 equivalents each pair spent (for a search after it)."""
    for name, value in (("lr", lr), ("tau", tau), ("init_scale", init_scale)):
        check_positive(name, value)
    check_positive("lam", lam, integer=True, minimum=1)
    check_positive("max_steps", max_steps, integer=True, minimum=1)
    check_positive("max_unique", max_unique, integer=True, minimum=1)
    if tau_end is not None:
        check_positive("tau_end", tau_end)
    check_positive("noise", noise, minimum=0.0)
    check_positive("pull", pull, minimum=0.0)
    check_positive("noise_until", noise_until)
    if noise_until > 1:
        raise ValueError(f"noise_until must be in (0, 1], got {noise_until!r}")
    if radius is not None:
        check_positive("radius", radius, integer=True, minimum=1)
    check_start(model, z_start)
    t0 = time.perf_counter()
    ev = Evaluator(model, loss, z_start.shape[0], prior=prior)
    b, _, h, w = z_start.shape
    free = None if movable is None else movable_mask(movable, b, h, w, z_start.device)
    proposer = _RelaxedStraightThrough(model, z_start, float(lr), float(tau), float(init_scale), lam, prior, free, radius)
    scheduled = tau_end is not None or noise > 0 or pull > 0
    if scheduled:
        proposer.set_schedule(max_steps, tau_end, float(noise), float(noise_until), float(pull), seed)
    start = proposer.start((z_start.shape[0],) + tuple(z_start.shape[-2:]))
    rec = drive(model, z_start, proposer, ev.loss_and_grad, max_unique=max_unique, max_rounds=max_steps,
                on_revisit="skip", progress=progress, desc="relaxed", start=start, clock=ev.clock)
    params = {"lr": lr, "tau": tau, "init_scale": init_scale, "lam": lam, "max_steps": max_steps, "max_unique": max_unique}
    if prior is not None:
        params["prior_weight"] = prior.weight
    if radius is not None:
        params["radius"] = radius
    if scheduled:
        params.update(tau_end=tau_end, noise=noise, noise_until=noise_until, pull=pull, seed=seed)
    trace = rec.trace(method="relaxed-annealed" if scheduled else "relaxed", params=params,
                      decoded_images=ev.decoded, seconds=time.perf_counter() - t0, decoder_equivalents=ev.equivalents)
    return trace, ev.spent.clone()
