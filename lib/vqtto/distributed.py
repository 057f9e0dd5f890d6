"""torch.distributed for vqtto: the process group a run belongs to, and what its ranks share.

One process is the default and needs nothing from here: every helper is the identity when the
world size is 1, so the one-process path is the same code and gives bit-identical results.
Several processes are started by ``torchrun`` (no scheduler of our own); each reads the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) in :func:`init`, which joins the process group with ``nccl`` on CUDA and
``gloo`` on the CPU, with a timeout (``$VQTTO_DIST_TIMEOUT`` seconds, default 600) so that a
rank waiting for a dead peer fails instead of hanging.

What the ranks share:

- training (:class:`DataParallelStep`, used by :func:`vqtto.models.training.fit`): every rank draws the
  same permutation from the same seed, takes a contiguous share of each *global* batch
  (:func:`rank_share`) and steps through ``DistributedDataParallel``, its loss weighted so that the
  averaged gradient is the global batch's mean gradient; logged terms are averaged over the
  global batch (:meth:`DataParallelStep.terms`); evaluation runs on rank 0 and its numbers are
  broadcast (:func:`from_rank0`); the VQ-VAE's dead-code restarts sum the code counts
  (:func:`sum_`) and draw from the all-gathered encoder outputs (:func:`gather_rows`) with the
  same generator on every rank, so all ranks move the same codes to the same vectors;
- files (:func:`staged_cache`): each rank builds into a private staging folder; only when every
  rank has finished does rank 0 move its new files into the cache, so a failed run leaves no
  file under a real cache key;
- searches (:func:`sharded`): the pairs are split into contiguous shares, one per rank, and the
  traces are gathered and joined in pair order on rank 0 (searches are per-pair independent, so
  this equals the unsharded run);
- failures (:func:`report_failure`, :func:`spawn`): a rank that raises prints
  ``rank R failed: ...`` and exits non-zero at once, which makes its peers' collectives fail.

:func:`spawn` starts a small local group without torchrun (tests and ``vqtto.bench``).
"""

from __future__ import annotations

import os
import pickle
import queue as queue_mod
import shutil
import socket
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from . import cache as artifacts

TIMEOUT_ENV = "VQTTO_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0


