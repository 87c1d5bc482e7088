"""Files from elsewhere are read without running their code (mvpose.safe_load, mvpose.engine.checkpoint)."""

from __future__ import annotations

import builtins
import collections
import os
import pickle
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.data.dataset import DatasetError
from mvpose.data.h36m import load_annotations
from mvpose.engine.checkpoint import (load_checkpoint, restore_rng_state, rng_state, save_checkpoint, to_plain,
                                      upgrade_checkpoint)
from mvpose.engine.config import DEFAULTS, deep_update
from mvpose.safe_load import (UntrustedFileError, load_pickle, read_torch_file, state_dict_from_file,
                              trusted_checkpoints, unwrap_state_dict)


class _System:
    """Unpickling this runs ``touch MARKER`` (how a hostile file would run anything)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Open:
    """Unpickling this creates MARKER through ``builtins.open``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _tiny_cfg():
    return deep_update(DEFAULTS, {"dataset": {"image_size": [64, 64], "heatmap_size": [16, 16], "views": 2},
                                  "model": {"name": "mv_ppt_tiny"}})


# ----------------------------------------------------------------------------- hostile files


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "config": {"x": _System(marker)}}, evil)
    for load in (read_torch_file, state_dict_from_file, load_checkpoint):
        with pytest.raises(UntrustedFileError, match=r"evil\.pt: refused to load, it asks for the global posix\.system"):
            load(evil)
    # The command line names the file, the global and the opt-in; still nothing ran.
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(evil)])
    assert res.exit_code == 1 and "evil.pt" in res.output and "posix.system" in res.output
    assert "--trust-checkpoint" in res.output
    upgraded = CliRunner().invoke(main, ["checkpoint", "upgrade", str(evil), str(tmp_path / "new.pt")])
    assert upgraded.exit_code == 1 and "posix.system" in upgraded.output
    assert not marker.exists() and not (tmp_path / "new.pt").exists()
    # The explicit opt-in is the only way around it (and then the file's code does run).
    with trusted_checkpoints():
        assert read_torch_file(evil)["config"]["x"] == 0
    assert marker.exists()


def test_malicious_guide_and_pretrained_files_are_refused(tmp_path):
    from mvpose.engine.train import build_model_from_config
    from mvpose.models import build_model

    marker = tmp_path / "pwned"
    torch.save({"model": {"w": torch.ones(1)}, "hook": _Open(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UntrustedFileError, match=r"evil\.pt.*io\.open"):
        build_model("vitranspose_tiny_bfs", guide_checkpoint=str(tmp_path / "evil.pt"))
    cfg = _tiny_cfg()
    cfg["model"]["pretrained"] = str(tmp_path / "evil.pt")
    with pytest.raises(UntrustedFileError, match=r"evil\.pt.*io\.open"):
        build_model_from_config(cfg)
    assert not marker.exists()


def test_malicious_annotation_pickle_is_refused_and_runs_nothing(h36m_small, tmp_path):
    marker = tmp_path / "pwned"
    root = h36m_small(mutate=lambda recs: recs[0].update(source=_Open(marker)))
    path = root / "annot" / "h36m_train.pkl"
    with pytest.raises(DatasetError, match=r"h36m_train\.pkl: refused to load, it asks for the global io\.open"):
        load_annotations(path)
    path.write_bytes(pickle.dumps([_System(marker)], protocol=2))  # protocol 2, as the toolbox wrote
    with pytest.raises(UntrustedFileError, match=r"posix\.system"):
        load_pickle(path)
    # Through the command line: a checkpoint evaluated on that data root.
    from mvpose.engine.train import build_model_from_config

    cfg = _tiny_cfg()
    save_checkpoint({"model": build_model_from_config(cfg).state_dict(), "config": cfg}, tmp_path / "ok.pt")
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "ok.pt"), "--data-root", str(root),
                                    "--split", "train", "--views", "2", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 1 and "h36m_train.pkl" in res.output and "posix.system" in res.output
    assert not marker.exists()


# ----------------------------------------------------------------------------- real formats still load


def test_official_style_state_dicts_in_every_layout(tmp_path):
    sd = {"backbone.w": torch.arange(6.0).view(2, 3), "head.b": torch.tensor([1.0, -1.0])}
    layouts = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "meta": {"epoch": 210, "mmpose_version": "0.x"}},
        "model": {"model": collections.OrderedDict(sd), "optimizer": {"state": {}}, "epoch": 3},
        "module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "nested": {"state_dict": {"model": sd}},
        # As the official PPT train.py saves checkpoint.pth: 'model' is the model's name there.
        "ppt": {"epoch": 210, "model": "transpose_h", "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "perf": np.float64(0.75), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        got = state_dict_from_file(tmp_path / f"{name}.pth")
        assert got.keys() == sd.keys(), name
        assert all(torch.equal(got[k], sd[k]) for k in sd), name
    # A prefix on only some keys is kept; a file without tensors is named.
    mixed = unwrap_state_dict({"module.a": torch.ones(1), "b": torch.ones(1)})
    assert set(mixed) == {"module.a", "b"}
    torch.save({"epoch": 3, "config": {}}, tmp_path / "none.pth")
    with pytest.raises(ValueError, match=r"none\.pth: expected a state dict.*\['config', 'epoch'\]"):
        state_dict_from_file(tmp_path / "none.pth")


def test_pretrained_from_an_official_style_checkpoint(tmp_path):
    from mvpose.engine.train import build_model_from_config
    from mvpose.models import build_model

    sv = build_model("ppt_tiny", image_size=(64, 64), heatmap_size=(16, 16))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sv.state_dict().items()}}, tmp_path / "sv.pth")
    cfg = _tiny_cfg()
    cfg["model"]["pretrained"] = str(tmp_path / "sv.pth")
    mv = build_model_from_config(cfg)
    assert torch.equal(mv.state_dict()["ppt.keypoint_tokens"], sv.state_dict()["keypoint_tokens"])


