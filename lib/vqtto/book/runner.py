"""Executing chapters with papermill: parameters per profile, the parameters cell from the schema,
a per-cell timeout, and progress lines while a chapter runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from ..models.profiles import check_profile


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


# --- chapters side by side ---------------------------------------------------------------------------

#: With several jobs, the order chapters are started in: chapter 1 first (it trains the VQ-VAEs every
#: later chapter loads), the two that need no VQ-VAE next, so that the other job is busy while
#: chapter 1 trains the first model, then the longest (chapter 8, which trains the priors chapter 6
#: and chapter 4 load). Chapters not named follow in book order.
START_ORDER = ("01_training", "07_hardness", "05_paper_flow", "08_constrained_tasks", "06_simplex_flow",
               "04_prior", "03_reaching_target", "02_gradient_search")
#: Chapters that read every other chapter's recorded result: started only when all others have ended.
READS_ALL = ("09_results",)


def default_jobs(profile: str) -> int:
    """Chapters to run at once by default: 2 for the CPU profiles on a machine with 2 or more cores, else 1.

    On a 2-core CPU two chapters with one thread each do about 1.35x the work of one chapter with two
    (training throughput measured side by side), and more where a chapter is bound by Python rather
    than by arithmetic. With a GPU, or the full profile, chapters run one after another.
    """
    import torch

    cpus = os.cpu_count() or 1
    return 2 if profile != "full" and cpus >= 2 and not torch.cuda.is_available() else 1


def start_order(names: list[str]) -> list[str]:
    """``names`` in the order :data:`START_ORDER` starts them, those reading all results last."""
    rank = {name: i for i, name in enumerate(START_ORDER)}
    first = sorted((n for n in names if n not in READS_ALL), key=lambda n: (rank.get(n, len(rank)), n))
    return first + [n for n in names if n in READS_ALL]


def chapter_command(chapter: str, profile: str, progress: bool, every: float) -> list[str]:
    """The command that executes one chapter in its own process."""
    return [sys.executable, "-m", "vqtto.book", "run", "--profile", profile, "--jobs", "1", "--every", str(every),
            *([] if progress else ["--quiet"]), chapter]


def run_side_by_side(names: list[str], profile: str, jobs: int, progress: bool = True, every: float = 15.0) -> int:
    """Execute ``names`` into ``_build/src`` with up to ``jobs`` chapters at once; returns the exit code.

    Each chapter runs in its own process (``python -m vqtto.book run <chapter>``) whose kernel gets
    ``cpu_count // jobs`` threads; their progress lines interleave, each prefixed with its chapter.
    Models are built once however the chapters interleave (the cache's per-key lock). A chapter in
    :data:`READS_ALL` starts only after every other has ended. When a chapter fails, the running
    ones are stopped and nothing more is started.
    """
    import subprocess
    import time

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "VQTTO_BOOK_CHILD": "1"}
    waiting, running = start_order(names), {}
    print(f"[vqtto.book] {len(names)} chapters, {jobs} at a time, {threads} thread(s) each", flush=True)
    while waiting or running:
        for chapter, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[chapter]
            if proc.returncode != 0:
                for other in running.values():
                    other.terminate()
                print(f"[vqtto.book] FAILED: chapter {chapter} (exit code {proc.returncode}); stopped "
                      f"{sorted(running) or 'no other chapter'}, did not start {waiting or 'any more'}", file=sys.stderr, flush=True)
                return 1
        while waiting and len(running) < jobs and not (waiting[0] in READS_ALL and running):
            chapter = waiting.pop(0)
            running[chapter] = subprocess.Popen(chapter_command(chapter, profile, progress, every), env=env)
        time.sleep(0.5)
    return 0


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
