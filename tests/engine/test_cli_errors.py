"""Bad input to the CLI ends in one line `Error: ...` (exit status 1), never a traceback."""

import json

import pytest
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.engine.distributed import check_device


def _run(*args):
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit)  # click's error exit, not an escaped exception
    assert "Traceback" not in res.output
    return res.output.strip().splitlines()[-1]


@pytest.mark.parametrize("item, message", [
    ("train.epochs=abc", "Error: --set train.epochs: expected an integer, found 'abc'"),
    ("train.lr=abc", "Error: --set train.lr: expected a number, found 'abc'"),
    ("train.batch_size=0", "Error: --set train.batch_size: expected at least 1, found 0"),
    ("dataset.rays=bogus", "Error: --set dataset.rays: expected one of exact, official, found 'bogus'"),
    ("train.lr=-1", "Error: --set train.lr: expected a number above 0, found -1"),
    ("dataset.sigma=0", "Error: --set dataset.sigma: expected a number above 0, found 0"),
    ("model.depth=abc", "Error: --set model.depth: expected an integer (model 'mv_ppt_tiny' has 4), found 'abc'"),
    ("model.use_3d_pe=maybe", "Error: --set model.use_3d_pe: expected true or false (model 'mv_ppt_tiny' has True), "
                              "found 'maybe'"),
])
def test_bad_values_are_one_line(tmp_path, item, message):
    assert _run("train", "--pipeline", "demo_mv_ppt", "--out", str(tmp_path / "r"), "--set", item) == message
    assert not (tmp_path / "r").exists()


def test_devices(tmp_path):
    assert check_device("cpu").type == "cpu" and check_device(None).type in ("cpu", "cuda")
    for bad in ("tpu", "cpu:3", "cuda:x"):
        with pytest.raises(ValueError, match=f"--device {bad}: unknown device; expected cpu, cuda, cuda:N or mps"):
            check_device(bad)
    line = _run("train", "--pipeline", "demo_mv_ppt", "--out", str(tmp_path / "r"), "--device", "tpu")
    assert line == "Error: --device tpu: unknown device; expected cpu, cuda, cuda:N or mps"
    import torch

    if not torch.cuda.is_available():
        line = _run("train", "--pipeline", "demo_mv_ppt", "--out", str(tmp_path / "r"), "--device", "cuda")
        assert line.startswith("Error: --device cuda: CUDA is not available")
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_device("cuda:1")


def test_resume_from_a_truncated_checkpoint(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    line = _run("train", "--pipeline", "demo_mv_ppt", "--out", str(run), "--resume")
    assert line.startswith(f"Error: {run / 'last.pt'}: not a readable checkpoint")
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # nothing built or written
    line = _run("train", "--pipeline", "demo_mv_ppt", "--out", str(tmp_path / "none"), "--resume")
    assert line == f"Error: --resume: {tmp_path / 'none' / 'last.pt'} does not exist (nothing to resume)"


def test_plot_refuses_mixed_breakdowns(tmp_path):
    h36m = {"model": "m", "mpjpe_mm": {"overall": 50.0, "per_action": {"Walking": 50.0}}}
    ski = {"model": "m", "mpjpe_mm": {"overall": 60.0, "per_sequence": {"seq1": 60.0}}}
    paths = []
    for name, rep in (("a", h36m), ("b", ski)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(rep))
    line = _run("plot", "mpjpe", *map(str, paths), "-o", str(tmp_path / "p.png"))
    assert line.startswith("Error: reports mix MPJPE breakdowns ['per_action', 'per_sequence']")


def test_plot_default_labels_are_distinct(tmp_path, monkeypatch):
    import mvpose.viz.plots as plots

    seen = {}
    monkeypatch.setattr(plots, "plot_mpjpe_per_action", lambda reps, labels, out, title: seen.setdefault("labels", labels) and out)
    rep = {"model": "mv_ppt_tiny", "label": "demo_mv_ppt", "mpjpe_mm": {"overall": 50.0, "per_action": {"Walking": 50.0}}}
    paths = []
    for folder in ("A", "B", "C"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "report.json")
        paths[-1].write_text(json.dumps(rep if folder != "C" else {**rep, "label": "other"}))
    res = CliRunner().invoke(main, ["plot", "mpjpe", *map(str, paths), "-o", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert seen["labels"] == ["demo_mv_ppt (A)", "demo_mv_ppt (B)", "other"]
    seen.clear()
    res = CliRunner().invoke(main, ["plot", "mpjpe", str(paths[0]), str(paths[0]), "-o", str(tmp_path / "p.png")])
    assert seen["labels"] == [f"demo_mv_ppt ({paths[0]})"] * 2  # same folder: the path (what else is there)


def test_plot_output_name_is_the_file_written(tmp_path):
    rep = tmp_path / "r.json"
    rep.write_text(json.dumps({"model": "m", "mpjpe_mm": {"overall": 50.0, "per_action": {"Walking": 50.0}}}))
    res = CliRunner().invoke(main, ["plot", "mpjpe", str(rep), "-o", str(tmp_path / "bars")])
    assert res.exit_code == 0 and res.output.strip() == f"wrote {tmp_path / 'bars.png'}"
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "bars").exists()
    res = CliRunner().invoke(main, ["plot", "mpjpe", str(rep), "-o", str(tmp_path / "bars.pdf")])
    assert res.exit_code == 0 and (tmp_path / "bars.pdf").read_bytes()[:5] == b"%PDF-"
    line = _run("plot", "mpjpe", str(rep), "-o", str(tmp_path / "bars.xyz"))
    assert line.startswith(f"Error: {tmp_path / 'bars.xyz'}: cannot write a .xyz picture; use one of ") and ".png" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.pdf", "bars.png", "r.json"]  # no temporary left


@pytest.mark.parametrize("value", ["0", "-3"])
def test_every_below_one_is_refused_naming_the_option(value):
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", "x.pt", "--every", value])
    assert res.exit_code == 2 and "--every" in res.output and "Traceback" not in res.output


def test_refused_train_leaves_no_run_folder(tmp_path):
    """A run that stops before training (here: no data) writes nothing, so the folder stays free."""
    out = tmp_path / "run"
    line = _run("train", "--pipeline", "demo_sv_ppt", "--out", str(out), "--data-root", str(tmp_path / "missing"))
    assert "missing" in line
    assert not out.exists()


def test_every_command_and_group_help_has_an_example():
    import click

    def walk(cmd, path):
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])

    for path, cmd in walk(main, []):
        res = CliRunner().invoke(main, [*path, "--help"])
        word = "Example" if path else "Typical session"  # the top level shows a whole session
        assert res.exit_code == 0 and word in res.output and "mvpose " in res.output.split(word, 1)[1], path


def test_report_name_stays_inside_out(tmp_path):
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", "x.pt", "--name", "../../evil"])
    assert res.exit_code == 2 and "'--name': expected a file name without folders, found '../../evil'" in res.output