def _old_style_checkpoint(path):
    """A checkpoint as mvpose wrote it before plain types: numpy RNG state and numpy scalars inside."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    np.random.seed(7)
    random.seed(7)
    ckpt = {
        "model": model.state_dict(), "config": _tiny_cfg(), "model_config": {"num_joints": 17},
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": {},
        "epoch": 1, "step": 4, "best_jdr": np.float64(0.25),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    torch.save(ckpt, path)
    return ckpt


def test_old_mvpose_checkpoint_loads_and_upgrades(tmp_path):
    old = _old_style_checkpoint(tmp_path / "old.pt")
    with pytest.raises(pickle.UnpicklingError):  # really needs the numpy allowlist
        torch.load(tmp_path / "old.pt", weights_only=True)
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt["best_jdr"] == 0.25 and type(ckpt["best_jdr"]) is float
    assert isinstance(ckpt["scheduler"]["milestones"], collections.Counter)
    assert torch.equal(ckpt["model"]["weight"], old["model"]["weight"])
    expected = np.random.rand(3)  # the state saved above, drawn once here
    np.random.seed(0)
    restore_rng_state(ckpt["rng"])
    assert np.array_equal(np.random.rand(3), expected)

    res = CliRunner().invoke(main, ["checkpoint", "upgrade", str(tmp_path / "old.pt"), str(tmp_path / "new.pt")])
    assert res.exit_code == 0, res.output
    new = torch.load(tmp_path / "new.pt", weights_only=True)  # no allowlist needed any more
    assert new["best_jdr"] == 0.25 and new["rng"]["numpy"][1].dtype == torch.int64
    assert new["optimizer"]["param_groups"][0]["lr"] == old["optimizer"]["param_groups"][0]["lr"]
    assert upgrade_checkpoint(tmp_path / "old.pt", tmp_path / "py.pt")["rng"]["python"] == old["rng"]["python"]


def test_new_checkpoint_is_plain_and_restores_every_rng(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    save_checkpoint({"model": {"w": torch.ones(2)}, "config": _tiny_cfg(), "rng": rng_state(),
                     "metric": np.float32(0.5), "where": tmp_path}, tmp_path / "new.pt")
    expected = (torch.rand(2), np.random.rand(2), random.random())
    ckpt = torch.load(tmp_path / "new.pt", weights_only=True)  # strict: nothing beyond the defaults
    assert ckpt["metric"] == 0.5 and ckpt["where"] == str(tmp_path)
    restore_rng_state(ckpt["rng"])
    got = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_corrupt_checkpoint_is_unreadable_not_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for trust in (False, True):
        with pytest.raises(ValueError, match=r"junk\.pt: not a readable checkpoint \(Unsupported operand") as info:
            read_torch_file(tmp_path / "junk.pt", trust=trust)
        assert not isinstance(info.value, UntrustedFileError)


def test_to_plain_names_what_cannot_be_stored():
    with pytest.raises(TypeError, match=r"checkpoint\['config'\]\['cb'\]: .*_Open cannot be stored"):
        to_plain({"config": {"cb": _Open("x")}})


def test_missing_checkpoint_field_is_named(tmp_path):
    cfg = _tiny_cfg()
    del cfg["dataset"]
    save_checkpoint({"model": {"w": torch.ones(1)}, "config": cfg}, tmp_path / "ck.pt")
    with pytest.raises(ValueError, match=r"ck\.pt: not a complete mvpose checkpoint: field 'config\.dataset' is missing"):
        load_checkpoint(tmp_path / "ck.pt")
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "ck.pt")])
    assert res.exit_code == 1 and "ck.pt" in res.output and "'config.dataset' is missing" in res.output


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_toolbox_style_pickles_load(tmp_path, protocol):
    records = [{
        "image": "s_09_act_02_subact_01_ca_01/s_09_act_02_subact_01_ca_01_000001.jpg",
        "joints_3d": np.arange(51, dtype=np.float64).reshape(17, 3), "joints_vis": np.ones((17, 3), np.float32),
        "center": (512.0, 500.0), "scale": np.array([4.0, 4.0]), "subject": np.int64(9), "action": 2,
        "camera": {"R": np.eye(3), "T": np.zeros((3, 1)), "fx": np.float32(1145.0)},
        "names": np.array(["hip", "knee"]), "flags": {1, 2}, "blob": b"\x00\x01",
    }]
    path = tmp_path / "h36m_train.pkl"
    path.write_bytes(pickle.dumps(records, protocol=protocol))
    got = load_pickle(path)
    assert got[0]["center"] == (512.0, 500.0) and got[0]["flags"] == {1, 2} and got[0]["blob"] == b"\x00\x01"
    for k in ("joints_3d", "joints_vis", "scale", "names"):
        assert np.array_equal(got[0][k], records[0][k]) and got[0][k].dtype == records[0][k].dtype
    assert got[0]["camera"]["fx"] == np.float32(1145.0) and got[0]["subject"] == 9


def test_numpy1_pickle_names_load(tmp_path):
    """Pickles written under numpy 1 name ``numpy.core.multiarray``; they load under numpy 2 too."""
    data = pickle.dumps({"a": np.arange(4.0), "s": np.float64(2.5)}, protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    (tmp_path / "old.pkl").write_bytes(data)
    got = load_pickle(tmp_path / "old.pkl")
    assert np.array_equal(got["a"], np.arange(4.0)) and got["s"] == 2.5


def test_damaged_checkpoints_are_named_before_torch_reads_them(tmp_path):
    save_checkpoint({"model": {"w": torch.arange(4096, dtype=torch.float32)}, "config": _tiny_cfg()}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    assert torch.equal(read_torch_file(tmp_path / "ok.pt")["model"]["w"], torch.arange(4096, dtype=torch.float32))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt: not a readable checkpoint \(the file is empty \(0 bytes\)\)"):
        read_torch_file(tmp_path / "empty.pt")
    # Cut short: torch itself says "[Errno 22] Invalid argument" or a miniz error for these.
    for n in (1000, len(data) // 2, len(data) - 10):
        (tmp_path / "cut.pt").write_bytes(data[:n])
        with pytest.raises(ValueError, match=rf"cut\.pt: not a readable checkpoint \(the file is a truncated .* after {n} bytes"):
            read_torch_file(tmp_path / "cut.pt")
    # One damaged byte inside the tensor: torch.load would return a wrong weight without a word.
    member_start = data.index(np.arange(4096, dtype=np.float32).tobytes()[:64])
    flipped = bytearray(data)
    flipped[member_start + 1000] ^= 0xFF
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    assert not torch.equal(torch.load(tmp_path / "flip.pt", weights_only=True)["model"]["w"], torch.arange(4096, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"flip\.pt: not a readable checkpoint \(the zip archive .* member '[^']+/data/0' fails its checksum"):
        read_torch_file(tmp_path / "flip.pt")
