"""Benchmarks: ``python -m vqtto.bench search``, ``vqvae``, ``prior`` and ``distributed``.

``vqvae`` trains, one after the other on the same data and for the same wall-clock budget, the
book's quick-profile VQ-VAE and a wide VQ-VAE of the paper's kind (256 channels, two residual
blocks, D=64, k=512, 7x7 codes), and prints their training throughput, the test MSE each reached
within the budget, and the decoder's forward+backward time over 200 code grids. A third row trains
the quick preset as the code before the channels-last change did (:func:`gauge_model`): its
images/s is the *machine gauge*, the reading the README's book times are scaled by.

``search`` measures, in one run and on the same pairs, the batched straight-through search
(Algorithm 2, all pairs in one batch) against a loop that runs the same function on one pair at a
time, and the wall time of the whole Table 1 run (pairs, encoding, search, statistics) with the
quick-profile Fashion-MNIST k=512 model. It also counts the decoder calls the analytic repeat
count saves against decoding at every raw step, as the paper's pseudocode does. Then (unless
``--no-samplers``) it runs each of chapter 3's samplers batched and one pair at a time, side by
side with the same code, budget and seeds, and prints the ratio of pairs per second and the
median and 90th-percentile time per pair to reach R <= 1 in the batched run.

``prior`` times, side by side on the quick PixelCNN's test grids, the two ways a search pays for its
prior: scoring candidate moves with a whole pass each (``log_prob``) against the pass from the rows
each candidate shares with its base grid (``log_prob_from``, what the local search uses), and drawing
completions position by position with ``logits_at`` against one vertical pass per row
(``row_context``, what the prior's draws use); it prints the grids per second of each, their ratio
and the largest difference of their numbers. Two more lines time, the same way, the head's logits
made in one pass over all candidate positions against :data:`~vqtto.models.pixelcnn.HEAD_BLOCK`
positions at a time, and the VQ-VAE decoding all candidates in one call against the evaluator's
default blocks (:data:`~vqtto.search.driver.DECODE_CHUNK`). The last line runs chapter 8's guided
search (:func:`vqtto.tasks.solve` with the PixelCNN, super-resolution x2, chapter 8's draws, chains and
budget) with the prior's pass of each grid kept for its energy, its first-order table and its
candidates' shared rows (:data:`~vqtto.search.energy.MEMO_GRIDS`) against a pass of its own for each.

``distributed`` runs, side by side, data-parallel VQ-VAE training (images/s) and a sharded
Algorithm 2 search (pairs/s) on 1 and 2 local processes (CPU with gloo, and the GPUs with nccl
when there are any), through :mod:`vqtto.distributed` as ``torchrun`` would run them.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from . import models, search
from .data import pairs
from .device import pick_device
from .models import pixelcnn
from .search import energy


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
    tv = models.vqvae(args.dataset, k=args.k, profile=args.profile, device=device)
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
    if args.samplers:
        bench_samplers(model, args, device)


#: The searches of chapter 3 the benchmark times, with the settings it runs them at: the book's best
#: (search.DEFAULT) first, beside Algorithm 2 with restarts, then the samplers.
SAMPLERS = {search.DEFAULT: {}, "alg2-restarts": {"noise": 0.5}, "relaxed": {}, "gwg": {"temperature": 0.02},
            "dmala": {"temperature": 0.02}, "pas-sa": {"temperature": 0.02}, "screened-sa": {"temperature": 0.02}}


def bench_samplers(model, args, device) -> None:
    """Each sampler batched against one pair at a time (same code, same seeds), and its time to R <= 1."""
    from . import stats
    from .tasks import pair_benchmark

    pp = pairs.test_pairs(args.dataset, args.sampler_pairs, args.seed)
    pb = pair_benchmark.problem(model, pp, device)
    n_loop = min(args.sampler_loop_pairs, args.sampler_pairs)
    print(f"samplers at {args.budget:g} decoder-call equivalents per pair, {args.chains} chains; batched over "
          f"{args.sampler_pairs} pairs vs one pair at a time over the first {n_loop}:")
    seeds = search.chains.pair_seeds(args.seed, args.sampler_pairs)  # pair i draws the same numbers either way
    for name, setting in SAMPLERS.items():
        tr = pair_benchmark.run_method(name, pb, args.budget, setting, args.chains, seed=seeds)
        t0 = time.perf_counter()
        for i in range(n_loop):
            pair_benchmark.run_method(name, pb.subset(slice(i, i + 1)), args.budget, setting, args.chains, seed=[seeds[i]])
        loop_rate = n_loop / (time.perf_counter() - t0)
        ttt = pair_benchmark.time_to_target(tr, pb.reference)
        r = tr.best_losses / pb.reference
        print(f"  {name:14s} batched {len(tr) / tr.seconds:7.1f} pairs/s, one at a time {loop_rate:6.1f} pairs/s: "
              f"{len(tr) / tr.seconds / loop_rate:5.1f}x (target >= 10x) | R <= 1 on {stats.share(r <= 1):.0%}, median R "
              f"{stats.median(r):.2f} | time to R <= 1 per pair (batched): median {pair_benchmark.time_quantile(ttt, 0.5):.3g} s, "
              f"90% {pair_benchmark.time_quantile(ttt, 0.9):.3g} s (inf: not reached)")


def _train_for(model, train, test, seconds: float, batch_size: int, lr: float, device) -> dict:
    """Train ``model`` for about ``seconds`` of wall time; images/s and final test MSE.

    The loop is the book's (:func:`vqtto.models.training.fit`) with the quick preset's dead-code restart
    every 50 steps, for both models, and no evaluation until the budget is spent.
    """
    from .models.training import DeadCodeRestarts, Loop, fit, vqvae_loss, vqvae_metrics

    loop = Loop(batch_size=batch_size, lr=lr, seed=0, epochs=None, seconds=seconds)
    run = fit(model, (train.images,), vqvae_loss(model), loop, device, on_step=DeadCodeRestarts(model, 50),
              progress=False)
    mse = vqvae_metrics(model, test.images, device)["recon"]
    return {"images/s": run.examples / run.seconds, "images seen": run.examples, "seconds": run.seconds, "test MSE": mse}


def _decoder_fb(model, n: int, device, repeats: int = 11) -> float:
    """Seconds for one forward+backward of the decoder over ``n`` code grids (the median of ``repeats``)."""
    h = w = 7
    z = torch.randn(n, model.cfg.embedding_dim, h, w, device=device, requires_grad=True)
    model.decode(z).sum().backward()  # warm-up
    times = []
    for _ in range(repeats):
        z.grad = None
        t0 = time.perf_counter()
        model.decode(z).sum().backward()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _three_term_nearest(quantizer):
    """``nearest`` as the quantiser computed it before the fused form: ``||z||^2 - 2 z.c + ||c||^2`` summed
    over ``(N, k)`` temporaries, then the argmin (the same indices; the machine gauge's workload)."""
    def nearest(z_e: torch.Tensor) -> torch.Tensor:
        b, d, h, w = z_e.shape
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, d)
        cb = quantizer.codebook.detach()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ cb.t() + cb.pow(2).sum(1)[None]
        return dist.argmin(1).view(b, h, w)
    return nearest


