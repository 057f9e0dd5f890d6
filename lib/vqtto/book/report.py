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
