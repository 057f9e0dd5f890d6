"""Chapter 1, training VQ-VAEs (paper section 5.1, Figures 2 and 3)."""

from __future__ import annotations

from ..data import DATASETS
from ..params import Param, at_least, chapter_schema, each, one_of
from ..profiles import PROFILES

PARAMS = chapter_schema({
    "dataset": Param(str, "data set to train on", one_of(*DATASETS), default='fashion-mnist'),
    "k": Param(int, "the reduced codebook size, compared with k_reference (paper: 40)", at_least(2), default=40),
    "k_reference": Param(int, "the default codebook size (paper: 512)", at_least(2), default=512),
    "k_sweep": Param(list, "further codebook sizes to train, e.g. [256, 128, 64] (YAML list; -y/-f)", each(at_least(2)), default=[]),
    "epochs": Param(int, "training epochs; None takes the profile's", at_least(1), nullable=True, default=None),
    "dead_code_restart": Param(bool, "restart unused codes from encoder outputs during training", default=True),
    "compare_no_restart": Param(bool, "also train k_reference without restarts, to show what they do", default=True),
    "seed": Param(int, "random seed of initialisation and batch order", at_least(0), default=0),
    "n_show": Param(int, "test images shown in the reconstruction figure", at_least(1), default=10),
})

# The paper's reported gap in test reconstruction loss between k=512 and k=40 (section 5.1).
PAPER_GAP = {"fashion-mnist": 0.002, "cifar10": 0.003}


def summary_rows(models: dict[str, object]) -> list[dict]:
    """One row per trained model: k, restarts, final test MSE, codes used, perplexity, time."""
    rows = []
    for label, tv in models.items():
        rows.append({
            "model": label,
            "k": tv.k,
            "dead-code restart": tv.config["train"]["dead_code_restart"],
            "test recon MSE": round(tv.test["recon"], 5),
            "codes used": f"{tv.test['codes_used']} / {tv.k}",
            "perplexity": round(tv.test["perplexity"], 1),
            "train seconds": round(tv.history.seconds, 1),
        })
    return rows


def gap_verdict(dataset: str, mse_reference: float, mse_small: float, k_ref: int, k_small: int) -> str:
    """A sentence comparing our k_ref -> k_small gap in test MSE with the paper's."""
    gap = mse_small - mse_reference
    paper = PAPER_GAP.get(dataset)
    ours = f"Our gap from k={k_ref} to k={k_small} in test reconstruction MSE is {gap:+.4f}"
    if paper is None:
        return ours + f" (the paper reports no gap for {dataset})."
    if k_ref != 512 or k_small != 40:
        return ours + f"; the paper's {paper} is for k=512 -> 40, so the two are not directly comparable."
    if gap <= paper:
        return ours + f"; the paper reports {paper}. We agree with its claim: shrinking the codebook 12.8-fold costs at most as much as the paper says."
    return ours + f"; the paper reports {paper}. We do not reproduce its claim: the smaller codebook costs more here than the paper reports."


def restart_verdict(with_restart, without_restart) -> str:
    """A sentence comparing codebook usage and test MSE of the same k trained with and without restarts."""
    a, b = with_restart.test, without_restart.test
    k = with_restart.k
    usage = (f"With restarts the k={k} model uses {a['codes_used']} of its {k} codes on the test set "
             f"(perplexity {a['perplexity']:.0f}); without them {b['codes_used']} (perplexity {b['perplexity']:.0f}).")
    if a["recon"] <= b["recon"]:
        quality = f" The restarts also lower the test MSE ({b['recon']:.4f} -> {a['recon']:.4f})."
    else:
        quality = (f" Reconstruction does not profit at this training length: the test MSE is {a['recon']:.4f} "
                   f"with restarts and {b['recon']:.4f} without, so the unused codes cost the decoder nothing here; "
                   "what they change is the search space the later chapters explore, most of which would decode "
                   "from codes no image ever uses.")
    return usage + quality
