"""One registry of the searches: id -> function, the arguments the id fixes, what it supports, and
how a budget in decoder-call equivalents becomes its arguments.

Every caller that picks a search by name (``tasks.solve``, the command line, chapter 3's table, the
benchmarks) goes through :data:`REGISTRY`, so a method id means the same search everywhere and a
new search is added in one place. :data:`DEFAULT` is the book's best measured method (chapter 3):
the default of :func:`vqtto.tasks.solve`, of ``vqtto search`` and of every chapter that solves a task.

    spec = registry.get("relaxed")
    trace = registry.run("relaxed", model, z_start, loss, budget=1000)      # 1,000 equivalents per pair
    registry.supporting(movable=True, radius=True)                        # ids that can do both
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .anneal import path_annealing, screened_annealing
from .continuous import gradient_descent
from .greedy import greedy_coordinate
from .local import RELAXED_PHASE, exact_local_search, relaxed_then_local
from .relaxed import relaxed_straight_through
from .restarts import restarted_straight_through
from .samplers import discrete_langevin, gibbs_with_gradients
from .straight import straight_through
from .surrogate import surrogate_screen
from .trace import FORWARD_BACKWARD

__all__ = ["DEFAULT", "REGISTRY", "MethodSpec", "check_settings", "get", "ids", "run", "settings_of", "supporting"]


def _rounds(budget: float) -> int:
    """Gradient rounds (one forward and backward pass each) that ``budget`` equivalents per pair buy."""
    return max(1, int(budget // FORWARD_BACKWARD))


def _steps(budget: float) -> dict:
    return {"max_steps": _rounds(budget), "max_unique": _rounds(budget)}


def _straight(budget: float) -> dict:
    return {"max_unique": _rounds(budget), "max_rounds": _rounds(budget)}


def _unique(budget: float) -> dict:
    return {"max_unique": _rounds(budget)}


def _alg1(budget: float) -> dict:
    return {"max_steps": _rounds(budget)}


def _budget(budget: float) -> dict:
    return {"budget": float(budget)}


@dataclass(frozen=True)
class MethodSpec:
    """One search as the library offers it by name.

    Attributes:
        id: the method id (also :attr:`SearchTrace.method` of what it returns, and the key of
            :data:`vqtto.book.plots.METHODS`).
        fn: the search function ``fn(model, z_start, loss, **kwargs) -> SearchTrace``.
        fixed: keyword arguments the id fixes (e.g. Algorithm 3's ``mask="single"``).
        budget_args: decoder-call equivalents per pair -> the keyword arguments that spend them.
        chains: runs several chains per pair (``chains=``, ``start=`` per chain).
        movable: can keep positions frozen (``movable=``).
        radius: can stay within a Hamming ball around its start (``radius=``).
        prior: can add a prior's NLL to its energy (``prior=``).
        summary: one line for help texts.
    """

    id: str
    fn: Callable
    budget_args: Callable[[float], dict]
    summary: str
    fixed: Mapping = field(default_factory=dict)
    chains: bool = False
    movable: bool = False
    radius: bool = False
    prior: bool = False

    def supports(self, feature: str) -> bool:
        """Whether this search can take ``feature`` (one of chains, movable, radius, prior)."""
        return bool(getattr(self, feature))


_SAMPLER = dict(chains=True, movable=True, radius=True, prior=True)

#: Every search offered by name, in the order help texts list them.
REGISTRY: dict[str, MethodSpec] = {s.id: s for s in (
    MethodSpec("alg1", gradient_descent, _alg1, "Algorithm 1: gradient descent on the continuous latents, then rounding"),
    MethodSpec("alg2", straight_through, _straight, "Algorithm 2: straight-through steps on every position",
               fixed={"mask": "all"}),
    MethodSpec("alg3", straight_through, _straight, "Algorithm 3: straight-through steps on one position at a time",
               fixed={"mask": "single"}),
    MethodSpec("top", straight_through, _straight, "straight-through steps on the top-m positions by gradient",
               fixed={"mask": "top"}),
    MethodSpec("alg2-tabu", straight_through, _straight, "Algorithm 2 with a tabu memory of visited grids",
               fixed={"mask": "all", "tabu": True}),
    MethodSpec("alg2-restarts", restarted_straight_through, _budget, "Algorithm 2 restarted from noisy starts"),
    MethodSpec("greedy", greedy_coordinate, _unique, "greedy coordinate search: decode the gradient's best moves"),
    MethodSpec("relaxed", relaxed_straight_through, _steps,
               "relaxed straight-through: Adam on per-position code logits",
               movable=True, radius=True, prior=True),
    MethodSpec("relaxed-annealed", relaxed_straight_through, _steps,
               "relaxed search annealed with Gumbel noise and a pull to the start (token-opt's schedule)",
               fixed={"tau_end": 0.1, "noise_until": 2 / 3, "pull": 0.05}, movable=True, radius=True, prior=True),
    MethodSpec("local", exact_local_search, _budget,
               "exact local search: screened single-position moves decoded exactly, the best taken",
               movable=True, radius=True, prior=True),
    MethodSpec("relaxed-local", relaxed_then_local, _budget,
               "the relaxed search for part of the budget, then the exact local search (the book's best)",
               movable=True, radius=True, prior=True),
    MethodSpec("surrogate", surrogate_screen, _budget,
               "surrogate screening of a few free positions: a fitted linear image model ranks every assignment",
               movable=True),
    MethodSpec("gwg", gibbs_with_gradients, _budget, "Gibbs-with-gradients, annealed", fixed={"anneal": True},
               **_SAMPLER),
    MethodSpec("dmala", discrete_langevin, _budget, "discrete Langevin (DMALA), annealed",
               fixed={"dist": "onehot", "anneal": True}, **_SAMPLER),
    MethodSpec("dmala-codebook", discrete_langevin, _budget, "DMALA with the codebook distance, annealed",
               fixed={"dist": "codebook", "anneal": True}, **_SAMPLER),
    MethodSpec("pas-sa", path_annealing, _budget, "path-auxiliary proposals with annealing", **_SAMPLER),
    MethodSpec("screened-sa", screened_annealing, _budget, "gradient-screened rescoring with annealing", **_SAMPLER),
)}

#: The book's best measured method: the default wherever a task is solved. Measured on validation pairs
#: (scripts/measure_local_search.py, quick models, 24 pairs, 1,000 equivalents): the relaxed search then
#: the exact local search reached R <= 1 on 24/24 pairs at k=512 and 22/24 at k=40, the relaxed search
#: alone on 19/24 and 16/24; chapter 3 compares them on the reported pairs.
DEFAULT = "relaxed-local"

_FEATURES = ("chains", "movable", "radius", "prior")


def ids() -> list[str]:
    """Every method id, in registry order."""
    return list(REGISTRY)


def get(method: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``method``; a ValueError listing the ids for an unknown one."""
    if method not in REGISTRY:
        raise ValueError(f"method must be one of {ids()}, got {method!r}")
    return REGISTRY[method]


def supporting(**features: bool) -> list[str]:
    """The ids of the methods that support every feature set True (chains, movable, radius, prior)."""
    unknown = set(features) - set(_FEATURES)
    if unknown:
        raise ValueError(f"features must be among {list(_FEATURES)}, got {sorted(unknown)}")
    return [m for m, spec in REGISTRY.items() if all(spec.supports(f) for f, want in features.items() if want)]


#: Settings a search hands on to the search it runs first (its ``**`` keywords): function -> (the inner
#: search, the names, the defaults it uses in place of the inner search's own). ``relaxed-local``'s
#: relaxed phase is tuned on validation pairs (:data:`~vqtto.search.local.RELAXED_PHASE`).
PASSED_ON = {relaxed_then_local: (relaxed_straight_through, ("lr", "tau", "init_scale", "lam"), RELAXED_PHASE)}


def settings_of(method: str) -> dict[str, object]:
    """The keyword settings a user may give ``method``, with their defaults: the function's keyword
    arguments less those the id fixes, the ones :func:`run` passes itself and ``progress``."""
    spec = get(method)
    skip = {"progress", "start", "movable", "radius", "prior", *spec.fixed}
    if spec.fn is straight_through and spec.fixed.get("mask") != "top":
        skip.add("m")  # only the top-m variant reads m
    out = {name: p.default for name, p in inspect.signature(spec.fn).parameters.items()
           if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip}
    if spec.fn in PASSED_ON:
        inner, names, defaults = PASSED_ON[spec.fn]
        params = inspect.signature(inner).parameters
        out.update({name: defaults.get(name, params[name].default) for name in names})
    return out


def run(method: str, model, z_start, loss, *, budget: float | None = None, movable=None, radius: int | None = None,
        prior=None, start=None, progress: bool = False, **settings):
    """Run ``method`` on B pairs and return its :class:`~vqtto.search.SearchTrace`.

    Args:
        model, z_start, loss: as every search (``z_start`` ``(B, D, h, w)``).
        budget: decoder-call equivalents per pair, turned into the method's own arguments
            (:attr:`MethodSpec.budget_args`); None: the method's defaults. An explicit setting wins.
        movable: ``(B, h, w)`` bool positions that may change (None: all).
        radius: Hamming radius around the start (None: none).
        prior: a prior energy term (:class:`~vqtto.search.GridPrior` or alike).
        start: ``(B, C, h, w)`` int64 per-chain start grids (chain methods only).
        settings: the method's own keywords (:func:`settings_of`).

    Raises:
        ValueError: an unknown method or setting, or a feature the method does not support (the
            message names the methods that do).
    """
    spec = get(method)
    allowed = settings_of(method)
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"method {method!r} does not take {unknown}; it takes {sorted(allowed)}")
    extra = {}
    for name, value, feature in (("movable", movable, "movable"), ("radius", radius, "radius"),
                                 ("prior", prior, "prior"), ("start", start, "chains")):
        if value is None:
            continue
        if not spec.supports(feature):
            raise ValueError(f"method {method!r} cannot take {name}=; methods that can: {supporting(**{feature: True})}")
        extra[name] = value
    args = {**(spec.budget_args(budget) if budget is not None else {}), **settings}
    return spec.fn(model, z_start, loss, **spec.fixed, **args, **extra, progress=progress)


class _SettingsPassed(Exception):
    """Raised by :class:`_ModelStandIn` when a search reaches its model: its settings were accepted."""


class _ModelStandIn:
    """What :func:`check_settings` hands a search instead of a model. Every search checks its
    arguments before it touches the model, so reaching ``codebook`` means they passed."""

    @property
    def codebook(self):
        raise _SettingsPassed


def check_settings(method: str, settings: Mapping) -> None:
    """Refuse ``settings`` that ``method``'s search would refuse (its own ValueError), running nothing:
    for refusing bad input before a model is loaded or trained."""
    import torch

    from .losses import mse_to

    allowed = settings_of(method)
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"method {method!r} does not take {unknown}; it takes {sorted(allowed)}")
    spec = get(method)
    try:
        spec.fn(_ModelStandIn(), torch.zeros(1, 1, 1, 1), mse_to(torch.zeros(1, 1, 1, 1)), **spec.fixed, **settings)
    except _SettingsPassed:
        return
    except TypeError as err:
        raise ValueError(str(err)) from None
