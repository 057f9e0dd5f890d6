"""Execute the book's chapters with papermill and build the site with jupyter-book.

``python -m vqtto.book run --profile quick``        execute every chapter into ``_build/src``
``python -m vqtto.book run --profile smoke 01_training``  one chapter
``python -m vqtto.book build``                      render ``_build/src`` into ``_build/html``
``python -m vqtto.book params quick 01_training``   the YAML to pass to papermill's ``-y``

Each chapter gets the parameters of its section in ``params/<profile>.yaml`` plus
``profile: <profile>``. Names a chapter does not declare in its parameters cell are refused
before anything runs (papermill itself would only warn). A failing chapter stops the run with
the chapter's name and the failing cell, and no site is built from a partial run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .profiles import PROFILES, check_profile

REPO = Path(__file__).resolve().parents[2]
BOOK = REPO / "book"
BUILD = REPO / "_build"
STAGE = BUILD / "src"


class ChapterFailed(RuntimeError):
    """A chapter raised while executing; the message names the chapter and the cell."""


def chapters() -> list[str]:
    """Chapter notebook stems in book order (their file names sort in order)."""
    return sorted(p.stem for p in BOOK.glob("*.ipynb"))


def profile_params(profile: str, chapter: str) -> dict:
    """The papermill parameters of ``chapter`` under ``profile``."""
    check_profile(profile)
    sections = yaml.safe_load((REPO / "params" / f"{profile}.yaml").read_text()) or {}
    unknown = sorted(set(sections) - set(chapters()))
    if unknown:
        raise ValueError(f"params/{profile}.yaml has sections {unknown} that name no chapter; chapters: {chapters()}")
    return {**(sections.get(chapter) or {}), "profile": profile}


def check_names(chapter: str, parameters: dict) -> None:
    """Refuse parameter names that ``chapter``'s parameters cell does not declare."""
    import papermill as pm

    declared = pm.inspect_notebook(str(BOOK / f"{chapter}.ipynb"))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"chapter {chapter}: unknown parameter(s) {unknown}; it takes {sorted(declared)}")


def execute(chapter: str, profile: str, out_dir: Path = STAGE, overrides: dict | None = None) -> Path:
    """Execute one chapter with papermill into ``out_dir/<chapter>.ipynb``; return that path.

    Raises:
        ChapterFailed: naming the chapter, the failing cell's number and the error.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if chapter not in chapters():
        raise ValueError(f"unknown chapter {chapter!r}; chapters: {chapters()}")
    parameters = {**profile_params(profile, chapter), **(overrides or {})}
    check_names(chapter, parameters)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{chapter}.ipynb"
    partial = out_dir / f".{chapter}.partial.ipynb"
    try:
        pm.execute_notebook(str(BOOK / f"{chapter}.ipynb"), str(partial), parameters=parameters,
                            kernel_name="python3", cwd=str(BOOK), progress_bar=False, log_output=False)
    except PapermillExecutionError as err:
        raise ChapterFailed(
            f"chapter {chapter} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
            f"the executed notebook with the traceback is {partial}"
        ) from None
    os.replace(partial, out)
    return out


def stage_sources() -> None:
    """Copy the book's Markdown pages, config and bibliography next to the executed notebooks."""
    STAGE.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, STAGE / name)
    for path in BOOK.iterdir():
        if path.suffix in (".md", ".bib", ".png", ".svg"):
            shutil.copy2(path, STAGE / path.name)


def build_site() -> Path:
    """Render the staged, executed book into ``_build/html``; return that folder."""
    missing = [c for c in chapters() if not (STAGE / f"{c}.ipynb").exists()]
    if missing:
        raise ChapterFailed(f"chapters {missing} have not been executed; run `python -m vqtto.book run` first")
    stage_sources()
    subprocess.run([sys.executable, "-m", "jupyter_book", "build", str(STAGE), "--path-output", str(BUILD / "site")],
                   check=True)
    html = BUILD / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(BUILD / "site" / "_build" / "html", html)
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqtto.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="execute chapters with papermill")
    run.add_argument("--profile", default="quick", choices=PROFILES)
    run.add_argument("chapters", nargs="*", help="chapter stems (default: all)")
    sub.add_parser("build", help="build the site from executed chapters")
    prm = sub.add_parser("params", help="print a chapter's YAML parameters for papermill -y")
    prm.add_argument("profile", choices=PROFILES)
    prm.add_argument("chapter")
    args = parser.parse_args(argv)
    if args.cmd == "params":
        print(yaml.safe_dump(profile_params(args.profile, args.chapter), sort_keys=False).strip())
        return 0
    if args.cmd == "build":
        print(build_site())
        return 0
    for chapter in args.chapters or chapters():
        print(f"[vqtto.book] executing {chapter} with profile {args.profile} ...", flush=True)
        try:
            execute(chapter, args.profile)
        except ChapterFailed as err:
            print(f"[vqtto.book] FAILED: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
