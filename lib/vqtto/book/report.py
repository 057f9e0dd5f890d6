"""Tables in the executed notebooks, and the measured results every chapter records.

:func:`record` writes one chapter's typed result (a :class:`ChapterResult` subclass, verdicts
decided in the chapter module) to ``<results dir>/<chapter>.json`` atomically; :func:`load_result` reads
it back as the same type. The book's results page is generated from those files, never typed.
The folder is ``$VQTTO_RESULTS`` when set, else ``_build/results`` at the repository root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence


def __getattr__(name: str):
    # IPython is needed only where Markdown is shown (the notebooks), not to compute or record results.
    if name == "Markdown":
        from IPython.display import Markdown

        return Markdown
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def markdown_table(rows: Sequence[dict[str, Any]]):
    """Rows of equal keys -> an IPython ``Markdown`` table that renders in Jupyter and in the book."""
    from IPython.display import Markdown

    if not rows:
        return Markdown("*(no rows)*")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |")
    return Markdown("\n".join(lines))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def show_figure(fig) -> None:
    """Display a Matplotlib figure here, in the cell's output order, and close it (so the inline backend does
    not draw it again at the end of the cell)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    plt.close(fig)


def html_table(rows: Sequence[dict[str, Any]], css_class: str = "vqtto-table", raw: Sequence[str] = ()) -> str:
    """Rows of equal keys -> an HTML table (cells escaped, except the columns named in ``raw``)."""
    import html

    if not rows:
        return "<p><em>(no rows)</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, '')) if c in raw else html.escape(_fmt(r.get(c, '')))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def details(summary: str, inner_html: str, open_: bool = False) -> str:
    """A collapsible ``<details>`` block (HTML) whose ``summary`` line (plain text, escaped) opens ``inner_html``."""
    import html

    return (f'<details class="vqtto-details"{" open" if open_ else ""}><summary>{html.escape(summary)}</summary>'
            f'<div class="vqtto-scroll">{inner_html}</div></details>')


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write rows of equal keys as CSV (UTF-8, a header line) to ``path`` atomically; return the path."""
    import csv
    import io

    if not rows:
        raise ValueError(f"write_csv: rows must not be empty (writing {path})")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _fmt(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


def long_table(rows: Sequence[dict[str, Any]], chapter: str, name: str, folder: Path | None = None):
    """The full long table of a chapter, collapsed: an IPython ``HTML`` ``<details>`` holding every row,
    and the same rows as CSV at ``<results dir>/<chapter>-<name>.csv`` (next to the chapter's typed result).

    Raises:
        ValueError: ``name`` is not a plain file stem (letters, digits, ``-``, ``_``), or ``rows`` is empty.
    """
    import re

    from IPython.display import HTML

    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise ValueError(f"long_table: name must be letters, digits, '-' or '_', got {name!r}")
    folder = Path(folder) if folder is not None else results_dir()
    path = write_csv(rows, folder / f"{chapter}-{name}.csv")
    cols = len(rows[0])
    return HTML(details(f"The full table: {len(rows)} rows x {cols} columns (also as CSV: {path.name}, "
                        "next to the chapter's recorded result)", html_table(rows)))


def pivot(rows: Sequence[dict[str, Any]], index: str, columns: str, value: str) -> list[dict[str, Any]]:
    """A compact table: one row per distinct ``rows[i][index]``, one column per distinct ``rows[i][columns]``,
    cells ``rows[i][value]`` ("-" where a pair is absent); orders follow first appearance.

    Raises:
        ValueError: a key is missing from the rows, or two rows share an (index, columns) pair.
    """
    for key, arg in ((index, "index"), (columns, "columns"), (value, "value")):
        missing = [i for i, r in enumerate(rows) if key not in r]
        if missing:
            raise ValueError(f"pivot: {arg}={key!r} is not a key of row(s) {missing[:5]}; keys: {sorted(rows[missing[0]])}")
    cells: dict[tuple, Any] = {}
    for r in rows:
        at = (r[index], r[columns])
        if at in cells:
            raise ValueError(f"pivot: two rows with {index}={at[0]!r} and {columns}={at[1]!r}")
        cells[at] = r[value]
    heads = list(dict.fromkeys(r[columns] for r in rows))
    return [{index: i, **{str(c): cells.get((i, c), "-") for c in heads}} for i in dict.fromkeys(r[index] for r in rows)]


def results_dir() -> Path:
    env = os.environ.get("VQTTO_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "_build" / "results"


class MissingResults(RuntimeError):
    """A chapter's results are absent, unreadable, or come from another profile than asked for."""


@dataclass
class ChapterResult:
    """Base of every chapter's typed result: what the results page reads, verdicts included.

    A chapter module subclasses it with its own fields (JSON-plain values: numbers, strings,
    bools, None, lists and dicts of those, or nested dataclasses of such fields) and sets
    ``CHAPTER`` to the name its results file gets. Verdicts are decided once, in the chapter
    module, and stored as fields; the results page only reads them.
    """

    CHAPTER: ClassVar[str] = ""
    profile: str


def record(result: ChapterResult, folder: Path | None = None) -> Path:
    """Write ``result`` to ``<results dir>/<CHAPTER>.json`` atomically and return the path.

    The file is replaced whole: a chapter's results are always those of its latest run.
    """
    if not (dataclasses.is_dataclass(result) and isinstance(result, ChapterResult) and result.CHAPTER):
        raise TypeError(f"record() takes a ChapterResult subclass instance with CHAPTER set, got {type(result).__name__}")
    folder = Path(folder) if folder is not None else results_dir()
    path = folder / f"{result.CHAPTER}.json"
    text = json.dumps({"type": type(result).__name__, **dataclasses.asdict(result)}, indent=2, sort_keys=True,
                      allow_nan=True)
    atomic_write_text(path, text)
    return path


def load_result(cls: type[ChapterResult], profile: str, folder: Path | None = None) -> ChapterResult:
    """Read back the result of ``cls.CHAPTER`` recorded with ``profile``, as a ``cls`` instance.

    Raises:
        MissingResults: no file, a file of another type or profile, or fields that do not match ``cls``.
    """
    folder = Path(folder) if folder is not None else results_dir()
    path = folder / f"{cls.CHAPTER}.json"
    hint = f"execute the chapter first (python -m vqtto.book run --profile {profile})"
    if not path.exists():
        raise MissingResults(f"no results of chapter {cls.CHAPTER!r} in {folder}; {hint}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MissingResults(f"{path} is unreadable ({err}); {hint}") from None
    if data.pop("type", None) != cls.__name__ or data.get("profile") != profile:
        raise MissingResults(f"{path} holds {data.get('profile')!r}-profile results, not {profile!r}; {hint}")
    try:
        return _build(cls, data)
    except (TypeError, KeyError) as err:
        raise MissingResults(f"{path} does not match {cls.__name__} ({err}); {hint}") from None


def _build(tp: Any, value: Any) -> Any:
    """Rebuild nested dataclasses (also inside lists, dicts and Optionals) from JSON values."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = set(value) - fields
        if unknown:
            raise TypeError(f"unknown fields {sorted(unknown)}")
        return tp(**{name: _build(hints[name], v) for name, v in value.items()})
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_build(item, v) for v in value]
    if origin is dict:
        args = typing.get_args(tp)
        return {k: _build(args[1] if args else Any, v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], value) if len(inner) == 1 else value
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename."""
    from ..cache import write_atomically

    write_atomically(Path(path), text.encode())
