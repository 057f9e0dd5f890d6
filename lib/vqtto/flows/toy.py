"""The paper's toy experiment: its four configurations of flow, optimiser and step size."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..progress import progress_bar
from .gumbel import GumbelSoftmax, zipf_probs
from .architectures import FLOW_KINDS, build_flow
from .reverse_kl import FlowRun, train_reverse_kld


# --- the paper's toy experiment ----------------------------------------------------------------

@contextmanager
def one_thread():
    """Run the block with one CPU thread, then restore the thread count.

    The flows here work on small tensors: on 2 busy cores, two threads spend their time waiting on
    each other (a toy run or a code-grid flow step is 20x slower with 2 threads than with 1).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)



@dataclass(frozen=True)
class Configuration:
    """One of the paper's four settings of the toy experiment: base mean, target temperature, optimiser."""

    base_mean: float
    tau: float
    optimizer: str

    def label(self, number: int) -> str:
        """How configuration ``number`` is named in tables and figures, e.g. ``(1) mean 0, τ=0.1, Adam``."""
        opt = "Adam" if self.optimizer == "adam" else "SGD-Nesterov"
        return f"({number}) mean {self.base_mean:g}, τ={self.tau:g}, {opt}"


# The paper's four configurations (section 5.4), numbered as there.
CONFIGURATIONS = {
    1: Configuration(0.0, 0.1, "adam"),
    2: Configuration(5.0, 0.1, "sgd-nesterov"),
    3: Configuration(5.0, 1.0, "sgd-nesterov"),
    4: Configuration(0.0, 0.1, "sgd-nesterov"),
}


def toy_target(k: int, tau: float, zipf_s: float = 1.0) -> GumbelSoftmax:
    """The toy target: Gumbel-softmax over ``k`` classes, ``pi_i ~ 1/i^zipf_s``, temperature ``tau``.

    The paper gives neither ``k`` nor ``pi``; a Zipf law mimics the skewed code usage of a VQ-VAE.
    """
    return GumbelSoftmax(zipf_probs(k, zipf_s), tau)


def run_toy_experiment(configurations: list[int], ks: list[int], kinds: list[str], seeds: int, *, steps: int,
                       batch: int, n_blocks: int, hidden: int, lr_adam: float, lr_sgd: float, zipf_s: float = 1.0,
                       device: torch.device | str = "cpu", progress: bool = True) -> list[FlowRun]:
    """Every (configuration, k, kind, seed) run of the toy experiment, in that order; divergences recorded.

    Each run seeds torch with its seed before building its flow and trains with the learning rate of
    its configuration's optimiser, so a run's result does not depend on which other runs are made.
    The runs use one CPU thread (:func:`one_thread`).
    Each :class:`FlowRun` carries ``configuration``, ``k``, ``kind`` and ``seed`` in its ``meta``.
    """
    unknown = [c for c in configurations if c not in CONFIGURATIONS] + [kd for kd in kinds if kd not in FLOW_KINDS]
    if unknown:
        raise ValueError(f"configurations must be among {list(CONFIGURATIONS)} and kinds among {FLOW_KINDS}; "
                         f"got {unknown}")
    jobs = [(c, k, kind, s) for c in configurations for k in ks for kind in kinds for s in range(seeds)]
    runs = []
    with one_thread():
        for c, k, kind, seed in progress_bar(jobs, desc="toy flows", disable=not progress):
            cfg = CONFIGURATIONS[c]
            torch.manual_seed(seed)
            flow = build_flow(kind, toy_target(k, cfg.tau, zipf_s), n_blocks, hidden, cfg.base_mean).to(device)
            lr = lr_adam if cfg.optimizer == "adam" else lr_sgd
            runs.append(train_reverse_kld(flow, steps, batch, cfg.optimizer, lr, seed=seed,
                                          meta={"configuration": c, "k": k, "kind": kind, "seed": seed}))
    return runs


def select_runs(runs: list[FlowRun], **meta) -> list[FlowRun]:
    """The runs whose ``meta`` has every given value, e.g. ``select_runs(runs, k=4, kind="paper")``."""
    return [r for r in runs if all(r.meta[key] == value for key, value in meta.items())]