def gauge_model(model):
    """``model`` (a :class:`~vqtto.models.autoencoder.VQVAE`) turned back into the code that the README's
    throughput readings up to the channels-last change (2026-12-07) measured: weights in the default
    (contiguous) layout, the three-term distance and the decoder's last layer as oneDNN's transposed
    convolution (not :class:`~vqtto.models.autoencoder.SubPixelConvTranspose2d`'s form). Its images/s is
    the machine gauge the book's time target is stated against, so that a faster VQ-VAE does not move
    the yardstick."""
    from .models.autoencoder import SubPixelConvTranspose2d

    model.to(memory_format=torch.contiguous_format)
    model.quantizer.nearest = _three_term_nearest(model.quantizer)
    for layer in model.modules():
        if isinstance(layer, SubPixelConvTranspose2d):
            layer.forward = torch.nn.ConvTranspose2d.forward.__get__(layer)
    return model


def bench_vqvae(args) -> None:
    from . import data
    from .models.profiles import vqvae_preset
    from .models.autoencoder import VQVAE, VQVAEConfig

    device = pick_device(args.device)
    train = data.load("fashion-mnist", "train")
    test = data.load("fashion-mnist", "test", limit=args.test_images)
    quick = vqvae_preset("quick")
    gauge = "gauge: quick, old code"
    models = {
        "vqtto quick preset": VQVAEConfig(k=512, **quick["model"]),
        gauge: VQVAEConfig(k=512, **quick["model"]),
        "paper-kind (256 ch)": VQVAEConfig(k=512, hidden=256, embedding_dim=64, n_res=2),
    }
    print(f"device={device}, torch threads={torch.get_num_threads()}, budget {args.seconds:.0f} s of training "
          f"each, test MSE on {len(test)} Fashion-MNIST test images (pixels in [0, 1]). The gauge row trains the "
          "quick preset as the code before the channels-last change did (default layout, three-term distance): "
          "the machine speed the README's times are read against")
    rows = {}
    for name, cfg in models.items():
        torch.manual_seed(0)
        model = VQVAE(cfg)
        if name == gauge:
            model = gauge_model(model)
        model = model.to(device)
        n_params = sum(p.numel() for p in model.parameters())
        fb = _decoder_fb(model, 200, device)
        r = _train_for(model, train, test, args.seconds, quick["train"]["batch_size"], 2e-3, device)
        rows[name] = {**r, "parameters": n_params, "decoder f+b, 200 grids (s)": fb}
        print(f"{name:22s} {n_params / 1e6:5.2f}M params | {r['images/s']:7.0f} images/s | "
              f"{r['images seen']:6d} images in {r['seconds']:.0f} s | test MSE {r['test MSE']:.4f} | "
              f"decoder f+b over 200 grids {fb:.3f} s")
    a, b, g = rows["vqtto quick preset"], rows["paper-kind (256 ch)"], rows[gauge]
    fb_key = "decoder f+b, 200 grids (s)"
    print(f"machine gauge: {g['images/s']:.0f} images/s; the quick preset as the book trains it now "
          f"{a['images/s'] / g['images/s']:.2f}x the gauge (decoder f+b {g[fb_key] / a[fb_key]:.2f}x)")
    print(f"throughput ratio (vqtto / paper-kind): {a['images/s'] / b['images/s']:.1f}x; "
          f"decoder f+b ratio: {b['decoder f+b, 200 grids (s)'] / a['decoder f+b, 200 grids (s)']:.1f}x faster")
    print(f"within {args.seconds:.0f} s: vqtto test MSE {a['test MSE']:.4f} vs paper-kind {b['test MSE']:.4f} "
          f"(reference quality to reach: {args.reference_mse})")


