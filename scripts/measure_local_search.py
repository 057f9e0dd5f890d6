"""Validation-pair measurement of the exact local search against the relaxed search and the samplers.

On chapter 3's validation pairs only (never the reported ones), with the quick Fashion-MNIST
VQ-VAEs from the cache (it refuses to train one), at ``--budget`` decoder-call equivalents per
pair: the share of pairs at R <= 1 (R = best loss / the loss of the target's own code), the
median R, the equivalents spent per pair and the seconds per pair with all pairs in one batch.

    python scripts/measure_local_search.py --k 512 40 --budget 1000
"""

from __future__ import annotations

import argparse
import time

import torch

from vqtto import cache as artifacts, models, search
from vqtto.tasks.pair_benchmark import problem, reported_and_validation


def cached_vqvae(k: int, device):
    config = models.vqvae_config("fashion-mnist", k, "quick")
    if not artifacts.path_for("vqvae", config).exists():
        raise SystemExit(f"the quick k={k} VQ-VAE is not in the cache {artifacts.cache_dir()}; train it first")
    return models.vqvae("fashion-mnist", k=k, profile="quick", device=device, progress=False).model


def methods(budget: int, shares, batch: int):
    rounds = budget // search.FORWARD_BACKWARD
    out = {"relaxed": lambda pb: search.relaxed_straight_through(pb.model, pb.z, pb.loss, max_steps=rounds,
                                                                 max_unique=rounds)}
    out["local"] = lambda pb: search.exact_local_search(pb.model, pb.z, pb.loss, budget=budget, batch=batch)
    for s in shares:
        out[f"relaxed-local share={s}"] = (lambda s: lambda pb: search.relaxed_then_local(
            pb.model, pb.z, pb.loss, budget=budget, share=s, batch=batch))(s)
    out["gwg (annealed, T=0.02, 4 chains)"] = lambda pb: search.gibbs_with_gradients(
        pb.model, pb.z, pb.loss, budget=budget, anneal=True, chains=4)
    out["screened-sa (m=16, 2 chains)"] = lambda pb: search.screened_annealing(
        pb.model, pb.z, pb.loss, budget=budget, m=16, chains=2)
    return out


def spent_per_pair(tr: search.SearchTrace) -> float:
    return float(tr.decoder_equivalents) / len(tr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[512, 40])
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--only", nargs="*", default=None, help="run only the methods whose name starts with one of these")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, val = reported_and_validation("fashion-mnist", 200, 48, 0, 24, 1)
    print(f"{'k':>4} {'method':<36} {'R<=1':>6} {'median R':>9} {'equiv/pair':>10} {'s/pair':>7}")
    for k in args.k:
        pb = problem(cached_vqvae(k, device), val, device)
        for name, run in methods(args.budget, args.shares, args.batch).items():
            if args.only and not any(name.startswith(o) for o in args.only):
                continue
            t0 = time.perf_counter()
            tr = run(pb)
            sec = (time.perf_counter() - t0) / len(tr)
            r = tr.best_losses.double().cpu() / pb.reference.double()
            print(f"{k:>4} {name:<36} {float((r <= 1).double().mean()):>6.0%} {float(r.median()):>9.3f} "
                  f"{spent_per_pair(tr):>10.0f} {sec:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
