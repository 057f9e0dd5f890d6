"""One way to solve a task: :func:`solve`, used by the chapters and by ``vqtto search`` alike.

    task = tasks.inpaint(masked, hidden, model)               # what the user has
    found = tasks.solve(model, task)                           # the book's best method
    found = tasks.solve(model, task, prior=prior)              # with the PixelCNN in the search
    found.images, found.grids, found.losses                    # (B, C, H, W), (B, h, w), (B,)

Without a prior, :func:`solve` runs one search of :mod:`vqtto.search.registry` from the task's
start (the codes it names, the encoding of its source images, else the encoder's answer on what the
user has), keeping the frozen positions and the Hamming radius of the task. With a prior it runs the
prior-guided search (:func:`vqtto.tasks.guided.guided_search`): S completions from the prior, C
chains from the best of them, the energy ``L + weight * NLL / (h w)`` minimised from there.
Either way the whole cost is ``budget`` decoder-call equivalents per pair, draws included.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .. import search
from ..latent import decode_grids, encode_grids, encode_latents
from ..search import registry
from .guided import GUIDED, check_exemplars, energy_term, exemplar_draws, guided_search
from .problems import Benchmark, Task

__all__ = ["DEFAULT_BUDGET", "DEFAULT_WEIGHT", "TUNED_WEIGHTS", "Solution", "check_solve", "default_weight", "prior_draws", "solve", "weights_agree"]

#: Decoder-call equivalents per pair when none is given: chapter 3's largest budget.
DEFAULT_BUDGET = 1000.0
#: The prior's weight (task loss per nat per position) for a task kind chapter 8 does not tune:
#: 0.01, the weight it chose for every task it tunes (quick profile, k=512).
DEFAULT_WEIGHT = 0.01
#: The prior's weight per task kind that chapter 8 chose on its validation images (quick profile,
#: k=512, with the default search, 96 reported images): 0.01 for every inpainting mask and both
#: super-resolution factors; editing runs at the smallest weight of its grid. The chapter prints
#: whether its own run still agrees with this table (:func:`weights_agree`).
TUNED_WEIGHTS = {"inpainting": 0.01, "super-resolution": 0.01, "editing": 0.001}


def default_weight(kind: str) -> float:
    """The prior's weight for a task of ``kind`` when none is given: :data:`TUNED_WEIGHTS`, else :data:`DEFAULT_WEIGHT`."""
    return TUNED_WEIGHTS.get(kind, DEFAULT_WEIGHT)


def weights_agree(chosen: dict[str, float], kinds: dict[str, str]) -> str:
    """One line saying whether the weights a run chose (``chosen[task name]``, the task's kind in
    ``kinds[task name]``) agree with :data:`TUNED_WEIGHTS`, the defaults of ``solve`` and ``vqtto search``."""
    differ = [f"{name} chose {w:g}, the default is {default_weight(kinds[name]):g}"
              for name, w in chosen.items() if not math.isclose(w, default_weight(kinds[name]))]
    if not differ:
        return "these are the weights vqtto.tasks.TUNED_WEIGHTS gives solve and `vqtto search` by default"
    return "differs from vqtto.tasks.TUNED_WEIGHTS, the defaults of solve and `vqtto search`: " + "; ".join(differ)


@dataclass
class Solution:
    """What :func:`solve` found for B images (tensors on the CPU).

    Attributes:
        grids: ``(B, h, w)`` int64, the best grid of each image (under the energy, with a prior).
        images: ``(B, C, H, W)`` the decoded ``grids``.
        losses: ``(B,)`` the task loss of ``images``.
        start: ``(B, h, w)`` int64, the grid the search started from (the encoder's answer...).
        start_losses: ``(B,)`` the task loss of ``start``.
        final: ``(B, h, w)`` int64, where the search ended (``grids`` for the guided search).
        method: the registry id that searched.
        settings: everything that decided the answer (budget, weight, samples, the search's params).
        equivalents: decoder-call equivalents spent per pair (draws included).
        seconds: wall time per pair.
        decoded_images: images the decoder produced in all.
        trace: the :class:`~vqtto.search.SearchTrace` of a search without a prior, else None.
        chains: ``(B, C, h, w)`` each chain's best grid (guided search), else None.
        draws: ``(B, S, h, w)`` the prior's completions (guided search), else None.
    """

    grids: torch.Tensor
    images: torch.Tensor
    losses: torch.Tensor
    start: torch.Tensor
    start_losses: torch.Tensor
    final: torch.Tensor
    method: str
    settings: dict
    equivalents: float
    seconds: float
    decoded_images: int
    trace: search.SearchTrace | None = None
    chains: torch.Tensor | None = None
    draws: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.grids.shape[0]

    @staticmethod
    def join(parts: list["Solution"]) -> "Solution":
        """The solutions of consecutive shares of the images, as one (a distributed run's parts)."""
        if len(parts) == 1:
            return parts[0]
        n = [len(p) for p in parts]
        cat = lambda name: None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        trace = None if parts[0].trace is None else search.join_traces([p.trace for p in parts])
        return Solution(cat("grids"), cat("images"), cat("losses"), cat("start"), cat("start_losses"), cat("final"),
                        parts[0].method, parts[0].settings,
                        sum(p.equivalents * k for p, k in zip(parts, n)) / sum(n),
                        sum(p.seconds * k for p, k in zip(parts, n)) / sum(n),
                        sum(p.decoded_images for p in parts), trace, cat("chains"), cat("draws"))


