import itertools

import numpy as np
import pytest
import torch

from mvpose.skeletons import (
    DERIVED_JOINTS,
    H36M_ACTIONS,
    SKELETONS,
    Skeleton,
    conversion_table,
    convert_joints,
    get_skeleton,
    joint_mapping,
)

ALL = sorted(SKELETONS)
PAIRS = list(itertools.product(ALL, ALL))


def _side(skeleton: Skeleton, name: str) -> str | None:
    """Left/right side read off the joint *name* with each set's own naming convention."""
    if skeleton.name == "h36m":
        partners = {"hip", "kne", "ank", "sho", "elb", "wri"}
        if name[1:] in partners:
            return {"l": "left", "r": "right"}[name[0]]
        return None
    if skeleton.name in ("body25", "body25b"):
        if name[0] in "LR" and name[1].isupper():
            return {"L": "left", "R": "right"}[name[0]]
        return None
    for side in ("left", "right"):
        if name.startswith(side + "_"):
            return side
    return None


def _strip_side(skeleton: Skeleton, name: str) -> str:
    if skeleton.name in ("h36m", "body25", "body25b"):
        return name[1:]
    return name.split("_", 1)[1]


def test_h36m_exact_order():
    assert get_skeleton("h36m").joints == (
        "root", "rhip", "rkne", "rank", "lhip", "lkne", "lank", "belly", "neck", "nose",
        "head", "lsho", "lelb", "lwri", "rsho", "relb", "rwri",
    )


def test_coco_and_halpe_official_order():
    coco = get_skeleton("coco")
    assert coco.num_joints == 17
    assert coco.joints[:5] == ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
    assert coco.index("left_shoulder") == 5
    assert coco.index("right_wrist") == 10
    assert coco.index("left_hip") == 11
    assert coco.index("right_ankle") == 16
    halpe = get_skeleton("halpe26")
    assert halpe.num_joints == 26
    assert halpe.joints[:17] == coco.joints
    assert halpe.joints[17:] == (
        "head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe",
        "right_small_toe", "left_heel", "right_heel",
    )
    # COCO's published skeleton, 1-based, first and last entries
    assert (coco.limbs[0][0] + 1, coco.limbs[0][1] + 1) == (16, 14)
    assert (coco.limbs[-1][0] + 1, coco.limbs[-1][1] + 1) == (5, 7)
    assert len(coco.limbs) == 19


def test_body25_official_order():
    b = get_skeleton("body25")
    assert b.num_joints == 25
    expected = {"Nose": 0, "Neck": 1, "RShoulder": 2, "LWrist": 7, "MidHip": 8, "RHip": 9,
                "LAnkle": 14, "REye": 15, "LEar": 18, "LBigToe": 19, "LHeel": 21, "RHeel": 24}
    for name, i in expected.items():
        assert b.index(name) == i


@pytest.mark.parametrize("name", ALL)
def test_limbs_valid_and_connected(name):
    s = get_skeleton(name)
    assert len(set(map(frozenset, s.limbs))) == len(s.limbs)
    for a, b in s.limbs:
        assert 0 <= a < s.num_joints and 0 <= b < s.num_joints and a != b
    components = _components(s)
    if name == "halpe26":  # AlphaPose's published pairs leave the face unlinked to the body
        assert sorted(map(sorted, components)) == [list(range(5)), list(range(5, 26))]
    else:
        assert components == [set(range(s.num_joints))]


def _components(s: Skeleton) -> list[set[int]]:
    left = set(range(s.num_joints))
    components = []
    while left:
        start = min(left)
        seen, todo = {start}, [start]
        while todo:
            j = todo.pop()
            for a, b in s.limbs:
                for u, v in ((a, b), (b, a)):
                    if u == j and v not in seen:
                        seen.add(v)
                        todo.append(v)
        components.append(seen)
        left -= seen
    return components


@pytest.mark.parametrize("name", ALL)
def test_flip_pairs_symmetric_and_names_match(name):
    s = get_skeleton(name)
    in_pair = set()
    for left, right in s.flip_pairs:
        assert _side(s, s.joints[left]) == "left", s.joints[left]
        assert _side(s, s.joints[right]) == "right", s.joints[right]
        assert _strip_side(s, s.joints[left]) == _strip_side(s, s.joints[right])
        assert s.canonical[left].replace("left_", "right_") == s.canonical[right]
        in_pair.update((left, right))
    # every sided joint has a partner, no central joint is flipped
    sided = {i for i, n in enumerate(s.joints) if _side(s, n) is not None}
    assert sided == in_pair
    perm = s.flip_index
    assert np.array_equal(perm[perm], np.arange(s.num_joints))
    for i, j in enumerate(perm):
        assert s.canonical[j] == s.canonical[i].replace("left_", "tmp_").replace(
            "right_", "left_").replace("tmp_", "right_")