class RankFailed(RuntimeError):
    """A rank of a multi-process run failed; the message starts with ``rank R failed``."""


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on rank 0, the rank that writes files and prints."""
        return self.rank == 0


def world() -> World:
    """The :class:`World` of the joined process group; ``World()`` (rank 0 of 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def launched_size() -> int:
    """The world size torchrun asked for (``$WORLD_SIZE``, 1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def timeout_seconds() -> float:
    """How long a collective may wait for the other ranks: ``$VQTTO_DIST_TIMEOUT`` or 600 s."""
    value = os.environ.get(TIMEOUT_ENV)
    return float(value) if value else DEFAULT_TIMEOUT


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes; returns this rank's :class:`World` and device.

    With ``WORLD_SIZE`` unset or 1 nothing happens (``device`` comes back unchanged). Otherwise
    the backend is ``nccl`` when ``device`` is CUDA (the rank then uses ``cuda:LOCAL_RANK``) and
    ``gloo`` on the CPU.
    """
    size = launched_size()
    if size <= 1 or dist.is_initialized():
        return world(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local} needs GPU {local} but this machine has {torch.cuda.device_count()}: "
                               "start at most one process per GPU (--nproc_per_node), or use --device cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return world(), device


def leave() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def report_failure(err: BaseException, stream=None) -> str:
    """Print ``rank R failed: <error>`` (with the traceback) for this rank; returns the line.

    A collective that failed because a peer died is said to be that, so the first failure in
    the output is the root cause.
    """
    w = world()
    line = f"rank {w.rank} failed: {type(err).__name__}: {err}"
    if isinstance(err, dist.DistError):
        line += " (a collective failed: another rank probably failed first, see its message)"
    stream = stream or sys.stderr
    traceback.print_exception(type(err), err, err.__traceback__, file=stream)
    print(f"vqtto: {line}", file=stream, flush=True)
    return line


# --- collectives that are the identity on one process ------------------------------------------

def rank_share(rows: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of ``rows`` ``(n,)`` (sizes differ by at most one); all of them on one process."""
    w = world()
    return rows if w.size == 1 else torch.tensor_split(rows, w.size)[w.rank]


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it."""
    if world().size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``(n_r, ...)`` tensor joined in rank order into ``(sum n_r, ...)`` on every rank."""
    w = world()
    if w.size == 1:
        return tensor
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(w.size)]
    dist.all_gather(counts, count)
    most = int(max(c.item() for c in counts))
    padded = tensor.new_zeros((most,) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts)])


def from_rank0(compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 only; every rank gets its (picklable) result."""
    if world().size == 1:
        return compute()
    box = [compute() if world().main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    if world().size == 1:
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    """Wait until every rank gets here."""
    if world().size > 1:
        any_rank(False)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# --- data-parallel training ----------------------------------------------------------------------

class _Loss(nn.Module):
    """A module whose forward is a loss function, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *batch: torch.Tensor):
        return self.loss_fn(*batch)


def check_split(n: int, batch_size: int, size: int | None = None) -> None:
    """Refuse a batch split that would give one of ``size`` ranks (default: this group's) no example in some step."""
    size = world().size if size is None else size
    last = n % batch_size or batch_size
    if size > 1 and min(batch_size, last, n) < size:
        raise ValueError(f"with {size} processes every global batch needs at least {size} examples, but the "
                         f"last batch of an epoch of {n} examples in batches of {batch_size} has {min(last, n)}; "
                         f"pick a batch size that leaves no smaller remainder")


class DataParallelStep:
    """One optimiser step's share of the global batch and its loss, on one or several processes.

    On one process :meth:`share` returns the global batch's rows and :meth:`loss` is
    ``loss_fn`` itself. On ``N`` processes each rank takes its contiguous share of the rows and
    computes the loss through ``DistributedDataParallel`` (buffers are not broadcast: the
    VQ-VAE's code counts stay per rank until :func:`sum_` adds them), weighted by
    ``N * n_rank / n_global`` so that DDP's mean over ranks is the global batch's mean gradient.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, device: torch.device) -> None:
        self.size = world().size
        self.loss_fn = loss_fn
        self.n_global = self.n_local = 0
        self.ddp = None
        if self.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            with warnings.catch_warnings():  # its successor, forward_sync_buffers=False, still syncs at init
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                self.ddp = DistributedDataParallel(_Loss(model, loss_fn), device_ids=ids, broadcast_buffers=False)

    def share(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows ``(n_global,)`` of a global batch -> this rank's rows ``(n_local,)``."""
        self.n_global = rows.shape[0]
        mine = rank_share(rows)
        self.n_local = mine.shape[0]
        return mine

    def loss(self, *batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, terms)`` of this rank's batch; the loss weighted for DDP's averaging."""
        if self.ddp is None:
            return self.loss_fn(*batch)
        loss, terms = self.ddp(*batch)
        return loss * (self.size * self.n_local / self.n_global), terms

    def terms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-rank means of the logged terms -> their means over the global batch (same on every rank)."""
        if self.size == 1 or not terms:
            return terms
        names = list(terms)
        stacked = torch.stack([terms[name].detach().float() for name in names]) * self.n_local
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return dict(zip(names, stacked / self.n_global))

    def close(self) -> None:
        """Drop the DDP wrapper (its gradient hooks go with it)."""
        self.ddp = None


# --- files ---------------------------------------------------------------------------------------

@contextmanager
def staged_cache():
    """Build into a private copy of the cache on every rank; on success rank 0 commits its new files.

    On one process this does nothing. On several, each rank points ``$VQTTO_CACHE`` at a staging
    folder inside the cache that links every file already there, so all ranks see the same hits
    and misses and build the same things in the same order. When the block ends on every rank
    without an error, rank 0 moves the files it wrote into the cache (each by an atomic rename);
    ranks > 0 drop theirs. When any rank fails, nothing reaches the cache.
    """
    w = world()
    if w.size == 1:
        yield
        return
    real = artifacts.cache_dir()
    real.mkdir(parents=True, exist_ok=True)
    barrier()  # every rank links the same files
    stage = Path(tempfile.mkdtemp(dir=real, prefix=f".stage-rank{w.rank}-"))
    for path in real.glob("*.artifact"):
        (stage / path.name).symlink_to(path.resolve())
    before = os.environ.get("VQTTO_CACHE")
    os.environ["VQTTO_CACHE"] = str(stage)
    try:
        yield
        barrier()  # every rank finished: the results are complete
        if w.main:
            for path in stage.glob("*.artifact"):
                if path.is_file() and not path.is_symlink():
                    os.replace(path, real / path.name)
        barrier()
    finally:
        if before is None:
            os.environ.pop("VQTTO_CACHE", None)
        else:
            os.environ["VQTTO_CACHE"] = before
        shutil.rmtree(stage, ignore_errors=True)


# --- searches ------------------------------------------------------------------------------------

def _to_cpu(result):
    """``result`` (a dataclass such as a trace or a solution) with its tensors moved to the CPU, for gathering."""
    if not is_dataclass(result):
        return result
    changes = {}
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            changes[f.name] = value.cpu()
        elif is_dataclass(value):
            changes[f.name] = _to_cpu(value)
    return replace(result, **changes) if changes else result


def sharded(search: Callable[[torch.Tensor], Any], n_pairs: int, join: Callable[[list], Any]):
    """Run ``search(rows)`` on this rank's contiguous share of the pair indices ``0 .. n_pairs-1``.

    Returns the result for all ``n_pairs`` pairs, in order, on rank 0 (on one process:
    ``search(arange(n_pairs))`` itself) and None on the other ranks; the ranks' results are put
    together by ``join`` (:func:`vqtto.search.join_traces` for a search returning a trace,
    ``Solution.join`` for :func:`vqtto.tasks.solve`). A rank whose share is empty (fewer pairs
    than ranks) searches nothing. For a search whose pairs are independent (Algorithms 1-3, the
    greedy and the relaxed search) the joined result equals the unsharded run's.
    """
    rows = torch.arange(n_pairs)
    w = world()
    if w.size == 1:
        return search(rows)
    mine = rank_share(rows)
    trace = _to_cpu(search(mine)) if mine.numel() else None
    gathered: list = [None] * w.size
    dist.all_gather_object(gathered, trace)
    if not w.main:
        return None
    return join([t for t in gathered if t is not None])


# --- a local group without torchrun --------------------------------------------------------------

def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(fn: Callable, rank: int, size: int, port: int, threads: int, device: str, args: tuple, results) -> None:
    """A spawned rank: set torchrun's variables, join the group (gloo on the CPU, nccl on CUDA), run ``fn``, report."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    code = 0
    try:
        init(torch.device(device))
        results.put((rank, True, pickle.dumps(fn(*args))))  # plain pickle: tensors by value, not by fd
        leave()
    except BaseException as err:  # noqa: BLE001 - whatever it was, the run failed on this rank
        code = 1
        results.put((rank, False, report_failure(err)))
    results.close()
    results.join_thread()
    if code:
        os._exit(code)  # at once: the peers' collectives then fail instead of waiting


def spawn(fn: Callable, size: int, *args: Any, timeout: float = 300.0, threads: int | None = None,
          device: str = "cpu") -> list:
    """Run ``fn(*args)`` on ``size`` new local processes of one group; returns each rank's result.

    ``fn`` must be importable (a module-level function) and its result picklable; it finds its
    rank in :func:`world`. Each process gets ``threads`` torch threads (default: the CPU cores
    shared out, at least 1), as torchrun does. ``device="cpu"`` joins the ranks with gloo,
    ``"cuda"`` with nccl, rank r on ``cuda:r``. ``size=1`` runs one process without a group.

    Raises:
        RankFailed: the first rank that failed, ``rank R failed: <error>``; or that the group did
            not finish within ``timeout`` seconds. The other ranks are stopped.
    """
    import multiprocessing as mp

    if size < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    threads = threads or max(1, (os.cpu_count() or 1) // size)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_child, args=(fn, r, size, port, threads, device, args, results)) for r in range(size)]
    for p in procs:
        p.start()
    done: dict[int, Any] = {}
    failure = None
    deadline = time.monotonic() + timeout
    while len(done) < size and failure is None:
        try:
            rank, ok, value = results.get(timeout=0.5)
        except queue_mod.Empty:
            dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in done]
            if dead:
                failure = f"rank {dead[0]} failed: its process exited with code {procs[dead[0]].exitcode}"
            elif time.monotonic() > deadline:
                failure = f"the {size} ranks did not finish within {timeout:.0f} s"
            continue
        if ok:
            done[rank] = pickle.loads(value)
        else:
            failure = value
    for p in procs:
        p.join(timeout=10 if failure is None else 2)
        if p.is_alive():
            p.terminate()
            p.join()
    if failure is not None:
        raise RankFailed(failure)
    return [done[r] for r in range(size)]
