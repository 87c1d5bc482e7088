"""`mvpose calibrate convert`: --calibration-units, and the shipped rigs by name from any folder."""

import json
import re

import numpy as np
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.geometry.calibration import read_calibration
from mvpose.resources import calibration_examples_dir, h36m_calibration_path, resolve_calibration


def _mm_toml(tmp_path):
    """The example Pose2Sim rig with its translations written in mm (no `units` key)."""
    text = (calibration_examples_dir() / "rig4_pose2sim.toml").read_text()
    scaled = re.sub(r"translation = \[([^\]]*)\]",
                    lambda m: "translation = [" + ", ".join(f"{1000 * float(v):.6f}" for v in m.group(1).split(",")) + "]",
                    text)
    path = tmp_path / "rig_mm.toml"
    path.write_text(scaled)
    return path


def _centres(params):
    return np.array([-np.asarray(p["R"]).T @ np.asarray(p["t"]).reshape(3) for p in params])


def test_calibration_units_option(tmp_path):
    src = _mm_toml(tmp_path)
    reference = _centres(next(iter(read_calibration(calibration_examples_dir() / "rig4_pose2sim.toml").values())))
    res = CliRunner().invoke(main, ["calibrate", "convert", str(src), str(tmp_path / "a.json"), "--calibration-units", "mm"])
    assert res.exit_code == 0, res.output
    got = _centres(next(iter(read_calibration(tmp_path / "a.json").values())))
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-3)  # mm in, mm out
    res = CliRunner().invoke(main, ["calibrate", "convert", str(src), str(tmp_path / "b.json")])
    wrong = _centres(next(iter(read_calibration(tmp_path / "b.json").values())))
    np.testing.assert_allclose(wrong, reference * 1000, rtol=1e-6)  # read as metres: what the option is for


def test_shipped_rig_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_calibration("h36m") == resolve_calibration("h36m.json") == h36m_calibration_path()
    assert resolve_calibration("rig4.toml") == calibration_examples_dir() / "rig4.toml"
    res = CliRunner().invoke(main, ["calibrate", "convert", "h36m.json", "s9.toml", "--to", "pose2sim", "--rig", "S9"])
    assert res.exit_code == 0, res.output
    s9 = next(iter(read_calibration(tmp_path / "s9.toml").values()))
    shipped = read_calibration(h36m_calibration_path())["S9"]
    np.testing.assert_allclose(_centres(s9), _centres(shipped), atol=1e-3)
    (tmp_path / "h36m.json").write_text(json.dumps({"not": "a calibration"}))  # a local file wins
    assert resolve_calibration("h36m.json").resolve() == tmp_path / "h36m.json"
    res = CliRunner().invoke(main, ["calibrate", "convert", "nope.json", "x.json"])
    assert res.exit_code == 1 and "calibration file 'nope.json' does not exist (nor is it a shipped one: h36m, rig4" in res.output
