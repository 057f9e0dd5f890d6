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


def schema(chapter: str) -> dict:
    """The parameter schema of ``chapter`` (``vqtto.chapters.<name>.PARAMS``, the stem without its number)."""
    import importlib

    return importlib.import_module(f"vqtto.chapters.{chapter.split('_', 1)[1]}").PARAMS


def sync_parameters(chapter: str, write: bool = True) -> bool:
    """Make ``chapter``'s parameters cell the one generated from its schema; True if it was stale.

    The schema (type, default, help) is the single source; the cell is derived from it.
    """
    import nbformat

    from .params import parameters_cell

    path = BOOK / f"{chapter}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    want = parameters_cell(schema(chapter))
    stale = cell.source != want
    if stale and write:
        cell.source = want
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    return stale


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
    out.unlink(missing_ok=True)  # a stale copy must never be rendered as this run's result
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


def parameters_page() -> str:
    """Markdown for the front matter's page listing every chapter's parameters and profile values."""
    import papermill as pm

    lines = [
        "# Chapter parameters",
        "",
        "Every chapter is a papermill notebook. Re-run one with other values, for example",
        "",
        "```bash",
        ".venv/bin/papermill book/01_training.ipynb out.ipynb -p k 40 -p epochs 2",
        ".venv/bin/papermill book/02_gradient_search.ipynb out.ipynb -y \"$(.venv/bin/python -m vqtto.book params full 02_gradient_search)\"",
        "```",
        "",
        "Lists go through `-y`/`-f` YAML. Unknown names and out-of-range values stop the chapter at once",
        "with a message naming the parameter. The profiles' columns are the values `make book PROFILE=...`",
        "passes (`params/<profile>.yaml`); an empty cell means the notebook's default.",
        "",
    ]
    for chapter in chapters():
        declared = pm.inspect_notebook(str(BOOK / f"{chapter}.ipynb"))
        per_profile = {p: profile_params(p, chapter) for p in PROFILES}
        lines += [f"## `{chapter}`", "", "| parameter | default | meaning | smoke | full |", "|---|---|---|---|---|"]
        for name, info in declared.items():
            cells = [f"`{per_profile[p][name]}`" if name in per_profile[p] and name != "profile" else ""
                     for p in ("smoke", "full")]
            meaning = info["help"].replace("|", "\\|")
            lines.append(f"| `{name}` | `{info['default']}` | {meaning} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def stage_sources(stage: Path = STAGE) -> None:
    """Copy the book's Markdown pages, config and bibliography next to the executed notebooks,
    and write the generated parameters page."""
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "parameters.md").write_text(parameters_page())
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, stage / name)
    for path in BOOK.iterdir():
        if path.suffix in (".md", ".bib", ".png", ".svg"):
            shutil.copy2(path, stage / path.name)


# Front-end assets the site would otherwise load from CDNs. They are fetched from the npm
# registry at build time and copied to _static/offline/ through `html_static_path: [_vendor]`;
# they must not sit in a `_static/` folder of the book, which jupyter-book scans for scripts
# to inject into every page.
NPM_DIR = BUILD / "npm"
MATHJAX = "mathjax@3.2.2"
REQUIREJS = "requirejs@2.3.8"


def html_manager_spec() -> str:
    """The html-manager version range that matches the installed ipywidgets."""
    import ipywidgets

    return f"@jupyter-widgets/html-manager@{ipywidgets._version.__html_manager_version__}"


