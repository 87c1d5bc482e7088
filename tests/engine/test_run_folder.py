"""A fresh training run refuses a folder that holds a previous run, unless --resume or --overwrite."""

import pytest
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.engine.config import load_pipeline
from mvpose.engine.train import check_run_folder, train


def _previous_run(folder):
    folder.mkdir()
    (folder / "best.pt").write_bytes(b"old best")
    (folder / "log.csv").write_text("epoch\n1\n2\n")
    (folder / "tb").mkdir()
    (folder / "tb" / "events").write_text("x")
    (folder / "notes.txt").write_text("mine")


def test_fresh_run_refuses_a_previous_run(tmp_path):
    run = tmp_path / "run"
    _previous_run(run)
    with pytest.raises(FileExistsError, match=r"run already holds a training run \(best.pt, log.csv, tb\): continue it "
                                              r"with --resume, start it again with --overwrite"):
        train(load_pipeline("demo_mv_ppt"), run, progress=False)
    assert (run / "best.pt").read_bytes() == b"old best" and (run / "log.csv").read_text() == "epoch\n1\n2\n"
    with pytest.raises(FileNotFoundError, match="nothing to resume"):  # resuming needs a last.pt
        check_run_folder(run, resume=True)
    (run / "last.pt").write_bytes(b"x")
    check_run_folder(run, resume=True)
    (run / "last.pt").unlink()
    check_run_folder(tmp_path / "new")  # so is a new or empty folder
    check_run_folder(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # only the run's own outputs are removed
    check_run_folder(run)


def test_cli_names_the_folder_and_both_options(tmp_path):
    run = tmp_path / "run"
    _previous_run(run)
    res = CliRunner().invoke(main, ["train", "--pipeline", "demo_mv_ppt", "--out", str(run)])
    assert res.exit_code == 1
    assert f"Error: {run} already holds a training run" in res.output
    assert "--resume" in res.output and "--overwrite" in res.output
    assert (run / "best.pt").read_bytes() == b"old best"
