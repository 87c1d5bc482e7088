"""The capture steps shared by the keypoint sources and the pipeline (mvpose.capture.stages)."""

import numpy as np
import pytest

from mvpose.capture.issues import CaptureError
from mvpose.capture.stages import check_offsets, frame_axis


def test_frame_axis_spans_every_camera_after_its_offset():
    # camera frame f with offset o is capture frame f - o: A gives 3..5, B (offset 4) -4..-3, C has no frames
    axis = frame_axis([np.array([3, 4, 5]), np.array([0, 1]), np.array([], np.int64)], [0, 4, 7])
    assert axis.tolist() == [-4, -3, -2, -1, 0, 1, 2, 3, 4, 5]
    assert frame_axis([np.array([], np.int64)], [0]).size == 0


def test_offsets_must_name_used_cameras():
    check_offsets({"cam_1": 2}, ["cam_1", "cam_2"])
    with pytest.raises(CaptureError, match="offsets name camera\\(s\\) cam_9 that are not used; cameras are cam_1, cam_2"):
        check_offsets({"cam_9": 1}, ["cam_1", "cam_2"])
