"""The paper's benchmark as a task: random source-target test pairs, searched by any method of the
registry at a budget, each pair scored against its target's own code (R = L / L_ref).

Chapter 3 tabulates it, chapter 4 scores its samplers' drift, ``python -m vqtto.bench search``
times it: they share :class:`Problem` and :func:`run_method` from here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .. import cache, search, stats

__all__ = ["Problem", "best_at", "best_known", "gap_to_best_known", "model_digest", "problem", "reported_and_validation", "run_method", "time_quantile", "time_to_target"]


@dataclass
class Problem:
    """A model and pairs ready to search: ``z`` ``(B, D, h, w)``, ``targets``, ``loss``, ``reference`` ``(B,)`` (CPU)."""

    model: object
    sources: torch.Tensor
    targets: torch.Tensor
    z: torch.Tensor
    loss: object
    reference: torch.Tensor
    ids: list

    def subset(self, sl: slice) -> "Problem":
        targets = self.targets[sl]
        return Problem(self.model, self.sources[sl], targets, self.z[sl], search.mse_to(targets), self.reference[sl],
                       self.ids[sl])


def problem(model, pp, device) -> Problem:
    """Encode the sources of ``pp`` (a :class:`vqtto.data.pairs.Pairs`) and compute each target's yardstick."""
    with torch.no_grad():
        z = model.encode(pp.sources.to(device))
    targets = pp.targets.to(device)
    ids = list(zip(pp.source_ids.tolist(), pp.target_ids.tolist()))
    return Problem(model, pp.sources.to(device), targets, z, search.mse_to(targets),
                   search.reference_losses(model, targets).cpu(), ids)


def reported_and_validation(dataset: str, pair_draw: int, n_pairs: int, pair_seed: int, val_pairs: int, val_seed: int):
    """The reported pairs (the first ``n_pairs`` of chapter 2's draw) and the validation pairs.

    Raises ValueError when the seeds coincide or a validation pair is also a reported pair.
    """
    from ..data import pairs

    if val_seed == pair_seed:
        raise ValueError(f"val_seed must differ from pair_seed={pair_seed}: settings are never tuned on reported pairs")
    rep = pairs.test_pairs(dataset, max(pair_draw, n_pairs), pair_seed)
    rep = pairs.Pairs(rep.sources[:n_pairs], rep.targets[:n_pairs], rep.source_ids[:n_pairs], rep.target_ids[:n_pairs])
    val = pairs.test_pairs(dataset, val_pairs, val_seed)
    shared = set(zip(rep.source_ids.tolist(), rep.target_ids.tolist())) & set(zip(val.source_ids.tolist(), val.target_ids.tolist()))
    if shared:
        raise ValueError(f"validation pairs {sorted(shared)} are also reported pairs: choose another val_seed")
    return rep, val


def run_method(method: str, pb: Problem, budget: float, setting: Mapping, chains: int, seed: int = 0, start=None,
        movable=None) -> search.SearchTrace:
    """Run ``method`` (a :mod:`vqtto.search.registry` id) on ``pb`` with ``budget`` equivalents per pair and
    ``setting``, through :mod:`vqtto.search.registry` (samplers with ``chains`` chains per pair)."""
    spec = search.registry.get(method)
    kw = dict(setting)
    if "seed" in search.registry.settings_of(method):
        kw.setdefault("seed", seed)
    if spec.chains:
        kw.setdefault("chains", chains)
    return search.registry.run(method, pb.model, pb.z, pb.loss, budget=budget, start=start, movable=movable, **kw)


def best_at(trace: search.SearchTrace, budgets: Sequence[float]) -> torch.Tensor:
    """``(B, len(budgets))``: each pair's best loss among the grids found within each budget."""
    out = torch.empty(len(trace), len(budgets), dtype=torch.float64)
    for i, (l, c) in enumerate(zip(trace.losses, trace.costs)):
        for j, b in enumerate(budgets):
            ok = c <= b + 1e-9
            out[i, j] = float(l[ok].min()) if bool(ok.any()) else float(l[0])
    return out


def time_to_target(trace: search.SearchTrace, reference: torch.Tensor) -> torch.Tensor:
    """``(B,)`` amortised seconds per pair until R <= 1 (batch wall time / B; inf where never)."""
    out = torch.full((len(trace),), math.inf, dtype=torch.float64)
    for i, (l, t) in enumerate(zip(trace.losses, trace.times)):
        hit = (l.double() <= reference[i].double()).nonzero()
        if hit.numel():
            out[i] = float(t[hit[0, 0]]) / len(trace)
    return out


def time_quantile(ttt: torch.Tensor, q: float) -> float:
    """The ``q`` quantile of times that may be inf (never reached): inf when it falls among those."""
    x = stats.quantile(torch.where(torch.isfinite(ttt), ttt, torch.full_like(ttt, 1e12)), q)
    return math.inf if x > 1e11 else x


# --- the best-known reference ---------------------------------------------------------------------

def model_digest(model) -> str:
    """A short sha256 of ``model``'s state (names and values): the model part of a cache key."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def method_defaults(method: str) -> dict:
    """``method``'s settings with their defaults (:func:`vqtto.search.registry.settings_of`), as a cache key
    part: a run cached under older defaults (e.g. a retuned :data:`vqtto.search.local.RELAXED_PHASE`) is
    not read back as if it were today's."""
    return {name: value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)
            for name, value in sorted(search.registry.settings_of(method).items())}


def best_known(pb: Problem, budget: float = 20000.0, method: str = search.DEFAULT, seed: int = 0,
               progress: bool = False) -> torch.Tensor:
    """``(B,)`` float64: the best loss one long run of ``method`` finds per pair, at ``budget`` equivalents.

    The reference ``L*`` of the gap ``L / L* - 1`` (:func:`gap_to_best_known`). It is computed once per
    model, pairs, budget, method, seed and the method's default settings (:func:`method_defaults`) and
    kept in the cache (:mod:`vqtto.cache`, kind ``best-known``).
    It is an upper bound on each pair's optimum, not the optimum.
    """
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 4):
        raise ValueError(f"budget must be a finite number >= 4 decoder-call equivalents, got {budget!r}")
    config = {"model": model_digest(pb.model), "pairs": [list(map(int, i)) for i in pb.ids], "budget": float(budget),
              "method": method, "seed": int(seed), "settings": method_defaults(method)}

    def build():
        trace = search.registry.run(method, pb.model, pb.z, pb.loss, budget=budget, seed=seed, progress=progress)
        return {"losses": trace.best_losses.double().cpu()}

    return cache.load_or_build("best-known", config, build)["losses"]


def gap_to_best_known(traces: Mapping[str, search.SearchTrace], long_run: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per method ``(n,)`` float64 ``L / L* - 1`` on the first ``n = len(long_run)`` pairs, where ``L*`` is
    the lowest loss any of ``traces`` or the long run found for the pair (so every gap is >= 0)."""
    n = len(long_run)
    losses = {m: tr.best_losses[:n].double().cpu() for m, tr in traces.items()}
    best = torch.stack([long_run.double(), *losses.values()]).min(0).values
    return {m: l / best - 1 for m, l in losses.items()}
