"""Execute the book's chapters with papermill and build the site with jupyter-book.

``python -m vqtto.book run --profile quick``        execute every chapter into ``_build/src``
``python -m vqtto.book run --profile smoke 01_training``  one chapter
``python -m vqtto.book build``                      render ``_build/src`` into ``_build/html``
``python -m vqtto.book params quick 01_training``   the YAML to pass to papermill's ``-y``
``python -m vqtto.book sync-params``               regenerate the parameters cells from the schemas

Each chapter gets the parameters of its section in ``params/<profile>.yaml`` plus
``profile: <profile>``. Names a chapter does not declare in its parameters cell are refused
before anything runs (papermill itself would only warn). A failing chapter stops the run with
the chapter's name and the failing cell, and no site is built from a partial run.

While a chapter runs, ``run`` prints its progress (``--quiet`` turns it off; :func:`execute`
is quiet unless asked): each code cell as it starts ("cell n of N"), what the kernel prints, and
the chapter's own progress bars, which are widgets in the notebook, as text lines every
``--every`` seconds. Before a full-profile run on a machine without a GPU it prints how long
that is expected to take there (:func:`cpu_estimate`), and goes on.

Modules: ``runner`` (executing chapters), ``estimate`` (the full profile on a CPU), ``site``
(the site build); ``chapters/`` holds one module per chapter. The names
the commands and the tests use are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import yaml

from .runner import (BOOK, BUILD, BarLines, ChapterFailed, ChapterTimedOut, REPO, STAGE, cell_timeout, chapter_names,
    check_names, default_jobs, execute, hide_injected_parameters, profile_params, run_side_by_side, schema, start_order,
    sync_parameters)
from .estimate import (cpu_estimate, trained_models)
from .site import (MATHJAX, NPM_DIR, REQUIREJS, build_site, html_manager_spec, parameters_page, stage_sources,
    vendor_web_assets)
from ..models.profiles import PROFILES

__all__ = ["BOOK", "BUILD", "BarLines", "ChapterFailed", "ChapterTimedOut", "MATHJAX", "NPM_DIR", "REPO", "REQUIREJS", "STAGE",
           "add_commands", "build_site", "cell_timeout", "chapter_names", "check_names", "cpu_estimate", "default_jobs", "execute",
           "hide_injected_parameters", "html_manager_spec", "main", "parameters_page", "profile_params", "run_chapters",
           "run_command", "run_side_by_side", "schema", "stage_sources", "start_order", "sync_parameters", "trained_models", "vendor_web_assets"]


def add_commands(sub, formatter: type[argparse.HelpFormatter] = argparse.ArgumentDefaultsHelpFormatter) -> None:
    """Add ``run``, ``build``, ``sync-params`` and ``params`` to the subparsers ``sub`` (also ``vqtto book``,
    which passes its own help ``formatter``)."""
    run = sub.add_parser("run", help="execute chapters with papermill", formatter_class=formatter)
    run.add_argument("--profile", default="quick", choices=PROFILES, help="model presets and chapter parameters")
    run.add_argument("--quiet", action="store_true", help="print only which chapter runs, not its progress")
    run.add_argument("--every", type=float, default=15.0, help="seconds between two lines of one progress bar")
    run.add_argument("--jobs", type=_jobs, default=None,
                     help="chapters run at once, each in its own process (default: 2 for smoke and quick on a CPU "
                          "with 2 or more cores, else 1)")
    run.add_argument("chapters", nargs="*", default=None, help="chapter stems (none given: all, in order)")
    sub.add_parser("build", help="build the site from executed chapters", formatter_class=formatter)
    syn = sub.add_parser("sync-params", help="regenerate the chapters' parameters cells from their schemas",
                         formatter_class=formatter)
    syn.add_argument("chapters", nargs="*", default=None, help="chapter stems (none given: all)")
    prm = sub.add_parser("params", help="print a chapter's YAML parameters for papermill -y", formatter_class=formatter)
    prm.add_argument("profile", choices=PROFILES, help="one of the profiles")
    prm.add_argument("chapter", help="a chapter stem, e.g. 01_training")


def run_command(args) -> int:
    """Carry out a command parsed by :func:`add_commands`; returns the exit code."""
    if args.cmd == "params":
        print(yaml.safe_dump(profile_params(args.profile, args.chapter), sort_keys=False).strip())
        return 0
    if args.cmd == "sync-params":
        for chapter in args.chapters or chapter_names():
            print(f"[vqtto.book] {chapter}: {'rewritten' if sync_parameters(chapter) else 'up to date'}")
        return 0
    if args.cmd == "build":
        try:
            print(f"[vqtto.book] site built in {build_site()}")
        except ChapterFailed as err:
            print(f"[vqtto.book] FAILED: {err}", file=sys.stderr)
            return 1
        return 0
    return run_chapters(args.chapters or chapter_names(), args.profile, progress=not args.quiet, every=args.every,
                        jobs=args.jobs)


def _jobs(text: str) -> int:
    """``--jobs``: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be a whole number >= 1, got {text!r}")
    return int(text)


def run_chapters(names: list[str], profile: str, progress: bool = True, every: float = 15.0,
                 jobs: int | None = None) -> int:
    """Execute ``names`` into ``_build/src`` (removing the stale site first); returns the exit code.

    ``jobs``: chapters at once (None: :func:`default_jobs`); with 1 they run in order in this process,
    with more each in its own process (:func:`run_side_by_side`).
    """
    import time

    import torch

    stale = BUILD / "html"
    if stale.exists():  # the old site no longer matches what is being executed
        shutil.rmtree(stale)
    if profile == "full" and not torch.cuda.is_available() and not os.environ.get("VQTTO_BOOK_CHILD"):
        print(f"[vqtto.book] {cpu_estimate(profile)}", flush=True)
    jobs = default_jobs(profile) if jobs is None else jobs
    t_book = time.perf_counter()
    if jobs > 1 and len(names) > 1:
        code = run_side_by_side(names, profile, jobs, progress=progress, every=every)
        if code == 0:
            print(f"[vqtto.book] all chapters executed in {time.perf_counter() - t_book:.0f} s", flush=True)
        return code
    for chapter in names:
        print(f"[vqtto.book] executing {chapter} with profile {profile} ...", flush=True)
        t0 = time.perf_counter()
        try:
            execute(chapter, profile, progress=progress, every=every)
        except ChapterFailed as err:
            print(f"[vqtto.book] FAILED: {err}", file=sys.stderr)
            return 1
        print(f"[vqtto.book] {chapter} done in {time.perf_counter() - t0:.0f} s", flush=True)
    if not os.environ.get("VQTTO_BOOK_CHILD"):
        print(f"[vqtto.book] all chapters executed in {time.perf_counter() - t_book:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqtto.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_commands(parser.add_subparsers(dest="cmd", required=True))
    return run_command(parser.parse_args(argv))
