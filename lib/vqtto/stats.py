"""Summary statistics used on every page: one median, one quantile, one bootstrap interval.

The book reports medians of per-pair values (relative losses, step counts). ``torch.median``
returns the lower of the two middle values of an even-sized sample, ``numpy.median`` their mean;
mixing the two on one page gives two different "medians" of the same numbers. Everything here
uses the interpolated definition (the mean of the two middle values), in float64.
"""

from __future__ import annotations

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
