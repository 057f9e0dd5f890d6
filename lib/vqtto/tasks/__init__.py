"""Tasks: what the user has of an image, one way to solve it, and the answers that need no search.

- :mod:`~vqtto.tasks.problems`: :class:`Task` (what the user has: the evidence, its loss, the
  movable positions, a radius, a start) and its constructors :func:`reconstruct`,
  :func:`inpaint`, :func:`super_resolve`, :func:`edit`; :class:`Benchmark` (a task posed from
  known images, the truth kept apart) with :func:`inpainting`, :func:`super_resolution`,
  :func:`editing`; :func:`measure`, receptive fields and the movable positions of a mask.
- :mod:`~vqtto.tasks.solve`: :func:`solve`, the book's and the command line's one entry point,
  and the :class:`Solution` it returns.
- :mod:`~vqtto.tasks.guided`: the prior-guided search :func:`solve` runs when given a prior.
- :mod:`~vqtto.tasks.baselines`: answers without search (the encoder on the evidence, the nearest
  training images and their mean), the yardsticks a search must beat.
"""

from . import baselines as anchors, guided
from .problems import (CONSTRUCTORS, EDITS, KINDS, MASKS, Benchmark, Task, edit, editing, hidden_mask, inpaint,
    inpainting, measure, psnr, receptive_fields, reconstruct, super_resolution, super_resolve, touching_positions,
    upsample)
from .solve import DEFAULT_BUDGET, DEFAULT_WEIGHT, TUNED_WEIGHTS, Solution, check_solve, default_weight, prior_draws, solve, weights_agree

__all__ = ["CONSTRUCTORS", "EDITS", "KINDS", "MASKS", "Benchmark", "DEFAULT_BUDGET", "DEFAULT_WEIGHT", "Solution", "Task", "anchors",
           "TUNED_WEIGHTS", "check_solve", "default_weight", "edit", "editing", "guided", "hidden_mask", "inpaint", "inpainting", "measure", "prior_draws", "psnr",
           "receptive_fields", "reconstruct", "solve", "super_resolution", "super_resolve", "touching_positions",
           "upsample", "weights_agree"]
