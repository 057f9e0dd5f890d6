"""The Gumbel-softmax (concrete) distribution on the probability simplex (paper, appendix A.5).

A sample is ``y = softmax((log pi + g) / tau)`` with ``g`` i.i.d. standard Gumbel noise: a point
of the open simplex ``{y in (0, 1)^k : sum_i y_i = 1}``. Its density (Jang, Gu and Poole 2016;
Maddison, Mnih and Teh 2016) is

    p(y) = Gamma(k) tau^(k-1) (sum_i pi_i / y_i^tau)^(-k) prod_i pi_i / y_i^(tau + 1).

**Coordinates.** The simplex is (k-1)-dimensional, so this is a density with respect to Lebesgue
measure on the first ``k-1`` coordinates ``(y_1, ..., y_(k-1))``, with ``y_k = 1 - sum_(i<k) y_i``
determined by them. It is *not* a density on R^k: the formula can be evaluated at points off the
simplex, but there it means nothing (see :meth:`GumbelSoftmax.formula_anywhere`).

**Log space.** At small tau almost all coordinates of a sample underflow (``y_i ~ exp(-1/tau)``),
so :meth:`GumbelSoftmax.log_prob_log` takes ``log y`` and evaluates

    log p = lgamma(k) + (k-1) log tau + sum_i (log pi_i - (tau+1) log y_i)
            - k logsumexp_i(log pi_i - tau log y_i),

which is finite wherever ``log y`` is; :meth:`GumbelSoftmax.sample_log` draws ``log y`` directly
with ``log_softmax``, so the pair never leaves log space.
"""

from __future__ import annotations

import math

import torch


def _check_tau(tau: float) -> float:
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 0 or not math.isfinite(tau):
        raise ValueError(f"tau (temperature) must be a finite number > 0, got {tau!r}")
    return float(tau)


def zipf_probs(k: int, s: float = 1.0) -> torch.Tensor:
    """``(k,)`` class probabilities ``pi_i proportional to 1 / i^s`` (a skewed, code-usage-like law)."""
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k (number of classes) must be an int >= 2, got {k!r}")
    w = torch.arange(1, k + 1, dtype=torch.float64).pow(-float(s))
    return (w / w.sum()).float()


class GumbelSoftmax:
    """Gumbel-softmax distribution(s) with class probabilities ``probs`` and temperature ``tau``.

    Args:
        probs: ``(..., k)`` class probabilities (positive; normalised here). Leading dimensions are
            a batch of independent distributions, e.g. ``(P, k)`` for one per code-grid position.
        tau: temperature > 0; as ``tau -> 0`` samples approach one-hot vectors drawn with ``probs``.
    """

    def __init__(self, probs: torch.Tensor, tau: float) -> None:
        probs = torch.as_tensor(probs)
        if probs.dim() < 1 or probs.shape[-1] < 2:
            raise ValueError(f"probs must have a last dimension k >= 2, got shape {tuple(probs.shape)}")
        if not torch.isfinite(probs).all() or (probs <= 0).any():
            raise ValueError("probs must be finite and > 0 (smooth empirical frequencies before use)")
        self.tau = _check_tau(tau)
        self.log_pi = torch.log(probs / probs.sum(-1, keepdim=True))
        self.k = probs.shape[-1]

    @property
    def probs(self) -> torch.Tensor:
        return self.log_pi.exp()

    def to(self, device: torch.device | str) -> "GumbelSoftmax":
        self.log_pi = self.log_pi.to(device)
        return self

    # --- sampling ---------------------------------------------------------------------------

    def sample_log(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, ..., k)`` log-coordinates ``log y`` of ``n`` samples (exact, no underflow)."""
        shape = (n, *self.log_pi.shape)
        u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
        g = -torch.log(-torch.log(u))
        logits = (self.log_pi.double().cpu() + g) / self.tau
        return torch.log_softmax(logits, -1).to(self.log_pi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, ..., k)`` points of the simplex."""
        return self.sample_log(n, generator).exp()

    # --- density ----------------------------------------------------------------------------

    def log_prob_log(self, log_y: torch.Tensor) -> torch.Tensor:
        """Log density of ``y_(1:k-1)`` at points given by their log-coordinates.

        Args:
            log_y: ``(..., k)`` with ``logsumexp(log_y) = 0`` (points of the open simplex).
        Returns:
            ``(...)`` the log density with respect to Lebesgue measure on ``y_1..y_(k-1)``.
        """
        k, tau = self.k, self.tau
        log_pi = self.log_pi.to(log_y)
        const = math.lgamma(k) + (k - 1) * math.log(tau)
        lin = (log_pi - (tau + 1) * log_y).sum(-1)
        lse = torch.logsumexp(log_pi - tau * log_y, -1)
        return const + lin - k * lse

    def log_prob(self, y: torch.Tensor, atol: float = 1e-4) -> torch.Tensor:
        """Log density at points ``y`` ``(..., k)`` of the simplex (coordinates ``y_1..y_(k-1)``).

        Raises:
            ValueError: if some ``y`` is off the open simplex (a negative or zero coordinate, or a
                sum further than ``atol`` from 1): the density is not defined there.
        """
        if (y <= 0).any() or ((y.sum(-1) - 1).abs() > atol).any():
            raise ValueError(
                "y must lie on the open simplex (all coordinates > 0, summing to 1 within "
                f"atol={atol}); the Gumbel-softmax density is not defined elsewhere. Use "
                "formula_anywhere to evaluate the formula off the simplex on purpose."
            )
        return self.log_prob_log(torch.log(y))

    def formula_anywhere(self, x: torch.Tensor) -> torch.Tensor:
        """The density formula evaluated literally at any ``x`` ``(..., k)`` in R^k.

        This is what a target whose ``log_prob`` is the appendix formula returns for the samples of
        a flow with values in R^k: NaN where some coordinate is negative (the log of a negative
        number), +/-inf where one is 0, and a finite number that is not a log density of anything
        where all coordinates are positive but do not sum to 1. On that open orthant the formula is
        homogeneous of degree -k: ``formula(c x) = formula(x) - k log c``, so it grows without
        bound as ``x -> 0`` and integrates to infinity; a reverse KL against it is unbounded below.
        """
        return self.log_prob_log(torch.log(x))

    def log_prob_categorical(self, indices: torch.Tensor) -> torch.Tensor:
        """Log-probability of discrete classes under ``probs`` (the tau -> 0 limit).

        Args:
            indices: ``(..., *batch)`` int64 classes, trailing dims matching ``probs``' batch dims.
        Returns:
            the same shape, ``log pi[..., index]``.
        """
        log_pi = self.log_pi.to(indices.device)
        expanded = log_pi.expand(*indices.shape, self.k)
        return expanded.gather(-1, indices.unsqueeze(-1)).squeeze(-1)
