"""Tables in the executed notebooks, and the measured results every chapter records.

:func:`record` writes one chapter's headline numbers to ``<results dir>/<chapter>.json``
(atomically); the book's results page is generated from those files, never typed.
The folder is ``$VQTTO_RESULTS`` when set, else ``_build/results`` at the repository root.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from IPython.display import Markdown


def markdown_table(rows: Sequence[dict[str, Any]]) -> Markdown:
    """Rows of equal keys -> a Markdown table that renders in Jupyter and in the book."""
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
    return Path(env) if env else Path(__file__).resolve().parents[2] / "_build" / "results"


def record(chapter: str, profile: str, **results: Any) -> Path:
    """Merge ``results`` into ``<results dir>/<chapter>.json`` (atomic write) and return the path.

    Values must be JSON-serialisable (numbers, strings, lists, dicts).
    """
    path = results_dir() / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    if current.get("profile") != profile:
        current = {}
    current.update(results)
    current["profile"] = profile
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(current, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path