def _number(name: str, value, *, integer: bool = False, minimum: float = 0.0, strict: bool = True) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} {'>' if strict else '>='} {minimum:g}, got {value!r}")


def check_solve(task, method: str, prior, weight, budget, samples: int, chains: int, model=None) -> Task:
    """Refuse what :func:`solve` cannot do, before any work; returns the :class:`Task` to solve.

    Raises:
        ValueError: naming the argument: an unknown method, one that cannot keep the task's frozen
            positions or its radius, a weight < 0 or without a prior, a budget <= 0 or one the
            prior's draws would use up, samples or chains < 1, more chains than samples, and (given
            ``model``) a prior for another codebook or grid.
    """
    task = task.task if isinstance(task, Benchmark) else task
    if not isinstance(task, Task):
        raise ValueError(f"task must be a vqtto.tasks.Task (or Benchmark), got {type(task).__name__}")
    spec = registry.get(method)
    _number("budget", budget)
    if task.movable is not None and not spec.movable:
        raise ValueError(f"method {method!r} cannot keep the task's frozen positions; methods that can: "
                         f"{registry.supporting(movable=True)}")
    if task.radius is not None and not spec.radius:
        raise ValueError(f"method {method!r} cannot stay within the task's radius {task.radius}; methods that can: "
                         f"{registry.supporting(radius=True)}")
    if prior is None:
        if weight is not None:
            raise ValueError(f"weight={weight!r} needs a prior (prior=...): it weighs the prior's NLL in the energy")
        return task
    if method not in GUIDED:
        raise ValueError(f"method {method!r} cannot search with a prior; methods that can: {list(GUIDED)}")
    if weight is not None:
        _number("weight", weight, strict=False)
    _number("samples", samples, integer=True, minimum=1, strict=False)
    _number("chains", chains, integer=True, minimum=1, strict=False)
    if chains > samples:
        raise ValueError(f"chains ({chains}) must be <= samples ({samples}): each chain starts at its own draw")
    if task.radius is None and budget <= samples:
        raise ValueError(f"budget ({budget:g} equivalents per pair) must exceed samples ({samples}): each draw costs one")
    if model is not None:
        grid = tuple(encode_grids(model, task.observed[:1]).shape[1:])
        energy_term(prior, 0.0 if weight is None else weight, model.codebook.shape[0], grid)
    return task


def _check_exemplars(task: Task, prior, draws, exemplars, samples: int) -> None:
    """Refuse exemplars that :func:`solve` cannot use, before any work (naming the argument)."""
    if exemplars is None:
        return
    if prior is None:
        raise ValueError("exemplars need a prior (prior=...): they replace the prior's draws, the prior weighs the "
                         "search's energy (weight=0 searches on the task loss alone)")
    if draws is not None:
        raise ValueError("give draws or exemplars, not both: both are the chains' starts")
    if task.radius is not None:
        raise ValueError(f"exemplars cannot start a task with a radius ({task.radius}): its chains start at the source")
    check_exemplars(task, exemplars, samples)


