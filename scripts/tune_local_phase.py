"""Validation-pair tuning of the local phase of the book's default search: its batch and per_position.

``relaxed-local`` hands the second half of its budget to :func:`vqtto.search.exact_local_search`,
whose batch (single moves decoded per round, 48) and per_position (codes per position in the
candidate pool, 4) were set by hand. This script varies one at a time around those values, with the
relaxed phase at its tuned defaults (:data:`vqtto.search.local.RELAXED_PHASE`), on validation pairs
only (``reported_and_validation``'s second draw, seed 1), with the quick Fashion-MNIST VQ-VAEs from
the cache, at ``--budget`` decoder-call equivalents per pair, all pairs in one batch. It prints what
``tune_relaxed_local.py`` prints, and chooses the setting of lowest mean log R over both codebook
sizes (for a fixed reference per pair, a difference of mean log R is a difference of mean log gap
to any best-known loss, so the choice is the same as by the gap).

    python scripts/tune_local_phase.py --k 512 40 --pairs 96 --budget 1000
"""

from __future__ import annotations

import json
import time

import torch

from vqtto import search

from tune_relaxed_local import validation_problems

DEFAULTS = {"batch": 48, "per_position": 4}
AXES = {"batch": [8, 12, 16, 24, 32, 64, 96], "per_position": [1, 2, 8, 16]}


def score(pb, setting: dict, budget: float) -> dict:
    """One run of relaxed-local with the local phase at ``setting``: R statistics and seconds per pair."""
    t0 = time.perf_counter()
    tr = search.relaxed_then_local(pb.model, pb.z, pb.loss, budget=budget, **setting)
    seconds = (time.perf_counter() - t0) / len(tr)
    r = tr.best_losses.double().cpu() / pb.reference.double()
    return {"share_r1": float((r <= 1).double().mean()), "median_r": float(r.median()),
            "p90_r": float(torch.quantile(r, 0.9)), "mean_log_r": float(r.clamp_min(1e-12).log().mean()),
            "log_r": r.clamp_min(1e-12).log().tolist(), "seconds": seconds}


def main() -> None:
    args, problems = validation_problems(__doc__)
    settings = [dict(DEFAULTS)] + [{**DEFAULTS, name: v} for name, values in AXES.items() for v in values]
    rows = []
    for s in settings:
        for k, pb in problems.items():
            row = {"k": k, **s, **score(pb, s, args.budget)}
            rows.append(row)
            base = next(r for r in rows if r["k"] == k and all(r[n] == DEFAULTS[n] for n in DEFAULTS))
            diff = torch.tensor(row["log_r"]) - torch.tensor(base["log_r"])
            print(f"k={k:<4} batch={s['batch']:<3} per_position={s['per_position']:<3} R<=1 {row['share_r1']:>5.1%}  "
                  f"median R {row['median_r']:.3f}  p90 R {row['p90_r']:.3f}  mean log R {row['mean_log_r']:+.4f}  "
                  f"vs default {float(diff.mean()):+.4f} (SE {float(diff.std() / len(diff) ** 0.5):.4f})  "
                  f"{row['seconds']:.3f} s/pair", flush=True)

    def joint(setting: dict) -> float:
        return sum(r["mean_log_r"] for r in rows if all(r[n] == setting[n] for n in DEFAULTS))

    chosen = min(settings, key=joint)
    print(f"chosen (lowest mean log R over k={args.k}): {chosen}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": [{n: v for n, v in r.items() if n != "log_r"} for r in rows], "chosen": chosen,
                       "pairs": args.pairs, "budget": args.budget}, f, indent=1)


if __name__ == "__main__":
    main()
