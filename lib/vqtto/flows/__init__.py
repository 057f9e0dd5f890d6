"""Normalizing flows onto Gumbel-softmax relaxations (paper, section 5.4), and searching through them.

Three models, one trainer:

* :func:`paper_flow` - the paper's model, built from normflows' own classes: a diagonal Gaussian
  base in R^k, affine coupling blocks with MLP conditioners (each followed by a swap of the two
  halves), and the Gumbel-softmax formula as target. The flow's samples lie anywhere in R^k, the
  target's density only on the simplex. The paper does not say how its target read a point of R^k;
  two readings are built: as the point ``y`` itself (:class:`FormulaTarget`, NaN wherever a
  coordinate is negative) or as log-coordinates ``x = log y`` (:class:`LogOrthantTarget`, torch's
  ``ExpRelaxedCategorical`` density, finite everywhere). Both extend the formula off the simplex to
  a density that is invariant to rescaling ``y`` and integrates to infinity
  (:func:`scaled_reverse_kl` checks the invariance).
* :func:`simplex_flow` - the same coupling blocks in R^(k-1), followed by :class:`LogSoftmaxZero`,
  a bijection of R^(k-1) onto the open simplex (softmax of the logits ``(u, 0)``) with its exact
  log-determinant. Its samples are points of the simplex by construction, given by their
  log-coordinates, and the target is evaluated in log space (:class:`LogSimplexTarget`).
  :func:`untempered_simplex_flow` is its ablation without the temperature in the bijection.
* :class:`GridSimplexFlow` - one simplex flow per position of a code grid, sharing weights through
  a learned position embedding, for a product of per-position Gumbel-softmax targets
  (:func:`fit_code_categorical` fits the categorical they relax, :func:`fit_grid_flow` the flow).

:func:`train_reverse_kld` fits any of them by reverse KL and records divergence (a non-finite loss
or gradient ends the run, logged with its step and the layer where the first non-finite value
appeared) instead of raising, and along the run the log-scale of its samples (:func:`log_scale`);
:func:`run_toy_experiment` runs the paper's toy experiment (its four :data:`CONFIGURATIONS`) with it. :func:`pulse_search`
is the reduction to PULSE that the paper proposes: Gaussian ``z`` on a sphere -> flow -> relaxed
one-hot vectors per position -> mixture of code vectors -> decoder, optimised for a loss on the image.

Modules, one concept each: ``densities`` (the targets and the bijection onto the simplex),
``architectures`` (the flows built from coupling blocks), ``reverse_kl`` (training, divergence),
``toy`` (the paper's toy experiment), ``grid`` (one flow per grid position), ``pulse`` (PULSE
through it) and ``gumbel`` (the Gumbel-softmax density); every public name is re-exported here.
"""

from .densities import (FormulaTarget, LogOrthantTarget, LogSimplexTarget, LogSoftmaxZero)
from .architectures import (FLOW_KINDS, OPTIMIZERS, build_flow, paper_flow, simplex_flow, untempered_simplex_flow)
from .reverse_kl import (FlowRun, log_scale, make_optimizer, reverse_kld_parts, scaled_reverse_kl, train_reverse_kld,
    where_samples_fall)
from .toy import (CONFIGURATIONS, Configuration, one_thread, run_toy_experiment, select_runs, toy_target)
from .grid import (GridSimplexFlow, categorical_fit_error, code_grid_log_likelihood, fit_code_categorical,
    fit_grid_flow, flow_argmax_grids, sample_code_grids, seeded_grid_flow)
from .pulse import (PulseResult, pulse_search, sphere)
from .gumbel import GumbelSoftmax, zipf_probs
