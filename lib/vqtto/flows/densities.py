"""Targets of the flows (the Gumbel-softmax density read three ways) and the bijection onto the simplex."""

from __future__ import annotations

import math

import normflows as nf
import torch

from .gumbel import GumbelSoftmax


# --- targets --------------------------------------------------------------------------------

class FormulaTarget(nf.distributions.Target):
    """The paper's target: ``log_prob(x)`` is the Gumbel-softmax formula at ``x`` in R^k, as is.

    For ``x`` off the simplex this is NaN (a negative coordinate), infinite (a zero coordinate) or
    a finite value of an unnormalisable function (positive coordinates not summing to 1).
    """

    def __init__(self, gs: GumbelSoftmax) -> None:
        super().__init__()
        self.gs = gs
        self.n_dims = gs.k

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.gs.formula_anywhere(z)


class LogOrthantTarget(nf.distributions.Target):
    """The paper's target read in log-coordinates: a point ``x`` of R^k stands for ``y = exp(x)``.

    ``log_prob(x) = formula(exp x) + sum_i x_i`` (the formula pulled back through the bijection
    ``exp``), written without leaving log space:
    ``lgamma(k) + (k-1) log tau + sum_i (log pi_i - tau x_i) - k logsumexp_i(log pi_i - tau x_i)``.
    This is ``torch.distributions.relaxed_categorical.ExpRelaxedCategorical.log_prob``, finite at
    every ``x``. On the simplex (``logsumexp(x) = 0``) it is the Gumbel-softmax density of ``log y``;
    off it, it is constant along the diagonal ``x + s 1`` (a rescaling ``y -> e^s y``), so it integrates to
    infinity over R^k, as the formula does over the orthant.
    """

    def __init__(self, gs: GumbelSoftmax) -> None:
        super().__init__()
        self.gs = gs
        self.n_dims = gs.k

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gs.log_pi.to(x) - self.gs.tau * x
        const = math.lgamma(self.gs.k) + (self.gs.k - 1) * math.log(self.gs.tau)
        return const + a.sum(-1) - self.gs.k * torch.logsumexp(a, -1)


class LogSimplexTarget(nf.distributions.Target):
    """Gumbel-softmax target for samples given by their log-coordinates ``log y`` ``(B, ..., k)``.

    ``log_prob`` sums over any dimensions between the batch and the class dimension, so a
    ``(P, k)`` batch of distributions is a product over the ``P`` positions.
    """

    def __init__(self, gs: GumbelSoftmax) -> None:
        super().__init__()
        self.gs = gs
        self.n_dims = gs.k

    def log_prob(self, log_y: torch.Tensor) -> torch.Tensor:
        lp = self.gs.log_prob_log(log_y)
        return lp.reshape(lp.shape[0], -1).sum(1)


# --- the bijection onto the simplex ---------------------------------------------------------

class LogSoftmaxZero(nf.flows.Flow):
    """``u`` in R^(k-1) -> ``log y`` with ``y = softmax((u_1, ..., u_(k-1), 0) / tau)`` on the open simplex.

    The map ``u -> (y_1, ..., y_(k-1))`` has Jacobian ``(diag(y') - y' y'^T) / tau`` (``y' = y_(1:k-1)``),
    whose determinant is ``tau^-(k-1) prod_(i<k) y_i (1 - sum_(i<k) y_i) = tau^-(k-1) prod_(i<=k) y_i``,
    so ``log|det J| = sum_i log y_i - (k-1) log tau`` exactly. The output is ``log y`` (``(..., k)``)
    so that nothing underflows at small temperatures; the density it carries is the density of
    ``y_(1:k-1)``, the coordinates :class:`vqtto.flows.gumbel.GumbelSoftmax` writes its density in.

    Why divide by ``tau``: a Gumbel-softmax sample is exactly this map applied to
    ``u_i = log pi_i + g_i - log pi_k - g_k`` (differences of Gumbel variables), whatever ``tau`` is.
    With the temperature inside the bijection, the flow before it has a ``tau``-free job of unit scale.
    """

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        self.tau = float(tau)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.cat([u, torch.zeros_like(u[..., :1])], -1) / self.tau
        log_y = torch.log_softmax(logits, -1)
        n_free = u[0].numel()
        return log_y, log_y.reshape(log_y.shape[0], -1).sum(1) - n_free * math.log(self.tau)

    def inverse(self, log_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = (log_y[..., :-1] - log_y[..., -1:]) * self.tau
        n_free = u[0].numel()
        return u, -(log_y.reshape(log_y.shape[0], -1).sum(1) - n_free * math.log(self.tau))
