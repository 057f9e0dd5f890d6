"""Control for the relaxed phase's initial logits, tuned on reaching-target pairs: what do they do to chapter 8's tasks?

``scripts/tune_relaxed_local.py`` picks ``init_scale`` on pairs whose start (an unrelated source image) tells
the search nothing. Chapter 8's searches start from what the user has (the encoder of the evidence) or from
a prior's draws, and are judged against the truth, not by their own loss. This script runs, on validation
images only (seed 1, never a reported one) and the quick Fashion-MNIST models from the cache, each inpainting
and super-resolution task with the default search, with and without the PixelCNN in the energy (weight 0.01,
the weight chapter 8 chose for every task on 2026-12-06), at each ``--values`` of the setting ``--name`` (the relaxed phase's ``init_scale`` by default, or the local phase's
``batch``), and prints the median MSE
on the measured pixels and the share of images on which each value beats the first one.

    python scripts/check_relaxed_phase_on_tasks.py --pairs 48 --values 3 0.75 0.25
    python scripts/check_relaxed_phase_on_tasks.py --pairs 48 --name batch --values 48 16 8
"""

from __future__ import annotations

import argparse

import torch

from vqtto import params, tasks
from vqtto.book.chapters import constrained_tasks as chapter
from vqtto.tasks.pair_benchmark import reported_and_validation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48, help="validation images per task")
    ap.add_argument("--name", default="init_scale", help="the default search's setting to vary (e.g. init_scale, batch)")
    ap.add_argument("--values", type=float, nargs="+", default=[3.0, 0.75, 0.25], help="its values; the first is the reference")
    ap.add_argument("--weight", type=float, default=0.01, help="the PixelCNN's weight in the guided search's energy")
    args = ap.parse_args()
    ns = {name: p.default for name, p in chapter.PARAMS.items()}
    ns.update({"profile": "quick", "val_pairs": args.pairs})
    P = params.validate(ns, chapter.PARAMS)
    setup = chapter.load_setup(P, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    _, val = reported_and_validation(P.dataset, 96, 96, P.pair_seed, P.val_pairs, P.val_seed)
    dev = setup.model.codebook.device
    found = chapter.make_tasks(setup, val.targets.to(dev), val.sources.to(dev), val.targets.to(dev), P.masks,
                               P.factors, P.edit, P.edit_size)
    for name, task in found.items():
        if task.kind == "editing":
            continue
        mse, draws = {}, None
        for init in args.values:
            s = {args.name: int(init) if args.name in ("batch", "per_position") else init}
            guided = tasks.solve(setup.model, task, prior=setup.prior, weight=args.weight, draws=draws,
                                 samples=P.samples, chains=P.chains, budget=P.samples + P.budget, settings=s)
            draws = guided.draws  # every value searches from the same draws
            plain = tasks.solve(setup.model, task, budget=P.samples + P.budget, settings=s)
            mse[init] = {"guided": tasks.measure(task, guided.images)["mse"], "plain": tasks.measure(task, plain.images)["mse"]}
        ref = args.values[0]
        cells = [f"{args.name} {i:g}: " + ", ".join(
            f"{kind} {float(mse[i][kind].median()):.4f} (beats {ref:g} on {float((mse[i][kind] < mse[ref][kind]).double().mean()):.0%})"
            for kind in ("guided", "plain")) for i in args.values]
        print(f"{name}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
