"""Training a flow by reverse KL with divergence recorded (never raised), and what its samples do."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import normflows as nf
import torch
from torch import nn

from ..progress import progress_bar
from .gumbel import GumbelSoftmax
from .architectures import OPTIMIZERS
from .densities import FormulaTarget, LogOrthantTarget, LogSoftmaxZero


# --- training by reverse KL, divergence recorded ---------------------------------------------

@dataclass
class FlowRun:
    """One reverse-KL training run.

    Attributes:
        losses: the reverse-KL estimate (normflows' ``reverse_kld``) at each completed step.
        diverged_at: the step whose loss or gradient was not finite (None: ran to the end).
        reason: ``"non-finite loss"`` or ``"non-finite gradient"`` (None when not diverged).
        final_kl: reverse KL estimated on ``n_eval`` fresh samples after training (None if diverged).
        seconds: wall time of the run.
        meta: what the caller wants to keep beside it (configuration, seed, k, kind).
        log_scale: per completed step, the 10%, 50% and 90% quantiles over the batch of
            :func:`log_scale` of the samples (0 on the simplex; ``s`` for a point ``e^s`` times one of it).
        max_abs: per completed step, the largest absolute coordinate of the batch's samples.
        nan_origin: where the first non-finite value of the diverging step appeared (a layer of the
            flow, ``"target log-density"`` or ``"gradient"``; None when not diverged).
    """

    losses: list[float]
    diverged_at: int | None
    reason: str | None
    final_kl: float | None
    seconds: float
    meta: dict = field(default_factory=dict)
    log_scale: list[list[float]] = field(default_factory=list)
    max_abs: list[float] = field(default_factory=list)
    nan_origin: str | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """``adam`` or ``sgd-nesterov`` (momentum 0.9), the two optimisers of the paper's configurations."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd-nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def log_scale(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` log-scale of samples given in log-coordinates ``(B, ..., k)``: ``log sum_i y_i``, averaged
    over any positions. 0 on the simplex; ``s`` for ``e^s`` times a point of the simplex."""
    lse = torch.logsumexp(x.detach(), -1)
    return lse.reshape(lse.shape[0], -1).mean(1)


def _layer_name(layer: nn.Module, index: int, layers: nn.ModuleList) -> str:
    """``"coupling block 3 of 16"``, ``"softmax bijection"``, ...: how a layer is named in a divergence."""
    if isinstance(layer, nf.flows.AffineCouplingBlock):
        blocks = [i for i, m in enumerate(layers) if isinstance(m, nf.flows.AffineCouplingBlock)]
        return f"coupling block {blocks.index(index) + 1} of {len(blocks)}"
    return "softmax bijection" if isinstance(layer, LogSoftmaxZero) else type(layer).__name__


def reverse_kld_parts(flow: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[], str]]:
    """``n`` samples of ``flow``, their log density, the target's log density there, and where a non-finite value began.

    The reverse-KL estimate is ``log_q.mean() - log_p.mean()``, as normflows' ``reverse_kld`` computes
    it (same random draws, same values). For a normflows flow the layers are applied one by one and
    a finiteness flag kept per layer (as tensors: nothing is synchronised unless asked); the returned
    function names the first layer whose output or running log density was not finite, else the
    target, and is meant to be called only once the loss was found non-finite.
    """
    from .grid import GridSimplexFlow  # grid builds on this module: imported here, not at the top

    if isinstance(flow, GridSimplexFlow):
        x, log_q = flow.sample(n)
        log_p = flow.target.log_prob(x)
        return x, log_q, log_p, lambda: "flow" if not bool(torch.isfinite(x).all()) else "target log-density"
    x, log_q = flow.q0(n)
    finite = []
    for layer in flow.flows:
        x, log_det = layer(x)
        log_q = log_q - log_det
        finite.append(torch.isfinite(x).all() & torch.isfinite(log_q).all())
    log_p = flow.p.log_prob(x)

    def origin() -> str:
        bad = [i for i, ok in enumerate(finite) if not bool(ok)]
        return _layer_name(flow.flows[bad[0]], bad[0], flow.flows) if bad else "target log-density"

    return x, log_q, log_p, origin


def train_reverse_kld(
    flow: nn.Module,
    steps: int,
    batch: int = 256,
    optimizer: str = "adam",
    lr: float = 1e-3,
    seed: int = 0,
    n_eval: int = 2048,
    clip: float | None = None,
    progress: bool = False,
    meta: dict | None = None,
) -> FlowRun:
    """Minimise the reverse-KL estimate of :func:`reverse_kld_parts` for ``steps`` steps; never raises on divergence.

    A step whose loss is NaN/inf, or whose gradient has a NaN/inf entry, ends the run: its index is
    stored in :attr:`FlowRun.diverged_at`, where the first non-finite value appeared in
    :attr:`FlowRun.nan_origin`, and no optimiser step is taken with it. Every completed step also
    records the quantiles of the batch's :func:`log_scale` and its largest coordinate. ``clip``
    (when not None) rescales a finite gradient to norm at most ``clip`` before the step; the check
    for non-finite gradients comes first, so clipping never hides a divergence.
    """
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps!r}, batch={batch!r}")
    torch.manual_seed(seed)
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr)
    run = FlowRun([], None, None, None, 0.0, dict(meta or {}))
    probs = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    start = time.perf_counter()
    for step in progress_bar(range(steps), disable=not progress, desc="reverse KL", leave=False):
        x, log_q, log_p, origin = reverse_kld_parts(flow, batch)
        loss = log_q.mean() - log_p.mean()
        if not torch.isfinite(loss):
            run.diverged_at, run.reason, run.nan_origin = step, "non-finite loss", origin()
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            run.diverged_at, run.reason, run.nan_origin = step, "non-finite gradient", "gradient"
            break
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        run.losses.append(float(loss.detach()))
        run.log_scale.append(torch.quantile(log_scale(x).double(), probs.to(x.device)).tolist())
        run.max_abs.append(float(x.detach().abs().max()))
    if run.diverged_at is None:
        with torch.no_grad():
            _, log_q, log_p, origin = reverse_kld_parts(flow, n_eval)
            value = float(log_q.mean() - log_p.mean())
        if math.isfinite(value):
            run.final_kl = value
        else:
            run.diverged_at, run.reason, run.nan_origin = steps, "non-finite loss", origin()
    run.seconds = time.perf_counter() - start
    return run


def scaled_reverse_kl(gs: GumbelSoftmax, base_mean: float, scales: list[float], n: int = 4096,
                      seed: int = 0) -> dict[float, float]:
    """Reverse-KL estimate against the literal formula (:class:`FormulaTarget`) of ``c x``, ``x ~ N(base_mean, I_k)``.

    For each scale ``c`` the same ``n`` draws (float64) are rescaled; ``log q_c(c x) = log q(x) - k log c``
    is the density of the rescaled Gaussian. Because the formula is homogeneous of degree ``-k`` on the
    orthant, the estimate is the same for every ``c`` (up to rounding): rescaling is a free direction
    of the loss. Returns ``{c: estimate}``.
    """
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, gs.k, generator=gen, dtype=torch.float64)
    log_q = -0.5 * (eps.pow(2).sum(1) + gs.k * math.log(2 * math.pi))
    return {c: float((log_q - gs.k * math.log(c) - gs.formula_anywhere(c * (base_mean + eps))).mean())
            for c in scales}


# --- what the paper's target sees -------------------------------------------------------------

@torch.no_grad()
def where_samples_fall(flow: nf.NormalizingFlow, n: int = 4096, atol: float = 1e-3) -> dict[str, float]:
    """Fractions of ``n`` flow samples (in R^k) by what the simplex formula returns there.

    Returns ``nan`` (some coordinate < 0: the literal reading takes the log of a negative number),
    ``off_simplex_finite`` (all > 0, sum not within ``atol`` of 1: finite, off the simplex),
    ``on_simplex``, and ``log_reading_finite`` (the samples read as log-coordinates,
    :class:`LogOrthantTarget`, where the density is finite).
    """
    x, _ = flow.sample(n)
    negative = (x < 0).any(1)
    on = (~negative) & ((x.sum(1) - 1).abs() <= atol)
    gs = flow.p.gs
    return {"nan": float(negative.float().mean()),
            "off_simplex_finite": float(((~negative) & ~on).float().mean()),
            "on_simplex": float(on.float().mean()),
            "log_reading_finite": float(torch.isfinite(LogOrthantTarget(gs).log_prob(x)).float().mean())}