def test_get_skeleton_unknown_lists_names():
    with pytest.raises(KeyError) as err:
        get_skeleton("mpii")
    for name in ALL:
        assert name in str(err.value)
    with pytest.raises(KeyError, match="lsho"):
        get_skeleton("h36m").index("left_shoulder")


def test_skeleton_validation():
    with pytest.raises(ValueError, match="limbs"):
        Skeleton("bad", ("a", "b"), ((0, 2),), ())
    with pytest.raises(ValueError, match="unique"):
        Skeleton("bad", ("a", "a"), (), ())


def test_h36m_actions():
    assert sorted(H36M_ACTIONS) == list(range(2, 17))
    assert H36M_ACTIONS[2] == "Directions"
    # Official metadata numbering (the damaged S9 sequence 10/2 is SittingDown).
    assert H36M_ACTIONS[10] == "SittingDown"
    assert H36M_ACTIONS[7] == "Posing" and H36M_ACTIONS[12] == "Photo" and H36M_ACTIONS[15] == "WalkDog"
    assert H36M_ACTIONS[16] == "WalkTogether"
    assert len(set(H36M_ACTIONS.values())) == 15


@pytest.mark.parametrize("src,dst", PAIRS)
def test_joint_mapping_in_range(src, dst):
    s, d = get_skeleton(src), get_skeleton(dst)
    index, valid = joint_mapping(src, dst)
    assert index.shape == valid.shape == (d.num_joints,)
    assert np.all((index[valid] >= 0) & (index[valid] < s.num_joints))
    assert np.all(index[~valid] == -1)
    for j in np.flatnonzero(valid):
        assert s.canonical[index[j]] == d.canonical[j]
    idx, w, v = conversion_table(src, dst)
    assert np.all((idx >= 0) & (idx < s.num_joints))
    np.testing.assert_allclose(w.sum(axis=1), v.astype(float))
    assert np.all(v[valid])  # direct joints are always convertible
    if src == dst:
        assert np.array_equal(index, np.arange(s.num_joints))


def test_specific_direct_mappings():
    index, valid = joint_mapping("coco", "h36m")
    h36m, coco = get_skeleton("h36m"), get_skeleton("coco")
    assert index[h36m.index("lsho")] == coco.index("left_shoulder")
    assert index[h36m.index("rank")] == coco.index("right_ankle")
    assert index[h36m.index("nose")] == coco.index("nose")
    for name in ("root", "belly", "neck", "head"):
        assert not valid[h36m.index(name)]
    index, valid = joint_mapping("body25", "coco")
    assert valid.all()
    b = get_skeleton("body25")
    assert index[coco.index("nose")] == b.index("Nose")
    assert index[coco.index("right_ear")] == b.index("REar")
    index, valid = joint_mapping("halpe26", "h36m")
    halpe = get_skeleton("halpe26")
    assert index[h36m.index("head")] == halpe.index("head")
    assert index[h36m.index("root")] == halpe.index("hip")
    assert index[h36m.index("neck")] == halpe.index("neck")
    assert not valid[h36m.index("belly")]


def test_convert_coco_to_h36m_hand_case():
    rng = np.random.default_rng(0)
    coco = get_skeleton("coco")
    h36m = get_skeleton("h36m")
    pts = rng.normal(size=(2, 4, 17, 3))  # (N, V, J, x/y/conf)
    out, valid = convert_joints(pts, "coco", "h36m")
    assert out.shape == (2, 4, 17, 3)
    lh, rh = pts[..., 11, :], pts[..., 12, :]
    ls, rs = pts[..., 5, :], pts[..., 6, :]
    root = (lh + rh) / 2
    neck = (ls + rs) / 2
    np.testing.assert_allclose(out[..., h36m.index("root"), :], root)
    np.testing.assert_allclose(out[..., h36m.index("neck"), :], neck)
    np.testing.assert_allclose(out[..., h36m.index("belly"), :], (root + neck) / 2)
    rwri = pts[..., coco.index("right_wrist"), :]
    np.testing.assert_allclose(out[..., h36m.index("rwri"), :], rwri)
    head = h36m.index("head")
    assert not valid[head] and np.isnan(out[..., head, :]).all()
    assert valid.sum() == 16
    assert not np.isnan(np.delete(out, head, axis=-2)).any()


