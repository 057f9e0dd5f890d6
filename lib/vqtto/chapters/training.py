"""Chapter 1, training VQ-VAEs (paper section 5.1, Figures 2 and 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .. import paper
from ..data import DATASETS
from ..params import Param, at_least, chapter_schema, each, one_of
from ..report import ChapterResult

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


@dataclass
class TrainingResult(ChapterResult):
    """What chapter 1 measured, with its verdict on the paper's k=512 -> 40 claim (section 5.1).

    Attributes:
        gap: test MSE of k minus that of k_reference.
        paper_gap: the paper's gap for this data set (None: the paper gives none).
        comparable: the run uses the paper's codebook sizes (512 -> 40), so its gap may be set
            beside the paper's at all.
        agrees: our gap is no larger than the paper's; None when not comparable or no paper number.
        gap_verdict: the sentence the chapter prints.
        restart_verdict: what the dead-code restart changed (None when not compared).
        table: the final-metrics table, one row per model.
    """

    CHAPTER: ClassVar[str] = "training"
    dataset: str
    k_reference: int
    k: int
    mse_reference: float
    mse_small: float
    gap: float
    paper_gap: float | None
    comparable: bool
    agrees: bool | None
    gap_verdict: str
    restart_verdict: str | None
    table: list[dict]


def model_rows(models: dict[str, object]) -> list[dict]:
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


def gap_agreement(dataset: str, gap: float, k_ref: int, k_small: int) -> tuple[bool, bool | None]:
    """``(comparable, agrees)``: whether our gap may be set beside the paper's, and if so whether it is no larger.

    The paper's number is for k=512 -> 40 only; any other pair of sizes is not comparable.
    """
    quote = paper.K_GAP.get(dataset)
    comparable = quote is not None and (k_ref, k_small) == paper.K_GAP_SIZES
    return comparable, (gap <= quote.value if comparable else None)


def gap_verdict(dataset: str, gap: float, k_ref: int, k_small: int) -> str:
    """A sentence comparing our k_ref -> k_small gap in test MSE with the paper's (section 5.1)."""
    quote = paper.K_GAP.get(dataset)
    comparable, agrees = gap_agreement(dataset, gap, k_ref, k_small)
    ours = f"Our gap from k={k_ref} to k={k_small} in test reconstruction MSE is {gap:+.4f}"
    if quote is None:
        return ours + f" (the paper reports no gap for {dataset})."
    if not comparable:
        big, small = paper.K_GAP_SIZES
        return ours + f"; the paper's {quote.value} is for k={big} -> {small}, so the two are not directly comparable."
    if agrees:
        return ours + (f"; the paper reports {quote.value}. We agree with its claim: shrinking the codebook 12.8-fold "
                       "costs at most as much as the paper says.")
    return ours + (f"; the paper reports {quote.value}. We do not reproduce its claim: the smaller codebook costs more "
                   "here than the paper reports.")


def training_result(profile: str, dataset: str, models: dict, k_ref: int, k_small: int, table: list[dict],
                    restart: str | None) -> TrainingResult:
    """The chapter's typed result from its trained models (labels ``"k=<k>"``) and its table."""
    mse_ref, mse_small = models[f"k={k_ref}"].test["recon"], models[f"k={k_small}"].test["recon"]
    gap = mse_small - mse_ref
    comparable, agrees = gap_agreement(dataset, gap, k_ref, k_small)
    quote = paper.K_GAP.get(dataset)
    return TrainingResult(profile=profile, dataset=dataset, k_reference=k_ref, k=k_small, mse_reference=mse_ref,
                          mse_small=mse_small, gap=gap, paper_gap=quote.value if quote else None,
                          comparable=comparable, agrees=agrees, gap_verdict=gap_verdict(dataset, gap, k_ref, k_small),
                          restart_verdict=restart, table=table)


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
