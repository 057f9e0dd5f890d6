"""Every chapter executed end to end with the smoke profile, and the runner's refusals."""

import warnings

import pytest

from vqtto import book


def execute_smoke(chapter, out_dir):
    """Execute ``chapter`` with the smoke profile; once more if a cell timed out.

    A timeout here means the kernel stopped answering (seen once: the client waited forever on a
    reply after the cell had finished); a second run in a fresh kernel tells that apart from a
    chapter that is really too slow, which times out again and fails. Errors are never retried.
    """
    try:
        return book.execute(chapter, "smoke", out_dir=out_dir)
    except book.ChapterTimedOut as err:
        warnings.warn(f"{err}; running {chapter} once more in a fresh kernel")
        return book.execute(chapter, "smoke", out_dir=out_dir)


@pytest.mark.chapter
@pytest.mark.parametrize("chapter", book.chapter_names())
def test_chapter_runs_with_smoke_profile(chapter, smoke_stage):
    if chapter == "09_results":  # the results page reads what the other chapters recorded
        for other in book.chapter_names()[: book.chapter_names().index(chapter)]:
            if not (smoke_stage / f"{other}.ipynb").exists():
                execute_smoke(other, smoke_stage)
    out = execute_smoke(chapter, smoke_stage)  # raises ChapterFailed on an error cell
    import nbformat

    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell was executed"
    assert any(o.get("output_type") == "display_data" for c in code for o in c.get("outputs", [])), \
        "the chapter shows at least one figure or table"


def test_unknown_parameter_is_refused_before_running(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter"):
        book.execute("01_training", "smoke", out_dir=tmp_path, overrides={"kk": 3})
    assert not list(tmp_path.iterdir())


def test_bad_value_fails_the_chapter_naming_parameter_and_cell(tmp_path):
    with pytest.raises(book.ChapterFailed, match=r"01_training failed in cell .*ParameterError.*'k'"):
        book.execute("01_training", "smoke", out_dir=tmp_path, overrides={"k": 1})


def test_a_cell_past_the_timeout_stops_the_chapter(tmp_path, monkeypatch):
    import papermill
    from nbclient.exceptions import CellTimeoutError

    seen = {}

    def hangs(*args, execution_timeout=None, **kwargs):  # what nbclient raises when a cell outlives the limit
        seen["timeout"] = execution_timeout
        raise CellTimeoutError("Cell execution timed out")

    monkeypatch.setattr(papermill, "execute_notebook", hangs)
    monkeypatch.setenv("VQTTO_CELL_TIMEOUT", "7")
    with pytest.raises(book.ChapterTimedOut, match=r"07_hardness: a cell ran past 7 s"):
        book.execute("07_hardness", "smoke", out_dir=tmp_path)
    assert seen["timeout"] == 7 and not (tmp_path / "07_hardness.ipynb").exists()
    for bad in ("soon", "0", "2.5"):
        monkeypatch.setenv("VQTTO_CELL_TIMEOUT", bad)
        with pytest.raises(ValueError, match="VQTTO_CELL_TIMEOUT must be a whole number"):
            book.cell_timeout()


def test_profiles_name_only_real_chapters():
    for profile in ("smoke", "quick", "full"):
        for chapter in book.chapter_names():
            assert book.profile_params(profile, chapter)["profile"] == profile


@pytest.mark.parametrize("chapter", book.chapter_names())
def test_parameters_cell_matches_the_schema_and_documents_every_parameter(chapter):
    """What `papermill --help-notebook` lists is exactly what the chapter validates, each with a meaning."""
    import papermill as pm

    declared = pm.inspect_notebook(str(book.BOOK / f"{chapter}.ipynb"))
    schema = book.schema(chapter)
    assert list(declared) == list(schema)
    assert all(info["help"] == schema[name].help for name, info in declared.items())
    assert all(info["inferred_type_name"] != "None" for info in declared.values())
    assert not book.sync_parameters(chapter, write=False), \
        f"{chapter}'s parameters cell is not the one its schema generates: run python -m vqtto.book sync-params"


# --- chapters side by side: the scheduler, with stand-in commands instead of notebooks ---------------

def _stand_in(log, fail=(), seconds=0.4):
    """A ``chapter_command`` whose process writes 'start' and 'end' lines to ``log`` around a sleep;
    the chapters in ``fail`` exit 3 at once."""
    import sys

    def command(chapter, profile, progress, every):
        if chapter in fail:
            code = f"import sys; open({str(log)!r}, 'a').write('fail {chapter}\\n'); sys.exit(3)"
        else:
            code = (f"import time; open({str(log)!r}, 'a').write('start {chapter}\\n'); time.sleep({seconds}); "
                    f"open({str(log)!r}, 'a').write('end {chapter}\\n')")
        return [sys.executable, "-c", code]

    return command


def test_side_by_side_runs_at_most_jobs_chapters_and_the_results_page_last(tmp_path, monkeypatch):
    from vqtto.book import runner

    log = tmp_path / "log"
    monkeypatch.setattr(runner, "chapter_command", _stand_in(log))
    names = book.chapter_names()
    assert runner.run_side_by_side(names, "smoke", jobs=2, progress=False) == 0
    events = log.read_text().split("\n")[:-1]
    running, most = set(), 0
    for event in events:
        kind, chapter = event.split()
        running = running | {chapter} if kind == "start" else running - {chapter}
        most = max(most, len(running))
    assert most == 2
    assert sorted(e.split()[1] for e in events if e.startswith("end")) == sorted(names)
    assert events[-2:] == ["start 09_results", "end 09_results"]  # after every other chapter ended
    assert events[0] == "start 01_training" or events[1] == "start 01_training"


def test_side_by_side_stops_at_a_failed_chapter(tmp_path, monkeypatch, capsys):
    from vqtto.book import runner

    log = tmp_path / "log"
    monkeypatch.setattr(runner, "chapter_command", _stand_in(log, fail={"07_hardness"}, seconds=30))
    assert runner.run_side_by_side(book.chapter_names(), "smoke", jobs=2, progress=False) == 1
    events = log.read_text().split("\n")[:-1]
    assert "fail 07_hardness" in events
    assert not any(e.startswith("end") for e in events)  # the chapter beside it was stopped
    assert len([e for e in events if e.startswith("start")]) == 1  # and nothing started after the failure
    assert "07_hardness" in capsys.readouterr().err


def test_start_order_puts_training_first_and_the_results_page_last():
    from vqtto.book import runner

    order = runner.start_order(book.chapter_names())
    assert sorted(order) == book.chapter_names()
    assert order[0] == "01_training" and order[-1] == "09_results"
    assert runner.start_order(["09_results", "02_gradient_search"]) == ["02_gradient_search", "09_results"]
    assert runner.default_jobs("full") == 1


def test_jobs_below_one_is_refused(capsys):
    with pytest.raises(SystemExit):
        book.main(["run", "--jobs", "0", "07_hardness"])
    assert "--jobs must be a whole number >= 1" in capsys.readouterr().err
