"""Summary statistics used on every page: one median, one quantile, one bootstrap interval, one share interval.

The book reports medians of per-pair values (relative losses, step counts). ``torch.median``
returns the lower of the two middle values of an even-sized sample, ``numpy.median`` their mean;
mixing the two on one page gives two different "medians" of the same numbers. Everything here
uses the interpolated definition (the mean of the two middle values), in float64.

Every headline number carries a 95% interval, always computed the same way: a share by the
Wilson score interval (:func:`share_estimate`), a median by the percentile bootstrap over pairs
(:func:`median_estimate`), both as an :class:`Estimate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

import torch


def _as_double(values) -> torch.Tensor:
    x = torch.as_tensor(values).detach().to("cpu", torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("cannot summarise an empty sample")
    return x


def quantile(values, q: float) -> float:
    """The ``q`` quantile (linear interpolation between order statistics) of ``values`` ``(N,)``."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    return float(torch.quantile(_as_double(values), q))


def median(values) -> float:
    """The median of ``values`` ``(N,)``: the middle value, or the mean of the two middle values."""
    return quantile(values, 0.5)


def share(mask) -> float:
    """Fraction of ``True`` in a boolean sample ``(N,)``."""
    return float(_as_double(torch.as_tensor(mask).to(torch.float64)).mean())


def bootstrap_interval(values, statistic: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                       level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (default: the median) over ``values`` ``(N,)``.

    Resamples the N values with replacement ``n_boot`` times from a seeded generator, so the
    interval is reproducible. ``statistic`` maps a ``(n_boot, N)`` float64 batch to ``(n_boot,)``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    x = _as_double(values)
    gen = torch.Generator().manual_seed(seed)
    draws = x[torch.randint(x.numel(), (n_boot, x.numel()), generator=gen)]
    stat = statistic(draws) if statistic is not None else torch.quantile(draws, 0.5, dim=1)
    lo, hi = torch.quantile(stat, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


@dataclass
class Estimate:
    """A share or a median of ``n`` values with its 95% interval: ``value`` in ``[low, high]``.

    Shares come from :func:`share_estimate` (Wilson score interval), medians from
    :func:`median_estimate` (percentile bootstrap), paired differences of shares from
    :func:`share_difference` (Newcombe's score interval, built on Wilson's). JSON-plain fields, so
    a chapter result may hold it.
    """

    value: float
    low: float
    high: float
    n: int

    def excludes(self, x: float = 0.0) -> bool:
        """The 95% interval lies entirely above or below ``x``."""
        return self.low > x or self.high < x

    def percent(self, digits: int = 0) -> str:
        """``85% [74%, 93%]``."""
        return f"{self.value:.{digits}%} [{self.low:.{digits}%}, {self.high:.{digits}%}]"

    def text(self, fmt: str = ".3g") -> str:
        """``0.784 [0.701, 0.862]``."""
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def share_interval(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share ``successes / n`` (``n`` may be an effective, non-integer size).

    Unlike the normal approximation it stays inside [0, 1] and does not collapse to a point at a
    share of 0 or 1: 8 successes out of 8 give [0.68, 1].
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes!r} of {n!r}")
    z = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == n else min(1.0, centre + half)


def share_estimate(mask, clusters=None, level: float = 0.95) -> Estimate:
    """The share of ``True`` in ``mask`` ``(N,)`` with its Wilson interval (:func:`share_interval`).

    ``clusters`` ``(N,)`` (optional) groups values that are not independent, e.g. several starts on
    one instance. The interval then uses Kish's effective sample size ``p (1 - p) / Var(p)``, with
    the between-cluster variance of the share, kept between the number of clusters and ``N``; where
    the share is 0 or 1 (no variance to measure the clustering by) it counts each cluster once.
    """
    x = _as_double(torch.as_tensor(mask).to(torch.float64))
    p, n = float(x.mean()), float(x.numel())
    n_eff = n
    if clusters is not None:
        ids = torch.as_tensor(clusters).flatten()
        if ids.numel() != x.numel():
            raise ValueError(f"clusters has {ids.numel()} entries for {x.numel()} values")
        _, inverse = torch.unique(ids, return_inverse=True)
        c = int(inverse.max()) + 1
        sums = torch.zeros(c, dtype=torch.float64).index_add_(0, inverse, x)
        sizes = torch.zeros(c, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(x))
        var = float(c / max(c - 1, 1) * ((sums - p * sizes) ** 2).sum()) / (n * n)
        if var > 0:
            n_eff = min(n, max(float(c), p * (1 - p) / var))
        elif p in (0.0, 1.0):  # every run alike: nothing tells how alike the runs of one cluster are
            n_eff = float(c)
    lo, hi = share_interval(p * n_eff, n_eff, level)
    return Estimate(p, lo, hi, int(n))


def median_estimate(values, level: float = 0.95) -> Estimate:
    """The median of ``values`` ``(N,)`` with its percentile-bootstrap interval (:func:`bootstrap_interval`)."""
    x = _as_double(values)
    lo, hi = bootstrap_interval(x, level=level) if x.numel() > 1 else (float(x[0]), float(x[0]))
    return Estimate(median(x), lo, hi, x.numel())


def share_difference(mask_a, mask_b, level: float = 0.95) -> Estimate:
    """Share of ``mask_a`` minus share of ``mask_b``, paired (both ``(N,)`` on the same pairs), with
    Newcombe's hybrid score interval for paired shares (1998, method 10), built from the two Wilson
    intervals (:func:`share_interval`) and the correlation of the pairs.

    A percentile bootstrap of the mean difference is too narrow when few pairs disagree (4 of 40
    pairs won by one side, none by the other, would count as resolved; a sign test gives p = 0.125).
    """
    a = torch.as_tensor(mask_a).flatten().bool()
    b = torch.as_tensor(mask_b).flatten().bool()
    if a.numel() != b.numel() or a.numel() == 0:
        raise ValueError(f"need two non-empty masks of one length, got {a.numel()} and {b.numel()}")
    n = a.numel()
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = share_interval(both + only_a, n, level)
    l2, u2 = share_interval(both + only_b, n, level)
    denom = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(denom) if denom > 0 else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return Estimate(d, max(-1.0, low), min(1.0, high), n)
