"""Benchmarks: ``python -m vqtto.bench search``.

``search`` measures, in one run and on the same pairs, the batched straight-through search
(Algorithm 2, all pairs in one batch) against a loop that runs the same function on one pair at a
time, and the wall time of the whole Table 1 run (pairs, encoding, search, statistics) with the
quick-profile Fashion-MNIST k=512 model. It also counts the decoder calls the analytic repeat
count saves against decoding at every raw step, as the paper's pseudocode does.
"""

from __future__ import annotations

import argparse
import time

import torch

from . import artifacts, pairs, search
from .device import pick_device


def table1_run(model, dataset: str, n_pairs: int, seed: int, alpha: float, lam: int, device: torch.device) -> tuple[search.SearchTrace, float]:
    """Everything Table 1 needs, timed: draw pairs, encode, search, summarise."""
    t0 = time.perf_counter()
    pp = pairs.test_pairs(dataset, n_pairs, seed)
    with torch.no_grad():
        z = model.encode(pp.sources.to(device))
    trace = search.straight_through(model, z, search.mse_to(pp.targets.to(device)), alpha=alpha, lam=lam)
    n = trace.n_unique.double()
    _ = (n.mean(), n.std(), n.min(), n.max(), trace.fraction("loop"))
    return trace, time.perf_counter() - t0


def one_at_a_time(model, z: torch.Tensor, targets: torch.Tensor, alpha: float, lam: int) -> tuple[int, float]:
    """The same search run pair by pair; returns (distinct grids in all, seconds)."""
    t0 = time.perf_counter()
    unique = 0
    for i in range(z.shape[0]):
        tr = search.straight_through(model, z[i:i + 1], search.mse_to(targets[i:i + 1]), alpha=alpha, lam=lam)
        unique += int(tr.n_unique.sum())
    return unique, time.perf_counter() - t0


def bench_search(args) -> None:
    device = pick_device(args.device)
    tv = artifacts.vqvae(args.dataset, k=args.k, profile=args.profile, device=device)
    model = tv.model
    print(f"device={device}, torch threads={torch.get_num_threads()}, model: {args.dataset} k={args.k} ({args.profile})")
    table1_run(model, args.dataset, 4, args.seed, args.alpha, args.lam, device)  # warm-up

    trace, t_table1 = table1_run(model, args.dataset, args.pairs, args.seed, args.alpha, args.lam, device)
    batched_unique = int(trace.n_unique.sum())
    batched_rate = batched_unique / trace.seconds

    pp = pairs.test_pairs(args.dataset, args.pairs, args.seed)
    sub = slice(0, min(args.loop_pairs, args.pairs))
    with torch.no_grad():
        z = model.encode(pp.sources[sub].to(device))
    loop_unique, loop_seconds = one_at_a_time(model, z, pp.targets[sub].to(device), args.alpha, args.lam)
    loop_rate = loop_unique / loop_seconds

    raw = int(trace.total_raw_steps.sum())
    print(f"batched ({args.pairs} pairs in one batch):     {batched_unique} distinct grids in {trace.seconds:.2f} s "
          f"= {batched_rate:.0f} unique steps/s")
    print(f"one pair at a time ({sub.stop} pairs, same code): {loop_unique} distinct grids in {loop_seconds:.2f} s "
          f"= {loop_rate:.0f} unique steps/s")
    print(f"speed-up batched / one-at-a-time: {batched_rate / loop_rate:.1f}x (target >= 10x)")
    print(f"decoder calls: {trace.decoded_images} (one per distinct grid) instead of {raw + args.pairs} "
          f"(one per raw step, as in the paper's pseudocode): {(raw + args.pairs) / trace.decoded_images:.1f}x fewer")
    n = trace.n_unique.double()
    print(f"Table 1 ({args.dataset}, k={args.k}, {args.pairs} pairs, alpha={args.alpha}): mean {n.mean():.2f}, "
          f"std {n.std():.2f}, min {int(n.min())}, max {int(n.max())}, loops {trace.fraction('loop'):.0%}, "
          f"stalled {trace.fraction('stalled'):.0%}")
    print(f"Table 1 wall time (pairs + encode + search + statistics): {t_table1:.2f} s (target < 60 s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqtto.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("search", help="batched vs one-pair-at-a-time straight-through search, and Table 1 wall time")
    s.add_argument("--dataset", default="fashion-mnist")
    s.add_argument("--k", type=int, default=512)
    s.add_argument("--profile", default="quick")
    s.add_argument("--pairs", type=int, default=200)
    s.add_argument("--loop-pairs", type=int, default=50, help="pairs run one at a time (the rate is per distinct grid)")
    s.add_argument("--alpha", type=float, default=0.1)
    s.add_argument("--lam", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.what == "search":
        bench_search(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
