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
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ..models.profiles import PROFILES, check_profile

REPO = Path(__file__).resolve().parents[3]
BOOK = REPO / "book"
BUILD = REPO / "_build"
STAGE = BUILD / "src"


class ChapterFailed(RuntimeError):
    """A chapter raised while executing; the message names the chapter and the cell."""


class ChapterTimedOut(ChapterFailed):
    """A cell of a chapter ran past :func:`cell_timeout` (e.g. a kernel that stopped answering)."""


def chapter_names() -> list[str]:
    """Chapter notebook stems in book order (their file names sort in order)."""
    return sorted(p.stem for p in BOOK.glob("*.ipynb"))


def profile_params(profile: str, chapter: str) -> dict:
    """The papermill parameters of ``chapter`` under ``profile``."""
    check_profile(profile)
    sections = yaml.safe_load((REPO / "params" / f"{profile}.yaml").read_text()) or {}
    unknown = sorted(set(sections) - set(chapter_names()))
    if unknown:
        raise ValueError(f"params/{profile}.yaml has sections {unknown} that name no chapter; chapters: {chapter_names()}")
    return {**(sections.get(chapter) or {}), "profile": profile}


def schema(chapter: str) -> dict:
    """The parameter schema of ``chapter`` (``vqtto.book.chapters.<name>.PARAMS``, the stem without its number)."""
    import importlib

    return importlib.import_module(f"vqtto.book.chapters.{chapter.split('_', 1)[1]}").PARAMS


def sync_parameters(chapter: str, write: bool = True) -> bool:
    """Make ``chapter``'s parameters cell the one generated from its schema; True if it was stale.

    The schema (type, default, help) is the single source; the cell is derived from it.
    """
    import nbformat

    from ..params import parameters_cell

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


def cell_timeout() -> int | None:
    """Seconds one cell may run before the chapter is stopped: ``$VQTTO_CELL_TIMEOUT`` (None: no limit).

    The test suite sets it, so a kernel that stops answering fails a test instead of stalling CI.
    """
    text = os.environ.get("VQTTO_CELL_TIMEOUT", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"VQTTO_CELL_TIMEOUT must be a whole number of seconds >= 1, got {text!r}")
    return int(text)


def execute(chapter: str, profile: str, out_dir: Path = STAGE, overrides: dict | None = None,
            progress: bool = False, every: float = 15.0) -> Path:
    """Execute one chapter with papermill into ``out_dir/<chapter>.ipynb``; return that path.

    Args:
        progress: print each code cell as it starts, the kernel's output and the chapter's
            progress bars (at most one line per bar every ``every`` seconds) to this process's
            stdout/stderr. The executed notebook is the same either way.

    Raises:
        ChapterFailed: naming the chapter, the failing cell's number and the error.
        ChapterTimedOut: a cell ran longer than :func:`cell_timeout` seconds.
    """
    from nbclient.exceptions import CellTimeoutError

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if chapter not in chapter_names():
        raise ValueError(f"unknown chapter {chapter!r}; chapters: {chapter_names()}")
    parameters = {**profile_params(profile, chapter), **(overrides or {})}
    check_names(chapter, parameters)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{chapter}.ipynb"
    partial = out_dir / f".{chapter}.partial.ipynb"
    out.unlink(missing_ok=True)  # a stale copy must never be rendered as this run's result
    try:
        watch = {"engine_name": _progress_engine(), "stdout_file": sys.stdout, "stderr_file": sys.stderr,
                 "progress_label": chapter, "progress_every": every} if progress else {}
        pm.execute_notebook(str(BOOK / f"{chapter}.ipynb"), str(partial), parameters=parameters,
                            kernel_name="python3", cwd=str(BOOK), progress_bar=False, log_output=False,
                            execution_timeout=cell_timeout(), **watch)
    except CellTimeoutError as err:
        raise ChapterTimedOut(f"chapter {chapter}: a cell ran past {cell_timeout():g} s (VQTTO_CELL_TIMEOUT): {err}; "
                              f"the partly executed notebook is {partial}") from None
    except PapermillExecutionError as err:
        raise ChapterFailed(
            f"chapter {chapter} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
            f"the executed notebook with the traceback is {partial}"
        ) from None
    os.replace(partial, out)
    hide_injected_parameters(out)
    return out