def _start(model, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """The start grids ``(B, h, w)`` and continuous start latents ``(B, D, h, w)`` of ``task`` (model's device)."""
    if task.start is not None:
        grids = task.start.to(model.codebook.device)
        with torch.no_grad():
            return grids, model.lookup(grids)
    images = task.source if task.source is not None else task.observed
    z = encode_latents(model, images)
    with torch.no_grad():
        return model.nearest(z), z


def prior_draws(model, prior, task: Task, samples: int = 32, seed: int | list[int] = 0) -> torch.Tensor:
    """``(B, S, h, w)`` completions of the task's movable positions drawn from ``prior`` (a PixelCNN, or a
    masked-token prior that conditions on every frozen code), from the start :func:`solve` would use.

    Pass them to :func:`solve` as ``draws=`` to start a search guided by one prior from another's
    draws (chapter 8 draws from the masked prior and weighs the energy with the PixelCNN).
    """
    from .guided import draw_completions

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    start, _ = _start(model, task)
    return draw_completions(model, prior, task, start, samples, seed=seed)


def solve(model, task: Task, *, method: str = registry.DEFAULT, prior=None, weight: float | None = None,
          budget: float = DEFAULT_BUDGET, samples: int = 32, chains: int = 4, seed: int | list[int] = 0,
          draws: torch.Tensor | None = None, exemplars: torch.Tensor | None = None, settings: dict | None = None,
          progress: bool = False) -> Solution:
    """Answer ``task`` with ``model``: the book's best method by default, with ``prior`` when given.

    Args:
        model: the VQ-VAE (a latent autoencoder, :mod:`vqtto.latent`).
        task: a :class:`~vqtto.tasks.Task` (or a :class:`~vqtto.tasks.Benchmark`, whose truth is never used).
        method: a :data:`vqtto.search.registry.REGISTRY` id; default :data:`vqtto.search.registry.DEFAULT`.
        prior: an unconditional PixelCNN over the model's codes, or a masked-token prior
            (:mod:`vqtto.models.masked`, which conditions its draws on every visible code); None: the
            task loss alone.
        weight: the prior's weight lambda >= 0 (loss per nat per position); None: :func:`default_weight`.
        budget: decoder-call equivalents per pair, the prior's draws included.
        samples, chains: the prior's draws per pair and the chains started from the best of them.
        seed: of the draws and of the searches that draw: an int, or one int per image (so that a
            share of the images draws what the whole batch draws, :func:`vqtto.search.chains.pair_seeds`).
        draws: ``(B, S, h, w)`` completions drawn before (to compare weights on the same draws).
        exemplars: ``(N, C, H, W)`` images (e.g. the training set): the draws are then the codes of the
            ``samples`` exemplars nearest to each image's evidence (:func:`~vqtto.tasks.guided.exemplar_draws`),
            not the prior's; the prior still weighs the search's energy. Chapter 8 compares the two.
        settings: the method's own settings (:func:`vqtto.search.registry.settings_of`).

    Raises:
        ValueError: before any work, naming the argument (see :func:`check_solve`).
    """
    settings = dict(settings or {})
    task = check_solve(task, method, prior, weight, budget, samples, chains, model)
    _check_exemplars(task, prior, draws, exemplars, samples)
    t0 = time.perf_counter()
    start, z = _start(model, task)
    if exemplars is not None:
        draws = exemplar_draws(model, task, start, exemplars, samples)
    if prior is None:
        if "seed" in registry.settings_of(method):
            settings.setdefault("seed", seed)
        trace = registry.run(method, model, z, task.loss, budget=budget, movable=task.movable, radius=task.radius,
                             progress=progress, **settings)
        grids, final = trace.best_indices.cpu(), trace.final_indices.cpu()
        spent, decoded, extra = trace.decoder_equivalents / len(task), trace.decoded_images, {}
        used = {"budget": budget, **trace.params}
    else:
        w = default_weight(task.kind) if weight is None else float(weight)
        drawn = 0 if task.radius is not None else samples
        found = guided_search(model, prior, task, start, weight=w, method=method, samples=samples, chains=chains,
                              budget=budget - drawn, seed=seed, draws=draws, **settings)
        grids, final, trace = found.grids.cpu(), found.grids.cpu(), None
        spent, extra = found.equivalents, {"chains": found.chains.cpu(), "draws": found.draws.cpu()}
        decoded = found.decoded_images
        used = {"budget": budget, "weight": w, "samples": samples, "chains": chains, "seed": seed,
                "draws": "exemplars" if exemplars is not None else "prior", **settings}
    images = decode_grids(model, grids)
    start_images = decode_grids(model, start)
    return Solution(grids, images, task.residual(images), start.cpu(), task.residual(start_images), final, method,
                    used, spent, (time.perf_counter() - t0) / len(task), decoded, trace, **extra)