def vendor_web_assets(dest: Path = STAGE / "_vendor" / "offline") -> dict:
    """Install MathJax, RequireJS and the widgets html-manager with npm; copy what pages load.

    Returns the installed versions (also written to ``dest/versions.json``).
    """
    import json

    specs = [MATHJAX, REQUIREJS, html_manager_spec()]
    stamp = NPM_DIR / "specs.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != specs:
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(NPM_DIR), *specs],
                       check=True)
        stamp.write_text(json.dumps(specs))
    mods = NPM_DIR / "node_modules"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(mods / "mathjax" / "es5", dest / "mathjax" / "es5")
    shutil.copy2(mods / "requirejs" / "require.js", dest / "require.js")
    shutil.copy2(Path(__file__).parent / "site_assets" / "mathjax2-shim.js", dest / "mathjax2-shim.js")
    hm = mods / "@jupyter-widgets" / "html-manager" / "dist"
    (dest / "html-manager").mkdir()
    shutil.copy2(hm / "embed-amd.js", dest / "html-manager" / "embed-amd.js")
    # The manager's icon fonts are fetched relative to RequireJS's base URL (the page's folder),
    # at @jupyter-widgets/html-manager/dist/: `html_extra_path: [_vendor_extra]` puts them there.
    fonts = dest.parent.parent / "_vendor_extra" / "@jupyter-widgets" / "html-manager" / "dist"
    if fonts.exists():
        shutil.rmtree(fonts)
    fonts.mkdir(parents=True)
    for f in hm.iterdir():
        if f.suffix != ".js":
            shutil.copy2(f, fonts / f.name)
    versions = {name: json.loads((mods / name / "package.json").read_text())["version"]
                for name in ("mathjax", "requirejs", "@jupyter-widgets/html-manager")}
    (dest / "versions.json").write_text(json.dumps(versions, indent=2))
    return versions


def build_site(stage: Path = STAGE, html: Path = BUILD / "html") -> Path:
    """Render the executed chapters in ``stage`` into the static site ``html``; return ``html``.

    Refuses to build when a chapter has not been executed, so a partial run is never
    presented as a complete book.
    """
    missing = [c for c in chapters() if not (stage / f"{c}.ipynb").exists()]
    if missing:
        raise ChapterFailed(f"chapters {missing} have not been executed; run `python -m vqtto.book run` first")
    stage_sources(stage)
    vendor_web_assets(stage / "_vendor" / "offline")
    out = stage.parent / f"{stage.name}-site"
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(stage), "--path-output", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(out / "_build" / "html", html)
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqtto.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="execute chapters with papermill")
    run.add_argument("--profile", default="quick", choices=PROFILES)
    run.add_argument("chapters", nargs="*", help="chapter stems (default: all)")
    sub.add_parser("build", help="build the site from executed chapters")
    syn = sub.add_parser("sync-params", help="regenerate the chapters' parameters cells from their schemas")
    syn.add_argument("chapters", nargs="*", help="chapter stems (default: all)")
    prm = sub.add_parser("params", help="print a chapter's YAML parameters for papermill -y")
    prm.add_argument("profile", choices=PROFILES)
    prm.add_argument("chapter")
    args = parser.parse_args(argv)
    if args.cmd == "params":
        print(yaml.safe_dump(profile_params(args.profile, args.chapter), sort_keys=False).strip())
        return 0
    if args.cmd == "sync-params":
        for chapter in args.chapters or chapters():
            print(f"[vqtto.book] {chapter}: {'rewritten' if sync_parameters(chapter) else 'up to date'}")
        return 0
    if args.cmd == "build":
        try:
            print(f"[vqtto.book] site built in {build_site()}")
        except ChapterFailed as err:
            print(f"[vqtto.book] FAILED: {err}", file=sys.stderr)
            return 1
        return 0
    stale = BUILD / "html"
    if stale.exists():  # the old site no longer matches what is being executed
        shutil.rmtree(stale)
    import time

    t_book = time.perf_counter()
    for chapter in args.chapters or chapters():
        print(f"[vqtto.book] executing {chapter} with profile {args.profile} ...", flush=True)
        t0 = time.perf_counter()
        try:
            execute(chapter, args.profile)
        except ChapterFailed as err:
            print(f"[vqtto.book] FAILED: {err}", file=sys.stderr)
            return 1
        print(f"[vqtto.book] {chapter} done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"[vqtto.book] all chapters executed in {time.perf_counter() - t_book:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
