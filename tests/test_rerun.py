"""Re-running a chapter gives the same numbers: nbval re-executes each executed smoke chapter.

nbval runs every cell of the executed copy again in a fresh kernel and compares the new text
outputs (tables, sentences, printed numbers) with the stored ones; figures are not compared.
What legitimately differs between two runs (wall times, file paths) is replaced by the
sanitisers in ``tests/nbval-sanitize.cfg``; a cell whose *output* depends on timing carries the
tag ``nbval-ignore-output``. Everything else must match exactly: the chapters seed every
generator they use, and on CPU the kernels they call are deterministic.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vqtto import book

SANITIZE = Path(__file__).with_name("nbval-sanitize.cfg")


@pytest.mark.chapter
def test_every_executed_smoke_chapter_reproduces_its_outputs(smoke_stage):
    for chapter in book.chapter_names():
        if not (smoke_stage / f"{chapter}.ipynb").exists():
            book.execute(chapter, "smoke", out_dir=smoke_stage)
    notebooks = [str(smoke_stage / f"{c}.ipynb") for c in book.chapter_names()]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                          "--nbval-cell-timeout", os.environ.get("VQTTO_CELL_TIMEOUT", "300"),
                          "--nbval-sanitize-with", str(SANITIZE), "--rootdir", str(smoke_stage), *notebooks],
                         cwd=smoke_stage, env=os.environ.copy(), capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-6000:]