def hide_injected_parameters(path: Path) -> bool:
    """Tag the parameters cell papermill injected into the executed notebook ``path`` ``remove-cell``, so
    the site does not show it (the chapter's own parameters cell, collapsed, and the parameters page say
    what was passed). Returns True when the file was changed; written atomically.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
            changed = True
    if changed:
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    return changed


# --- progress while a chapter runs ------------------------------------------------------------------

class BarLines:
    """Text lines from the tqdm progress-bar widgets a kernel updates.

    ``tqdm.auto`` in a kernel draws a widget: an HBox of [HTML (description and percentage),
    FloatProgress, HTML (counts, times, rates)]. :meth:`update` reads the widget states the
    notebook client keeps (comm id -> state) after each comm message. tqdm sets the bar, then the
    left text, then the right text, so a line is made when the right text changes: when ``every``
    seconds have passed since the bar's last line, or the bar has just completed; else None.
    """

    def __init__(self, every: float) -> None:
        self.every = every
        self.parent: dict[str, str] = {}  # child comm id -> HBox comm id
        self.last: dict[str, tuple[float, str]] = {}  # HBox comm id -> (time, text) of its last line
        self.finished: set[str] = set()  # HBoxes whose completed line was printed

    def update(self, comm_id: str, states: dict[str, dict], now: float) -> str | None:
        import html

        state = states.get(comm_id, {})
        children = state.get("children")
        if state.get("_model_name") == "HBoxModel" and isinstance(children, list) and len(children) == 3:
            for child in children:
                self.parent[str(child).replace("IPY_MODEL_", "")] = comm_id
        box = self.parent.get(comm_id)
        if box is None:
            return None
        ids = [str(c).replace("IPY_MODEL_", "") for c in states[box]["children"]]
        left, bar, right = (states.get(i, {}) for i in ids)
        if bar.get("_model_name") != "FloatProgressModel" or comm_id != ids[2] or box in self.finished:
            return None
        text = html.unescape(f"{left.get('value', '')} {right.get('value', '')}").replace("\u2007", " ").strip()
        done = bar.get("max") is not None and bar.get("value", 0) >= bar["max"]
        when, said = self.last.get(box, (-float("inf"), ""))
        if text == said or not (done or now - when >= self.every):
            return None
        if done:
            self.finished.add(box)
        self.last[box] = (now, text)
        return text


_ENGINE = "vqtto-progress"


def _progress_engine() -> str:
    """Register (once) the papermill engine that reports a chapter's progress; returns its name.

    Papermill calls the engine's ``execute_managed_notebook``, which runs the notebook with a
    client that prints each code cell as it starts and turns widget updates into :class:`BarLines`.
    """
    import time

    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger
    from traitlets import Float, Unicode

    if _ENGINE in papermill_engines._engines:
        return _ENGINE

    class Client(PapermillNotebookClient):
        progress_label = Unicode("")
        progress_every = Float(15.0)

        def say(self, text: str) -> None:
            print(f"[vqtto.book] {self.progress_label} | {text}", file=sys.stderr, flush=True)

        def execute_cell(self, cell, cell_index, *args, **kwargs):
            if cell.cell_type == "code":
                code = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"]
                self.say(f"cell {code.index(cell_index) + 1} of {len(code)}")
            return super().execute_cell(cell, cell_index, *args, **kwargs)

        def handle_comm_msg(self, outs, msg, cell_index) -> None:
            super().handle_comm_msg(outs, msg, cell_index)
            if not hasattr(self, "bars"):
                self.bars = BarLines(self.progress_every)
            line = self.bars.update(msg["content"].get("comm_id"), self.widget_state, time.monotonic())
            if line:
                self.say(line)

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs.pop("input_path", None)
            return Client(nb_man, kernel_name=kernel_name, startup_timeout=start_timeout, timeout=execution_timeout,
                          log=logger, **kwargs).execute()

    papermill_engines.register(_ENGINE, Engine)
    return _ENGINE


# --- the full profile on a CPU ---------------------------------------------------------------------

def _seconds_per_step(model, loss, batch: tuple, steps: int = 2) -> float:
    """Measured seconds of one Adam step of ``model`` on ``batch`` (after one warm-up step)."""
    import time

    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        loss(*batch).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def trained_models(profile: str) -> tuple[set, set]:
    """The (data set, k) of the VQ-VAEs and of the priors ``profile``'s chapters train, read from their parameters."""
    vqvaes, priors = set(), set()
    for chapter in chapter_names():
        p = {name: param.default for name, param in schema(chapter).items()}
        p.update(profile_params(profile, chapter))
        datasets = list(p.get("datasets") or [p.get("dataset", "fashion-mnist")])
        ks = [p[name] for name in ("k", "k_reference", "k_small", "k_grid") if isinstance(p.get(name), int)]
        ks += list(p.get("k_sweep") or [])
        vqvaes |= {(datasets[0], k) for k in ks} | {(d, p["k"]) for d in datasets if isinstance(p.get("k"), int)}
        if "prior" in chapter and isinstance(p.get("k"), int):
            priors.add((datasets[0], p["k"]))
        if isinstance(p.get("k_grid"), int):
            priors.add((datasets[0], p["k_grid"]))
    return vqvaes, priors