# --- distributed ---------------------------------------------------------------------------------

def _rank_device(kind: str) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for ``"cuda"``, else the CPU."""
    from . import distributed

    return torch.device("cuda", distributed.world().local_rank) if kind == "cuda" else torch.device("cpu")


def _timed(work) -> tuple[object, float]:
    """``work()`` and its wall time, measured between two barriers (so the slowest rank counts)."""
    from . import distributed

    distributed.barrier()
    t0 = time.perf_counter()
    out = work()
    distributed.barrier()
    return out, time.perf_counter() - t0


def train_throughput(n_images: int, epochs: int, batch_size: int, kind: str) -> float:
    """One rank's part of data-parallel training of the quick-preset VQ-VAE (k=512) on the first
    ``n_images`` Fashion-MNIST images, ``batch_size`` the global batch; returns images/s."""
    from . import data
    from .models.profiles import vqvae_preset
    from .models.training import DeadCodeRestarts, Loop, fit, vqvae_loss
    from .models.autoencoder import VQVAE, VQVAEConfig

    device = _rank_device(kind)
    images = data.load("fashion-mnist", "train", limit=n_images).images
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(k=512, **vqvae_preset("quick")["model"]))
    loop = Loop(batch_size=batch_size, lr=2e-3, seed=0, epochs=epochs)
    curves, seconds = _timed(lambda: fit(model, (images,), vqvae_loss(model), loop, device,
                                         on_step=DeadCodeRestarts(model, 50), progress=False))
    return curves.examples / seconds


def search_throughput(n_pairs: int, max_unique: int, kind: str) -> tuple[float, bool]:
    """One rank's share of Algorithm 2 on ``n_pairs`` test pairs, sharded; returns pairs/s and whether
    the cached quick model was searched (else a random one of its architecture)."""
    from . import cache as artifacts, distributed
    from .models.profiles import vqvae_preset
    from .models.autoencoder import VQVAE, VQVAEConfig

    device = _rank_device(kind)
    cached = artifacts.path_for("vqvae", models.vqvae_config("fashion-mnist", 512, "quick")).exists()
    if cached:
        model = models.vqvae("fashion-mnist", k=512, profile="quick", device=device, progress=False).model
    else:
        torch.manual_seed(0)
        model = VQVAE(VQVAEConfig(k=512, **vqvae_preset("quick")["model"])).to(device).eval()
    pp = pairs.test_pairs("fashion-mnist", n_pairs, 0)
    loss = search.mse_to(pp.targets.to(device))

    def run(rows: torch.Tensor) -> search.SearchTrace:
        with torch.no_grad():
            z = model.encode(pp.sources[rows].to(device))
        return search.straight_through(model, z, loss.rows(rows.to(device)), max_unique=max_unique)

    _, seconds = _timed(lambda: distributed.sharded(run, n_pairs, search.join_traces))
    return n_pairs / seconds, cached


def bench_distributed(args) -> None:
    import os

    from . import distributed

    cores = os.cpu_count() or 1
    # (device, processes, torch threads per process): one process with one thread and with every core,
    # two processes sharing the cores, as torchrun shares them
    setups = sorted({("cpu", 1, 1), ("cpu", 1, cores), ("cpu", 2, max(1, cores // 2))})
    if torch.cuda.is_available():
        setups += [("cuda", n, max(1, cores // n)) for n in sorted({1, min(2, torch.cuda.device_count())})]
    print(f"{cores} CPU cores; training: quick-preset VQ-VAE k=512, {args.train_images} Fashion-MNIST images x "
          f"{args.epochs} epoch(s), global batch {args.batch_size}; search: Algorithm 2 on {args.pairs} test pairs, "
          f"max_unique {args.max_unique}")
    print(f"{'device':6s} {'processes':>9s} {'threads each':>12s} {'train images/s':>15s} {'search pairs/s':>15s}")
    searched = "the book's quick Fashion-MNIST k=512 VQ-VAE"
    for kind, size, threads in setups:
        common = {"threads": threads, "device": kind, "timeout": args.timeout}
        train = distributed.spawn(train_throughput, size, args.train_images, args.epochs, args.batch_size, kind,
                                  **common)[0]
        found, cached = distributed.spawn(search_throughput, size, args.pairs, args.max_unique, kind, **common)[0]
        if not cached:
            searched = "a random VQ-VAE of the quick architecture (the quick model is not in the cache)"
        print(f"{kind:6s} {size:9d} {threads:12d} {train:15.1f} {found:15.2f}")
    print(f"searched: {searched}")
    print(f"On {cores} CPU cores two processes will not be faster than one: they have no more compute than one "
          f"process with all {cores} cores, split it ({max(1, cores // 2)} thread(s) each) and add gradient "
          "all-reduces and gathers. Numbers on a machine shared with other work are noisy (there the threads of one "
          "process wait on each other, which can make one process look slower than two). The point here is that the "
          "distributed path runs and gives the same results (tests/test_distributed.py); the speed comes with one "
          "process per GPU, or per machine (README: 'Running at scale').")


def _per_second(work, n: int, repeats: int = 3) -> tuple[float, object]:
    work()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = work()
    return n * repeats / (time.perf_counter() - t0), out


@contextlib.contextmanager
def _setting(module, name: str, value):
    """Temporarily set ``module.name`` to ``value`` (e.g. the PixelCNN head's block size)."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _bench_decode_blocks(args, base: torch.Tensor, cands: torch.Tensor, which: torch.Tensor, device) -> None:
    """The VQ-VAE decoding a search's candidates in one call against the evaluator's default blocks."""
    model = models.vqvae(args.dataset, k=args.k, profile=args.profile, device=device).model.eval()
    with torch.no_grad():
        targets = model.decode(model.lookup(base.flip(0)))  # one unrelated target per base grid
    grouped = cands.view(base.shape[0], args.moves, *base.shape[1:])
    rows = torch.arange(base.shape[0], device=device)
    loss = search.mse_to(targets)
    default = search.Evaluator(model, loss, base.shape[0])
    whole = search.Evaluator(model, loss, base.shape[0], chunk=grouped[:, :, 0].numel())
    with torch.no_grad():
        block_rate, blocks = _per_second(lambda: default.losses(grouped, rows), cands.shape[0])
        one_rate, one = _per_second(lambda: whole.losses(grouped, rows), cands.shape[0])
    print(f"decoding one call over all candidates {one_rate:8.0f} grids/s | {default.chunk} grids per call "
          f"{block_rate:8.0f} grids/s | {block_rate / one_rate:.2f}x | largest difference "
          f"{float((one - blocks).abs().max()):.1e} (MSE)")


def _bench_guided(args, trained, device) -> None:
    """Chapter 8's guided search with the prior's pass kept per grid against a pass per question."""
    from . import data, tasks

    model, prior = trained.vqvae.model.eval(), trained.model.eval()
    images = data.load(args.dataset, "test").images[:args.search_images].float().to(device)
    task = tasks.super_resolution(images, 2)
    run = lambda: tasks.solve(model, task, prior=prior, weight=0.01, samples=32, chains=4, budget=632.0)  # noqa: E731
    with _setting(energy, "MEMO_GRIDS", 0):  # no pass kept: one per question
        apart_rate, apart = _per_second(run, images.shape[0], repeats=1)
    kept_rate, kept = _per_second(run, images.shape[0], repeats=1)
    same = float((apart.grids == kept.grids).flatten(1).all(1).float().mean())
    print(f"guided   a pass per question {apart_rate:8.1f} images/s | one kept pass per grid {kept_rate:8.1f} images/s | "
          f"{kept_rate / apart_rate:.2f}x | same answer on {100 * same:.0f}% of {images.shape[0]} images "
          f"(super-resolution x2, {kept.settings['budget']:g} equivalents)")


def bench_prior(args) -> None:
    """Candidate scoring and drawing with the PixelCNN, the whole-pass way against the row-reusing one."""
    device = pick_device(args.device)
    trained = models.prior(args.dataset, k=args.k, profile=args.profile, device=device)
    prior = trained.model.eval()
    base = trained.test_codes.indices[:args.bases].to(device)
    n, (h, w) = base.shape[0], base.shape[1:]
    gen = torch.Generator().manual_seed(0)
    which = torch.arange(n, device=device).repeat_interleave(args.moves)
    cands = base[which].clone()
    pos = torch.randint(h * w, (cands.shape[0],), generator=gen).to(device)
    cands.view(cands.shape[0], -1)[torch.arange(cands.shape[0], device=device), pos] = torch.randint(
        args.k, (cands.shape[0],), generator=gen).to(device)
    print(f"device={device}, torch threads={torch.get_num_threads()}, PixelCNN {args.dataset} k={args.k} ({args.profile}), "
          f"{n} base grids x {args.moves} single moves at random positions")
    with torch.no_grad():
        full_rate, full = _per_second(lambda: prior.log_prob(cands), cands.shape[0])
        fast_rate, fast = _per_second(lambda: prior.log_prob_from(cands, prior.row_cache(base), which), cands.shape[0])
        print(f"scoring  whole pass {full_rate:8.0f} grids/s | from the base's rows {fast_rate:8.0f} grids/s | "
              f"{fast_rate / full_rate:.2f}x | largest difference {float((full - fast).abs().max()):.1e} nats")
        blocks_rate, _ = _per_second(lambda: prior.log_prob(cands), cands.shape[0])  # HEAD_BLOCK positions at a time
        with _setting(pixelcnn, "HEAD_BLOCK", cands.numel()):
            one_rate, one = _per_second(lambda: prior.log_prob(cands), cands.shape[0])
        print(f"head     one pass over all positions {one_rate:8.0f} grids/s | {pixelcnn.HEAD_BLOCK} positions at a time "
              f"{blocks_rate:8.0f} grids/s | {blocks_rate / one_rate:.2f}x | largest difference "
              f"{float((full - one).abs().max()):.1e} nats")
        _bench_decode_blocks(args, base, cands, which, device)
        free = torch.ones(h, w, dtype=torch.bool, device=device)
        free[: h // 2] = False  # complete the lower half, as inpainting does
        starts = base[: args.draws]

        def per_position():
            z = starts.clone()
            for p in free.flatten().nonzero().flatten().tolist():
                r, c = divmod(p, w)
                z[:, r, c] = prior.logits_at(z, r, c).argmax(1)
            return z

        def per_row():
            z = starts.clone()
            for r in range(h):
                if not bool(free[r].any()):
                    continue
                context = prior.row_context(z, r)
                for c in free[r].nonzero().flatten().tolist():
                    z[:, r, c] = prior.logits_in_row(z, r, c, context).argmax(1)
            return z

        old_rate, old = _per_second(per_position, starts.shape[0])
        new_rate, new = _per_second(per_row, starts.shape[0])
        print(f"drawing  per position {old_rate:8.0f} grids/s | one vertical pass per row {new_rate:8.0f} grids/s | "
              f"{new_rate / old_rate:.2f}x | same completions (greedy): {bool(torch.equal(old, new))}")
    _bench_guided(args, trained, device)


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
    s.add_argument("--samplers", action=argparse.BooleanOptionalAction, default=True,
                   help="also time chapter 3's samplers, batched vs one pair at a time, and their time to R <= 1")
    s.add_argument("--budget", type=float, default=1000.0, help="samplers: decoder-call equivalents per pair (chapter 3's budget)")
    s.add_argument("--chains", type=int, default=2, help="samplers: chains per pair")
    s.add_argument("--sampler-pairs", type=int, default=64, help="samplers: pairs in the batched run")
    s.add_argument("--sampler-loop-pairs", type=int, default=8, help="samplers: pairs run one at a time")
    v = sub.add_parser("vqvae", help="training speed and quality of the book's VQ-VAE against a wide one of the paper's kind")
    v.add_argument("--seconds", type=float, default=108.0, help="training budget per model (default: a fifth of 9 minutes)")
    v.add_argument("--test-images", type=int, default=10000)
    v.add_argument("--reference-mse", type=float, default=0.0162,
                   help="test MSE a public VQ-VAE of the paper's kind reached after one 9-minute epoch on 2 CPU cores")
    v.add_argument("--device", default="auto")
    q = sub.add_parser("prior", help="PixelCNN candidate scoring and drawing: whole passes against reusing the rows above")
    q.add_argument("--dataset", default="fashion-mnist")
    q.add_argument("--k", type=int, default=512)
    q.add_argument("--profile", default="quick")
    q.add_argument("--bases", type=int, default=48, help="base grids (real test codes)")
    q.add_argument("--moves", type=int, default=48, help="single-move candidates per base grid (the local search's batch)")
    q.add_argument("--draws", type=int, default=384, help="grids completed at once (12 images x 32 draws)")
    q.add_argument("--search-images", type=int, default=16, help="images of the guided search (super-resolution x2)")
    q.add_argument("--device", default="auto")
    d = sub.add_parser("distributed", help="training images/s and search pairs/s on 1 and 2 processes (CPU, and GPUs)")
    d.add_argument("--train-images", type=int, default=4096)
    d.add_argument("--epochs", type=int, default=1)
    d.add_argument("--batch-size", type=int, default=128, help="global batch (split across the processes)")
    d.add_argument("--pairs", type=int, default=64)
    d.add_argument("--max-unique", type=int, default=100)
    d.add_argument("--timeout", type=float, default=600.0, help="seconds each group may take")
    args = parser.parse_args(argv)
    if args.what == "distributed":
        bench_distributed(args)
    if args.what == "search":
        bench_search(args)
    elif args.what == "vqvae":
        bench_vqvae(args)
    elif args.what == "prior":
        bench_prior(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
