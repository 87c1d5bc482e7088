"""Evaluation reports when nothing triangulates, and when the model's joints are not the data's."""

import numpy as np

from mvpose.engine.evaluate import build_report, joint_set_issue, report_csv
from mvpose.skeletons import get_skeleton


def _pred(n=3, v=2, j=17, triangulated=True):
    rng = np.random.default_rng(0)
    gt2d = rng.uniform(0, 100, (n, v, j, 2))
    gt3d = rng.normal(0, 500, (n, j, 3))
    pred3d = gt3d + 10.0 if triangulated else np.full((n, j, 3), np.nan)
    return {"pred2d": gt2d + 1.0, "gt2d": gt2d, "vis": np.ones((n, v, j), bool), "conf": np.ones((n, v, j)),
            "pred3d": pred3d, "gt3d": gt3d, "reproj": np.zeros((n, j))}


def test_nothing_triangulated_gives_a_report_with_null_mpjpe():
    names = list(get_skeleton("h36m").joints)
    rep = build_report(_pred(triangulated=False), names, breakdown=None)
    assert rep["mpjpe_mm"] is None and rep["pa_mpjpe_mm"] is None
    assert rep["untriangulated_joints"] == 3 * 17
    assert rep["note"].startswith("no joint could be triangulated (51 of 51") and rep["issues"] == [rep["note"]]
    assert rep["jdr"]["overall"] == 1.0  # the 2D figures are still there
    assert "mpjpe_mm" not in report_csv(rep)
    ok = build_report(_pred(), names, breakdown=None)
    assert abs(ok["mpjpe_mm"]["overall"] - np.sqrt(300)) < 1e-9 and "issues" not in ok


def test_joint_set_mismatch_is_named():
    h36m = list(get_skeleton("h36m").joints)
    assert joint_set_issue("h36m", "h36m", h36m) is None
    assert joint_set_issue("synth", "h36m", h36m) is None
    issue = joint_set_issue("coco", "h36m", h36m)
    assert issue.startswith("the model was trained on coco joints (17), the h36m data has other joints (17;")
    assert "nose/" in issue  # COCO's joint 0 against the data's joint 0
    assert joint_set_issue("h36m", "skipose", list(get_skeleton("coco").joints)) is not None
