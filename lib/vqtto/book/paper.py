"""The reference paper's own numbers, each with the section it comes from.

Chandratreya, Helman and Mecheri, *Exploring Test Time Optimization for Discrete Neural
Representation Learners*. Only numbers and short factual labels are kept here; every chapter and
the results page quote the paper through this module, so a number is written once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quote:
    """One number (or short fact) of the paper and where it stands."""

    value: object
    section: str
    note: str = ""


# Section 5.1: test reconstruction MSE gap from k = 512 to k = 40 (scale of the pixels not stated).
K_GAP = {
    "fashion-mnist": Quote(0.002, "5.1", "test reconstruction loss, k=512 -> 40; pixel scale not stated"),
    "cifar10": Quote(0.003, "5.1", "test reconstruction loss, k=512 -> 40; pixel scale not stated"),
}
K_GAP_SIZES = (512, 40)

# Section 5.2, Table 1: distinct grids before the first repeat, Algorithm 2, k = 512, 200 pairs.
# The Mini-ImageNet mean is printed garbled ("2A.47"): its tens digit cannot be read.
TABLE1 = {
    "cifar10": Quote({"mean": 5.97, "std": 5.00, "min": 2, "max": 34}, "5.2, Table 1"),
    "miniimagenet": Quote({"mean": "2?.47 (garbled)", "std": 23.12, "min": 2, "max": 103}, "5.2, Table 1",
                          "tens digit of the mean illegible"),
}
TABLE1_PAIRS = Quote(200, "5.2", "random source-target pairs")
ALPHA = Quote(0.1, "5.2", "step size of Algorithms 2 and 3")
ALL_SEARCHES_LOOP = Quote("200 of 200", "5.2", "every Algorithm 2 search ends by revisiting a grid")

# Section 5.4: the Gaussian -> Gumbel-softmax flow, four configurations, all unstable.
FLOW_BLOCKS = Quote(16, "5.4", "affine coupling blocks of the flow")
FLOW_UNSTABLE = Quote("unstable in all four configurations", "5.4, Figure 6")

# Section 4.2 / A.2: the claim that latent search is NP-hard.
NP_HARD = Quote("rewrites the search as an integer program", "4.2, A.2", "the reduction runs the wrong way")