def cpu_estimate(profile: str = "full", train_images: int = 60_000) -> str:
    """How long ``profile``'s model training takes on this machine's CPU, from a few measured steps.

    Times two Adam steps (after a warm-up step) of the profile's VQ-VAE preset on a batch of
    Fashion-MNIST-sized images and of its PixelCNN preset on a batch of 7 x 7 grids, and
    multiplies by the steps of every VQ-VAE and prior the chapters train (:func:`trained_models`). A lower bound: larger images, the searches and the
    flows come on top. Returns the message to print.
    """
    import math

    import torch

    from ..models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from ..models.profiles import prior_preset, vqvae_preset
    from ..models.autoencoder import VQVAE, VQVAEConfig

    vq, pr = vqvae_preset(profile), prior_preset(profile)
    vq_batch, pr_batch = vq["train"]["batch_size"], pr["train"]["batch_size"]
    torch.manual_seed(0)
    vq_model = VQVAE(VQVAEConfig(k=512, **vq["model"]))
    vq_step = _seconds_per_step(vq_model, lambda x: vq_model.loss(x)["total"], (torch.rand(vq_batch, 1, 28, 28),))
    pr_model = GatedPixelCNN(PixelCNNConfig(k=512, **pr["model"]))
    pr_step = _seconds_per_step(pr_model, pr_model.loss, (torch.randint(512, (pr_batch, 7, 7)),))
    vq_steps = vq["train"]["epochs"] * math.ceil(train_images / vq_batch)
    pr_steps = pr["train"]["epochs"] * math.ceil(train_images / pr_batch)
    vqvaes, priors = trained_models(profile)
    hours = (len(vqvaes) * vq_steps * vq_step + len(priors) * pr_steps * pr_step) / 3600
    return (f"No GPU on this machine: the {profile} profile is meant for one. An estimate for this CPU, measured "
            f"from a few training steps: {vq_step:.2f} s per step of the {profile} VQ-VAE, {pr_step:.2f} s per step "
            f"of its PixelCNN; the chapters train {len(vqvaes)} VQ-VAEs x {vq_steps} steps and {len(priors)} priors x "
            f"{pr_steps} steps, so at least {hours:.1f} hours here (larger images, the searches and the flows come "
            f"on top). To run it on a GPU: on a machine with CUDA, `make book PROFILE={profile}` (or "
            f"`vqtto book run --profile {profile}`); see the README's 'Running on a GPU' and 'Running at scale'. "
            "Going on here.")


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
    for chapter in chapter_names():
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
    missing = [c for c in chapter_names() if not (stage / f"{c}.ipynb").exists()]
    if missing:
        raise ChapterFailed(f"chapters {missing} have not been executed; run `python -m vqtto.book run` first")
    for old in stage.glob("*.ipynb"):  # executed copies of chapters that were renamed or removed since
        if old.stem not in chapter_names():
            old.unlink()
    for executed in stage.glob("*.ipynb"):  # also chapters executed before the tag was added
        hide_injected_parameters(executed)
    stage_sources(stage)
    vendor_web_assets(stage / "_vendor" / "offline")
    shutil.copy2(Path(__file__).parent / "site_assets" / "vqtto.css", stage / "_vendor" / "vqtto.css")
    out = stage.parent / f"{stage.name}-site"
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(stage), "--path-output", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(out / "_build" / "html", html)
    return html


def add_commands(sub, formatter: type[argparse.HelpFormatter] = argparse.ArgumentDefaultsHelpFormatter) -> None:
    """Add ``run``, ``build``, ``sync-params`` and ``params`` to the subparsers ``sub`` (also ``vqtto book``,
    which passes its own help ``formatter``)."""
    run = sub.add_parser("run", help="execute chapters with papermill", formatter_class=formatter)
    run.add_argument("--profile", default="quick", choices=PROFILES, help="model presets and chapter parameters")
    run.add_argument("--quiet", action="store_true", help="print only which chapter runs, not its progress")
    run.add_argument("--every", type=float, default=15.0, help="seconds between two lines of one progress bar")
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
    return run_chapters(args.chapters or chapter_names(), args.profile, progress=not args.quiet, every=args.every)


def run_chapters(names: list[str], profile: str, progress: bool = True, every: float = 15.0) -> int:
    """Execute ``names`` in order into ``_build/src`` (removing the stale site first); returns the exit code."""
    import time

    import torch

    stale = BUILD / "html"
    if stale.exists():  # the old site no longer matches what is being executed
        shutil.rmtree(stale)
    if profile == "full" and not torch.cuda.is_available():
        print(f"[vqtto.book] {cpu_estimate(profile)}", flush=True)
    t_book = time.perf_counter()
    for chapter in names:
        print(f"[vqtto.book] executing {chapter} with profile {profile} ...", flush=True)
        t0 = time.perf_counter()
        try:
            execute(chapter, profile, progress=progress, every=every)
        except ChapterFailed as err:
            print(f"[vqtto.book] FAILED: {err}", file=sys.stderr)
            return 1
        print(f"[vqtto.book] {chapter} done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"[vqtto.book] all chapters executed in {time.perf_counter() - t_book:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqtto.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_commands(parser.add_subparsers(dest="cmd", required=True))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
