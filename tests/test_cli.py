"""The command line: help, train/prior/search on tiny PNGs with a tiny model, refusals with exit code 2."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqtto import cache as artifacts, cli, search

SIDE = 16  # tiny grayscale images; the VQ-VAE gives 4 x 4 grids


def _run(*argv) -> int:
    return cli.main([str(a) for a in argv])


def _png(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder of 24 blob images, a tiny VQ-VAE trained on it (checkpoint), a mask and bad files."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQTTO_CACHE", str(root / "cache"))  # this module's own cache
        yield _make_files(root)


def _make_files(root):
    folder = root / "images"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(24):
        a = np.zeros((SIDE, SIDE))
        r, c = g.integers(0, SIDE - 6, 2)
        a[r:r + 6, c:c + 6] = 255
        _png(folder / f"{i:02d}.png", a)
    mask = np.full((SIDE, SIDE), 255)
    mask[4:12, 4:12] = 0
    f = {"root": root, "images": folder, "a": folder / "00.png", "b": folder / "01.png",
         "mask": _png(root / "mask.png", mask), "model": root / "model.ckpt"}
    assert _run("train", "--images", folder, "--profile", "smoke", "--k", 8, "--epochs", 1, "--batch-size", 8,
                "--out", f["model"], "--quiet") == 0
    f["missing"] = root / "missing.png"
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    f["corrupt"] = root / "corrupt.png"
    (root / "truncated.png").write_bytes(f["a"].read_bytes()[:40])
    f["truncated"] = root / "truncated.png"
    f["big"] = _png(root / "big.png", np.zeros((SIDE + 4, SIDE + 4)))
    f["rgb"] = _png(root / "rgb.png", np.zeros((SIDE, SIDE, 3)))
    f["mask_small"] = _png(root / "mask_small.png", np.full((8, 8), 255) * (np.arange(8) < 4))
    f["mask_black"] = _png(root / "mask_black.png", np.zeros((SIDE, SIDE)))
    f["mask_white"] = _png(root / "mask_white.png", np.full((SIDE, SIDE), 255))
    f["not_ckpt"] = f["a"]
    f["prior"] = root / "prior.ckpt"
    artifacts.save(f["prior"], "pixelcnn", {"tiny": True}, {"state_dict": {}})
    f["masked"] = root / "masked.ckpt"
    artifacts.save(f["masked"], "masked-prior", {"vqvae": {"another": "model"}, "model": {}}, {"state_dict": {}})
    return f


@pytest.mark.parametrize("command", [["train"], ["prior"], ["search"], ["book"], ["book", "run"], ["book", "params"]])
def test_every_subcommand_has_help_with_defaults(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: vqtto {' '.join(command)}")
    if command not in (["book"], ["book", "params"]):  # these have no option with a default
        assert "(default:" in text


def test_top_level_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "exit codes:" in text and "2  bad arguments or input" in text and "torchrun" in text


def _outputs(out: Path, n: int):
    record = json.loads((out / "record.json").read_text())
    codes = torch.load(out / "codes.pt", weights_only=True)
    assert set(codes) == {"start", "best", "final"}
    assert all(c.dtype == torch.int64 and c.shape == (n, SIDE // 4, SIDE // 4) for c in codes.values())
    pngs = sorted(out.glob("found_*.png"))
    assert len(pngs) == n and all(Image.open(p).size == (SIDE, SIDE) and Image.open(p).mode == "L" for p in pngs)
    assert len(record["pairs"]) == n and record["costs"]["decoded_images"] > 0 and record["costs"]["processes"] == 1
    return record, codes, pngs


def test_reconstruct_search_writes_images_codes_and_record(files, tmp_path):
    out = tmp_path / "found"
    assert _run("search", "--model", files["model"], "--source", files["a"], "--target", files["b"], "--out", out,
                "--budget", 60, "--quiet") == 0
    record, codes, _ = _outputs(out, 1)
    assert record["settings"]["task"] == "reconstruct" and record["method"] == search.DEFAULT == "relaxed-local"
    assert record["settings"]["search"]["budget"] == 60 and record["costs"]["equivalents_per_pair"] <= 61
    pair = record["pairs"][0]
    assert pair["source"] == "00.png" and pair["target"] == "01.png" and pair["best_loss"] <= pair["start_loss"]
    assert record["model"]["config"]["dataset"]["shape"] == [1, SIDE, SIDE]
    assert not list(tmp_path.glob(".found*")), "no temporary folder is left behind"


def test_inpaint_search_matches_only_the_visible_pixels(files, tmp_path):
    out = tmp_path / "found"
    assert _run("search", "--source", files["a"], "--target", files["b"], "--task", "inpaint", "--mask", files["mask"],
                "--out", out, "--model", files["model"], "--budget", 60, "--quiet") == 0
    record, _, pngs = _outputs(out, 1)
    assert record["settings"]["task"] == "inpaint" and record["method"] == search.DEFAULT
    found = np.asarray(Image.open(pngs[0]), dtype=np.float32) / 255
    target = np.asarray(Image.open(files["b"]), dtype=np.float32) / 255
    visible = np.asarray(Image.open(files["mask"])) > 127
    masked_mse = float(((found - target) ** 2)[visible].mean())
    assert masked_mse == pytest.approx(record["pairs"][0]["found_loss"], abs=5e-3)  # PNGs hold 8-bit pixels


def test_edit_search_stays_within_the_radius_of_the_source_code(files, tmp_path):
    out = tmp_path / "edit"
    assert _run("search", "--source", files["a"], "--target", files["b"], "--task", "edit", "--radius", 2,
                "--method", "screened-sa", "--budget", 60, "--out", out, "--model", files["model"], "--quiet") == 0
    record, codes, _ = _outputs(out, 1)
    assert record["settings"]["search"]["radius"] == 2 and record["method"] == "screened-sa"
    assert int((codes["best"] != codes["start"]).sum()) <= 2
    assert record["pairs"][0]["best_loss"] <= record["pairs"][0]["start_loss"]
    out = tmp_path / "edit-relaxed"
    assert _run("search", "--source", files["a"], "--target", files["b"], "--task", "edit", "--radius", 1,
                "--method", "relaxed", "--max-steps", 20, "--out", out, "--model", files["model"], "--quiet") == 0
    _, codes, _ = _outputs(out, 1)
    assert int((codes["best"] != codes["start"]).sum()) <= 1


def test_a_prior_over_the_folder_models_codes(files, tmp_path):
    out = tmp_path / "prior.ckpt"
    assert _run("prior", "--model", files["model"], "--profile", "smoke", "--epochs", 1, "--out", out, "--quiet") == 0
    header = json.loads(out.open("rb").readline())
    assert header["kind"] == "pixelcnn" and header["config"]["vqvae"]["dataset"]["images"] == 24


def test_a_guided_inpainting_starts_from_the_training_images_unless_told_otherwise(files, tmp_path, capsys):
    prior = tmp_path / "prior.ckpt"
    assert _run("prior", "--model", files["model"], "--profile", "smoke", "--epochs", 1, "--out", prior, "--quiet") == 0
    common = ["search", "--model", files["model"], "--source", files["a"], "--task", "inpaint", "--mask", files["mask"],
              "--prior", prior, "--samples", 4, "--chains", 2, "--budget", 40, "--quiet"]
    for starts, expected in (([], "exemplars"), (["--starts", "prior"], "prior")):
        out = tmp_path / f"found-{expected}"
        assert _run(*common, *starts, "--out", out) == 0
        record, _, _ = _outputs(out, 1)
        assert record["prior"]["starts"] == expected
    assert _run("search", "--model", files["model"], "--source", files["a"], "--prior", prior, "--starts", "exemplars",
                "--out", tmp_path / "no", "--quiet") == 2
    assert "--starts exemplars applies to --task inpaint or super-resolve" in capsys.readouterr().err


def test_super_resolve_from_low_resolution_images_alone(files, tmp_path):
    low = _png(tmp_path / "low.png", np.asarray(Image.open(files["a"]))[::2, ::2])
    out = tmp_path / "sr"
    assert _run("search", "--model", files["model"], "--source", low, "--task", "super-resolve", "--factor", 2,
                "--out", out, "--budget", 30, "--quiet") == 0
    record, _, _ = _outputs(out, 1)
    assert record["settings"]["task"] == "super-resolve" and record["pairs"][0]["target"] == "low.png"
    assert record["command"].startswith("vqtto search --model")


def test_book_params_prints_a_chapters_yaml(capsys):
    assert _run("book", "params", "smoke", "01_training") == 0
    assert "profile: smoke" in capsys.readouterr().out


def test_a_masked_prior_is_trained_over_the_caches_models_only(files, tmp_path, capsys):
    out = tmp_path / "masked.ckpt"
    assert _run("prior", "--kind", "masked", "--model", files["model"], "--out", out, "--quiet") == 2
    assert "--kind masked trains over the cache's models" in capsys.readouterr().err and not out.exists()


def test_training_on_a_folder_of_mixed_sizes_is_refused(files, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(files["a"], folder / "a.png")
    shutil.copy(files["big"], folder / "b.png")
    out = tmp_path / "m.ckpt"
    assert _run("train", "--images", folder, "--profile", "smoke", "--k", 8, "--out", out, "--quiet") == 2
    assert "b.png: is 20x20 grayscale but a.png is 16x16 grayscale" in capsys.readouterr().err and not out.exists()


def _bad_cases(f):
    return {
        "missing source": (["--source", f["missing"]], "missing.png: no such file"),
        "corrupt PNG": (["--source", f["corrupt"]], "corrupt.png"),
        "truncated PNG": (["--source", f["truncated"]], "truncated.png"),
        "other size": (["--source", f["a"], "--target", f["big"]], "big.png is 20x20 grayscale but the model takes 16x16"),
        "other channels": (["--source", f["rgb"]], "rgb.png is 16x16 RGB but the model takes 16x16 grayscale"),
        "mask shape": (["--source", f["a"], "--task", "inpaint", "--mask", f["mask_small"]], "mask_small.png: mask is 8x8"),
        "all hidden": (["--source", f["a"], "--task", "inpaint", "--mask", f["mask_black"]], "hides every pixel"),
        "nothing hidden": (["--source", f["a"], "--task", "inpaint", "--mask", f["mask_white"]], "hides no pixel"),
        "no mask": (["--source", f["a"], "--task", "inpaint"], "needs --mask"),
        "not a checkpoint": (["--source", f["a"], "--model", f["not_ckpt"]], "not a vqtto checkpoint"),
        "other kind": (["--source", f["a"], "--model", f["prior"]], "holds a 'pixelcnn' checkpoint, not a 'vqvae'"),
        "edit without radius": (["--source", f["a"], "--target", f["a"], "--task", "edit", "--method", "gwg"],
                                "--task edit needs --radius, an integer >= 1"),
        "edit radius 0": (["--source", f["a"], "--target", f["a"], "--task", "edit", "--radius", "0", "--method", "gwg"],
                          "--radius must be in [1, 4096]"),
        "edit with a method without radius": (["--source", f["a"], "--target", f["a"], "--task", "edit", "--radius", "2",
                                               "--method", "greedy"],
                                              "stays within a radius: one of relaxed,"),
        "radius without edit": (["--source", f["a"], "--radius", "2"], "--radius applies to --task edit"),
        "setting of another method": (["--source", f["a"], "--alpha", "2"], "does not take --alpha"),
        "factor": (["--source", f["a"], "--task", "super-resolve", "--factor", "3"], "--factor 3"),
        "factor 1": (["--source", f["a"], "--task", "super-resolve", "--factor", "1"], "--factor must be in [2, 64]"),
        "bad setting": (["--source", f["a"], "--method", "alg2", "--alpha", "-1"], "alpha must be > 0"),
        "inpaint with a method that moves every position": (["--source", f["a"], "--task", "inpaint", "--mask", f["mask"],
                                                             "--method", "greedy"], "keeps the visible region's codes"),
        "weight without a prior": (["--source", f["a"], "--weight", "0.1"], "--weight needs a prior"),
        "negative weight": (["--source", f["a"], "--weight", "-1"], "--weight must be in [0, 1000]"),
        "prior of another kind": (["--source", f["a"], "--prior", f["a"]], "--prior"),
        "masked prior of another model": (["--source", f["a"], "--task", "inpaint", "--mask", f["mask"], "--prior",
                                           f["masked"]], "models the codes of another VQ-VAE"),
        "budget": (["--source", f["a"], "--budget", "0"], "--budget must be in (0, 1e+06]"),
        "infinite budget": (["--source", f["a"], "--budget", "inf"], "--budget must be in (0, 1e+06]"),
        "samples": (["--source", f["a"], "--samples", "0"], "--samples must be in [1, 4096]"),
        "chains": (["--source", f["a"], "--chains", "0"], "--chains must be in [1, 1024]"),
        "infinite weight": (["--source", f["a"], "--weight", "inf"], "--weight must be in [0, 1000]"),
        "pairs of a folder model": (["--pairs", "2"], "trained on a folder"),
        "exemplars without a prior": (["--source", f["a"], "--task", "inpaint", "--mask", f["mask"], "--starts",
                                       "exemplars"], "--starts exemplars needs a prior"),
    }


@pytest.mark.parametrize("case", list(_bad_cases({k: Path(k) for k in (
    "missing", "corrupt", "truncated", "a", "big", "rgb", "mask_small", "mask_black", "mask_white", "not_ckpt",
    "prior", "mask", "masked")})))
def test_bad_input_is_refused_with_exit_code_2_before_any_work(files, tmp_path, capsys, case):
    argv, message = _bad_cases(files)[case]
    if "--model" not in argv:
        argv = [*argv, "--model", files["model"]]
    out = tmp_path / "found"
    assert _run("search", *argv, "--out", out, "--quiet") == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_corrupt_checkpoint_is_refused(files, tmp_path, capsys):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(files["model"].read_bytes() + b"tampered")
    assert _run("search", "--model", broken, "--source", files["a"], "--out", tmp_path / "o", "--quiet") == 2
    assert "sha256 does not match" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_existing_output_is_refused_unless_overwrite(files, tmp_path, capsys):
    out = tmp_path / "found"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless --overwrite")
    argv = ["search", "--model", files["model"], "--source", files["a"], "--out", out, "--budget", 15, "--quiet"]
    assert _run(*argv) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and (out / "old.txt").exists()
    assert _run(*argv, "--overwrite") == 0
    assert not (out / "old.txt").exists() and (out / "record.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["found"], "the old folder and the temporary one are gone"
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_text("not mine")
    train = ["train", "--images", files["images"], "--profile", "smoke", "--k", 8, "--epochs", 1, "--batch-size", 8,
             "--out", ckpt, "--quiet"]
    assert _run(*train) == 2 and ckpt.read_text() == "not mine"


def test_torchrun_shards_the_pairs_and_finds_what_one_process_finds(files, tmp_path):
    """Two CPU processes under torchrun (gloo) search 24 pairs (12 each) and write what one process writes."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this python")
    args = ["-m", "vqtto", "search", "--model", str(files["model"]), "--source", str(files["images"]),
            "--target", str(files["b"]), "--budget", "30", "--device", "cpu", "--quiet"]
    one = tmp_path / "one"
    two = tmp_path / "two"
    assert _run(*args[2:], "--out", one) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VQTTO_DIST_TIMEOUT": "60"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", *args, "--out", str(two)],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = torch.load(one / "codes.pt", weights_only=True), torch.load(two / "codes.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = json.loads((one / "record.json").read_text()), json.loads((two / "record.json").read_text())
    assert rb["costs"]["processes"] == 2
    assert [p["best_loss"] for p in ra["pairs"]] == [p["best_loss"] for p in rb["pairs"]]
    assert ra["costs"]["decoded_images"] == rb["costs"]["decoded_images"]
    shutil.rmtree(two)


@pytest.mark.parametrize("option", sorted(cli.BOUNDS))
def test_every_bounded_option_refuses_values_outside_its_range_before_any_work(files, tmp_path, capsys, option):
    """Walks cli.BOUNDS: below, at an excluded end, beyond the top, NaN (floats): exit 2, the option named, nothing written."""
    lo, hi, open_lo, _ = cli.BOUNDS[option]
    flag = "--" + option.replace("_", "-")
    kind = type(lo)
    wrong = [lo - 1, hi + 1] + ([lo] if open_lo else []) + ([float("nan"), float("inf")] if kind is float else [])
    task = {"radius": ["--task", "edit", "--target", files["b"], "--method", "gwg"],
            "factor": ["--task", "super-resolve"], "weight": ["--task", "inpaint", "--mask", files["mask"]]}
    where = ["--pairs", "1"] if option == "pairs" else ["--source", files["a"]]
    for value in wrong:
        out = tmp_path / "found"
        argv = ["search", "--model", files["model"], *where, *task.get(option, []), flag, str(value), "--out", out,
                "--quiet"]
        assert _run(*argv) == 2, (flag, value)
        assert f"{flag} must be in" in capsys.readouterr().err and not out.exists()