def test_convert_halpe_to_h36m_uses_head_and_hip():
    h36m, halpe = get_skeleton("h36m"), get_skeleton("halpe26")
    pts = np.arange(26 * 2, dtype=float).reshape(26, 2) ** 1.5
    out, valid = convert_joints(pts, "halpe26", "h36m")
    assert valid.all()
    np.testing.assert_allclose(out[h36m.index("head")], pts[halpe.index("head")])
    np.testing.assert_allclose(out[h36m.index("root")], pts[halpe.index("hip")])
    np.testing.assert_allclose(
        out[h36m.index("belly")], (pts[halpe.index("hip")] + pts[halpe.index("neck")]) / 2
    )


def test_convert_coco_to_body25():
    b = get_skeleton("body25")
    pts = np.random.default_rng(1).uniform(0, 100, size=(5, 17, 2))
    out, valid = convert_joints(pts, "coco", "body25")
    np.testing.assert_allclose(out[:, b.index("MidHip")], (pts[:, 11] + pts[:, 12]) / 2)
    np.testing.assert_allclose(out[:, b.index("Neck")], (pts[:, 5] + pts[:, 6]) / 2)
    np.testing.assert_allclose(out[:, b.index("LEar")], pts[:, 3])
    feet = [b.index(n) for n in ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")]
    assert not valid[feet].any() and valid.sum() == 19
    assert np.isnan(out[:, feet]).all()


def test_round_trip_coco_halpe_coco_identity():
    pts = np.random.default_rng(2).normal(size=(3, 17, 3))
    halpe, v1 = convert_joints(pts, "coco", "halpe26")
    back, v2 = convert_joints(halpe, "halpe26", "coco")
    assert v2.all()
    np.testing.assert_array_equal(back, pts)
    body, _ = convert_joints(pts, "coco", "body25")
    back, v3 = convert_joints(body, "body25", "coco")
    assert v3.all()
    np.testing.assert_array_equal(back, pts)


def test_nan_in_unused_joint_does_not_leak():
    pts = np.random.default_rng(3).normal(size=(17, 2))
    pts[0:5] = np.nan  # face missing, e.g. not detected
    out, valid = convert_joints(pts, "coco", "h36m")
    h36m = get_skeleton("h36m")
    nose, head = h36m.index("nose"), h36m.index("head")
    assert np.isnan(out[nose]).all()  # propagates where used
    keep = [j for j in range(17) if j not in (nose, head)]
    assert not np.isnan(out[keep]).any()


def test_convert_torch_matches_numpy_and_has_grad():
    pts = np.random.default_rng(4).normal(size=(2, 17, 3)).astype(np.float32)
    ref, ref_valid = convert_joints(pts, "coco", "h36m")
    t = torch.tensor(pts, requires_grad=True)
    out, valid = convert_joints(t, "coco", "h36m")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert isinstance(valid, torch.Tensor) and valid.dtype == torch.bool
    np.testing.assert_array_equal(valid.numpy(), ref_valid)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-6, atol=1e-6)
    out[..., valid, :].sum().backward()
    # each left hip coordinate feeds: lhip, root (1/2), belly (1/4)
    np.testing.assert_allclose(t.grad[0, 11].numpy(), np.full(3, 1.75))
    np.testing.assert_allclose(t.grad[0, 1].numpy(), np.zeros(3))  # left eye unused


def test_convert_integer_input_promoted_and_shape_checked():
    out, _ = convert_joints(np.ones((17, 2), dtype=np.int64), "coco", "body25")
    assert np.issubdtype(out.dtype, np.floating)
    out_t, _ = convert_joints(torch.ones(17, 2, dtype=torch.int64), "coco", "body25")
    assert out_t.is_floating_point()
    with pytest.raises(ValueError, match="coco"):
        convert_joints(np.zeros((25, 2)), "coco", "h36m")


def test_derived_joints_are_in_vocabulary():
    vocab = {k for s in SKELETONS.values() for k in s.canonical}
    for key, parents in DERIVED_JOINTS.items():
        assert key in vocab
        assert set(parents) <= vocab
