"""Algorithm 1 of the paper: gradient descent on the continuous latent, decoded without quantisation.

The state is a continuous latent ``z`` ``(B, D, h, w)``, not an index grid, so the stepper here
evaluates it itself (:meth:`Evaluator.latent_loss_and_grad` on ``decode(z)``) and the shared
:func:`~vqtto.search.driver.drive` records ``nearest(z)`` ``(B, h, w)`` int64 every time it
changes, repeats included.
"""

from __future__ import annotations

import math
import time

import torch

from .losses import LossFn
from .driver import BUDGET, MOVED, RETRY, STALLED, Evaluator, check_positive, check_start, drive
from .trace import SearchTrace

__all__ = ["gradient_descent"]


class _GradientDescent:
    """Stepper of :func:`gradient_descent`: owns ``z`` ``(B, D, h, w)`` and its loss curves.

    Round ``s`` (the same for every active pair) evaluates ``z``; the proposer call then stops a
    pair whose loss changed by at most ``tol`` (``"stalled"``, checked first) or, at
    ``s == max_steps``, for its budget; the others step ``z <- z - alpha * grad`` and report
    ``nearest(z)`` as a new grid when it differs from the current one (RETRY otherwise, so the
    driver counts the steps between changes).
    """

    def __init__(self, model, ev: Evaluator, z_start: torch.Tensor, alpha: float, tol: float, max_steps: int,
                 optimizer: str = "sgd") -> None:
        self.model, self.ev = model, ev
        self.alpha, self.tol, self.max_steps = alpha, tol, max_steps
        self.z = z_start.detach().clone()
        self.adam = _Adam(self.z) if optimizer == "adam" else None
        self.prev = torch.full((z_start.shape[0],), math.inf, device=self.z.device)
        self.curves: list[list[float]] = [[] for _ in range(z_start.shape[0])]
        self.step = 0

    def evaluate(self, idx: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss ``(n,)`` and gradient ``(n, D, h, w)`` at the latents ``z[rows]`` (``idx`` is not needed)."""
        values, grad = self.ev.latent_loss_and_grad(self.z[rows], rows)
        for i, v in zip(rows.tolist(), values.tolist()):
            self.curves[i].append(v)
        return values, grad

    @torch.no_grad()
    def __call__(self, rows, idx, values, grads):
        done = (values - self.prev[rows]).abs() <= self.tol
        budget = torch.full_like(done, self.step == self.max_steps) & ~done
        self.prev[rows] = values
        self.step += 1
        go = ~(done | budget)
        moving = rows[go]
        step = grads[go] if self.adam is None else self.adam.direction(moving, grads[go])
        self.z[moving] = self.z[moving] - self.alpha * step
        new_idx = idx.clone()
        new_idx[go] = self.model.nearest(self.z[moving])
        changed = (new_idx != idx).flatten(1).any(1)
        status = torch.where(changed, MOVED, RETRY)
        status[done] = STALLED
        status[budget] = BUDGET
        return new_idx, torch.ones_like(status), status


class _Adam:
    """Per-pair Adam moments for the latents ``z`` ``(B, D, h, w)``; pairs that stop keep their state."""

    def __init__(self, z: torch.Tensor, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.m1, self.m2 = torch.zeros_like(z), torch.zeros_like(z)
        self.t = torch.zeros(z.shape[0], device=z.device)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def direction(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The Adam step direction ``(n, D, h, w)`` for the pairs ``rows`` given their gradients."""
        self.t[rows] += 1
        self.m1[rows] = self.beta1 * self.m1[rows] + (1 - self.beta1) * grad
        self.m2[rows] = self.beta2 * self.m2[rows] + (1 - self.beta2) * grad * grad
        shape = (-1,) + (1,) * (grad.dim() - 1)
        m1 = self.m1[rows] / (1 - self.beta1 ** self.t[rows]).view(shape)
        m2 = self.m2[rows] / (1 - self.beta2 ** self.t[rows]).view(shape)
        return m1 / (m2.sqrt() + self.eps)


OPTIMIZERS = ("sgd", "adam")


def gradient_descent(model, z_start: torch.Tensor, loss: LossFn, *, alpha: float = 0.1, tol: float = 1e-6,
                     max_steps: int = 1000, optimizer: str = "sgd", progress: bool = False) -> SearchTrace:
    """Algorithm 1: ``z <- z - alpha * grad L(decode(z))`` on the continuous latent, no quantisation.

    With ``optimizer="adam"`` the step is Adam's (per-pair moments, step size ``alpha``) instead
    of the plain gradient: the paper's rule is plain descent, Adam is how one would optimise the
    continuous reference properly.

    Each pair stops when its loss changes by at most ``tol`` between steps (``"stalled"``, the
    paper's stopping rule) or after ``max_steps`` steps (``"budget"``). The decoder of a VQ-VAE
    then sees latents that need not be codes at all: the loss it reaches is what a continuous
    generator could do, not what any index grid achieves.

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)`` (see :mod:`vqtto.search`).
        z_start: ``(B, D, h, w)`` continuous start latents.
        loss: images ``(B, C, H, W)`` -> ``(B,)``.
        alpha: step size > 0.
        tol: stop when the loss changes by at most this, >= 0.
        max_steps: most steps per pair, >= 0.
        optimizer: ``"sgd"`` (the paper's plain step) or ``"adam"``.

    Returns:
        :class:`SearchTrace` with method ``"alg1"``: ``grids`` are ``nearest(z)`` of the iterates
        each time it changes (a grid may come back), ``losses`` the *continuous* losses there,
        ``raw_steps`` the steps between changes; ``continuous_losses`` has the loss at every step
        and ``final_latents`` the final z. Use :func:`~vqtto.search.quantized_losses` for the loss
        of the grids themselves.
    """
    check_positive("alpha", alpha)
    check_positive("tol", tol, minimum=0.0)
    check_positive("max_steps", max_steps, integer=True, minimum=0)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    check_start(model, z_start)
    t0 = time.perf_counter()
    ev = Evaluator(model, loss, z_start.shape[0])
    stepper = _GradientDescent(model, ev, z_start, alpha, tol, max_steps, optimizer)
    rec = drive(model, z_start, stepper, stepper.evaluate, max_unique=math.inf, max_rounds=max_steps + 1,
                on_revisit="record", progress=progress, desc="alg1")
    return rec.trace(method="alg1", params={"alpha": alpha, "tol": tol, "max_steps": max_steps, "optimizer": optimizer},
                     decoded_images=ev.decoded, seconds=time.perf_counter() - t0, final_latents=stepper.z,
                     continuous_losses=[torch.tensor(c) for c in stepper.curves])
