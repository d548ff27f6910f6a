"""tomopick.core.picks: the particle table (construction, bounds, subsets, scaling, files)."""
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tomopick.core.picks import Picks, outside_volume
from tomopick.core.rotations import homogeneous


def oriented_picks(n=5, seed=0, voxel_size=10.0, scores=True):
    """n picks over two tomograms, random rotations and shifts, random scores."""
    rng = np.random.default_rng(seed)
    matrices = homogeneous(Rotation.random(n, random_state=seed).as_matrix())
    matrices[:, :3, 3] = rng.uniform(-2, 2, (n, 3))
    return Picks(np.where(np.arange(n) % 2, "TS_2", "TS_1"), rng.uniform(0, 30, (n, 3)),
                 np.arange(n) % 3, matrices, rng.uniform(0, 1, n) if scores else None,
                 voxel_size, {"ids": np.arange(100, 100 + n), "label": np.array(list("abcde"))[:n]})


def assert_same(a, b):
    np.testing.assert_array_equal(a.tomo_ids, b.tomo_ids)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.group_ids, b.group_ids)
    for name in ("matrices", "scores"):
        if getattr(a, name) is None:
            assert getattr(b, name) is None, name
        else:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.voxel_size == b.voxel_size
    assert sorted(a.extra) == sorted(b.extra)
    for name in a.extra:
        np.testing.assert_array_equal(a.extra[name], b.extra[name])
        assert a.extra[name].dtype == b.extra[name].dtype, name


# ------------------------------------------------------------------ construction
def test_construction_normalises_types_and_defaults():
    picks = Picks("TS_1", [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert picks.tomo_ids.tolist() == ["TS_1"] * 3          # one tsId for every row
    assert picks.positions.dtype == float and picks.positions.shape == (3, 3)
    assert picks.group_ids.tolist() == [0, 0, 0] and picks.group_ids.dtype.kind == "i"
    assert picks.matrices is None and picks.scores is None and picks.voxel_size is None
    assert not picks.has_orientations and len(picks) == 3
    single = Picks(["TS_1"], [1.5, 2, 3], matrices=np.eye(4), scores=0.5)
    assert single.positions.tolist() == [[1.5, 2, 3]]
    assert single.matrices.shape == (1, 4, 4) and single.has_orientations
    assert single.scores.tolist() == [0.5]
    empty = Picks(np.array([], str), np.zeros((0, 3)))
    assert len(empty) == 0 and empty.positions.shape == (0, 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tomo_ids=["a", "b"], positions=np.zeros((3, 3))), "2 tomo ids for 3 positions"),
    (dict(tomo_ids="a", positions=np.zeros((3, 3)), group_ids=[1, 2]),
     "2 group_ids for 3 positions"),
    (dict(tomo_ids="a", positions=np.zeros((3, 3)), scores=[1, 2, 3, 4]),
     "4 scores for 3 positions"),
    # (3, 2) has 6 values: it used to become two picks silently
    (dict(tomo_ids="a", positions=np.zeros((3, 2))), r"positions of shape \(3, 2\)"),
    (dict(tomo_ids="a", positions=np.zeros(4)), r"positions of shape \(4,\)"),
    (dict(tomo_ids="a", positions=np.zeros((2, 3)), matrices=np.eye(4)),
     r"matrices of shape \(4, 4\) for 2 positions"),
    (dict(tomo_ids="a", positions=np.zeros((2, 3)), matrices=np.zeros((2, 3, 3))),
     r"matrices of shape \(2, 3, 3\) for 2 positions"),
    # 8 rows of 4: as many numbers as two 4x4 matrices, but not 4x4 matrices
    (dict(tomo_ids="a", positions=np.zeros((2, 3)), matrices=np.zeros((2, 2, 8))),
     r"matrices of shape \(2, 2, 8\)"),
])
def test_bad_shapes_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Picks(**kwargs)


# ------------------------------------------------------------------------ bounds
def test_outside_volume_tolerance_is_half_a_voxel_beyond_the_outer_centres():
    size = (10, 20, 30)                                    # nx, ny, nz
    inside = [[-0.5, 0, 0], [9.5, 19.5, 29.5], [0, -0.5, 29.5], [4, 8, 12]]
    outside = [[-0.5 - 1e-9, 0, 0], [9.5 + 1e-9, 0, 0], [0, 19.5 + 1e-9, 0], [0, 0, 29.5 + 1e-9],
               [0, 0, -1]]
    assert outside_volume(inside, size).tolist() == [False] * 4
    assert outside_volume(outside, size).tolist() == [True] * 5
    # the axes are (x, y, z) against (nx, ny, nz): y = 15 fits 20 but not 10
    assert outside_volume([[0, 15, 0]], size).tolist() == [False]
    assert outside_volume([[15, 0, 0]], size).tolist() == [True]
    assert outside_volume([[-1.0, 0, 0]], size, tolerance=1.0).tolist() == [False]
    assert outside_volume([[9.5, 0, 0]], size, tolerance=0).tolist() == [True]


def test_outside_uses_each_tomograms_own_shape():
    picks = Picks(["a", "b", "a", "b"], [[12, 0, 0], [12, 0, 0], [0, 0, 7.5], [0, 0, 7.5]])
    shapes = {"a": (8, 8, 8), "b": (16, 8, 10)}
    assert picks.outside(shapes).tolist() == [True, False, False, False]
    assert picks.outside(shapes, tolerance=0).tolist() == [True, False, True, False]
    with pytest.raises(KeyError, match="b"):
        picks.outside({"a": (8, 8, 8)})


# ---------------------------------------------------------------------- selection
def test_subset_and_for_tomogram_keep_every_column_in_step():
    picks = oriented_picks()
    for index in (np.array([True, False, True, True, False]), np.array([3, 0])):
        part = picks.subset(index)
        np.testing.assert_array_equal(part.positions, picks.positions[index])
        np.testing.assert_array_equal(part.matrices, picks.matrices[index])
        np.testing.assert_array_equal(part.scores, picks.scores[index])
        np.testing.assert_array_equal(part.group_ids, picks.group_ids[index])
        np.testing.assert_array_equal(part.extra["ids"], picks.extra["ids"][index])
        np.testing.assert_array_equal(part.extra["label"], picks.extra["label"][index])
        assert part.voxel_size == picks.voxel_size
    ts2 = picks.for_tomogram("TS_2")
    assert ts2.tomo_ids.tolist() == ["TS_2", "TS_2"]
    assert ts2.extra["ids"].tolist() == [101, 103]
    np.testing.assert_array_equal(ts2.matrices, picks.matrices[[1, 3]])
    assert len(picks.for_tomogram("TS_9")) == 0
    plain = Picks("a", np.zeros((3, 3))).subset([2])
    assert plain.matrices is None and plain.scores is None and len(plain) == 1


# ------------------------------------------------------------------------ scaling
def test_rescaled_scales_positions_and_shifts_not_rotations():
    picks = oriented_picks(voxel_size=10.0)
    half = picks.rescaled(5.0)                              # twice as many voxels
    assert half.voxel_size == 5.0
    np.testing.assert_allclose(half.positions, picks.positions * 2)
    np.testing.assert_allclose(half.matrices[:, :3, 3], picks.matrices[:, :3, 3] * 2)
    np.testing.assert_array_equal(half.matrices[:, :3, :3], picks.matrices[:, :3, :3])
    np.testing.assert_array_equal(half.matrices[:, 3], picks.matrices[:, 3])
    np.testing.assert_array_equal(half.scores, picks.scores)
    np.testing.assert_array_equal(half.tomo_ids, picks.tomo_ids)
    np.testing.assert_array_equal(half.group_ids, picks.group_ids)
    # the original is untouched and the way back is exact up to rounding
    assert picks.voxel_size == 10.0
    back = half.rescaled(10.0)
    np.testing.assert_allclose(back.positions, picks.positions, rtol=1e-15)
    np.testing.assert_allclose(back.matrices, picks.matrices, rtol=1e-15, atol=1e-15)
    coarse = Picks("a", [[3, 6, 9]], voxel_size=4.0).rescaled(12.0)
    assert coarse.positions.tolist() == [[1, 2, 3]] and coarse.matrices is None
    with pytest.raises(ValueError, match="without a voxel size"):
        Picks("a", [[1, 2, 3]]).rescaled(5.0)


# -------------------------------------------------------------------------- files
@pytest.mark.parametrize("scores", [True, False])
def test_save_load_round_trip_is_exact(tmp_path, scores):
    picks = oriented_picks(scores=scores)
    path = str(tmp_path / "sub" / "picks.table")              # folder made, name kept as given
    picks.save(path)
    assert os.listdir(tmp_path / "sub") == ["picks.table"]
    assert_same(picks, Picks.load(path))


def test_save_load_round_trip_without_orientations_or_voxel_size(tmp_path):
    picks = Picks(["TS_1", "TS_10"], [[0.1, 0.2, 0.3], [1e6 / 3, -2, 7]], [4, 5])
    path = str(tmp_path / "plain.npz")
    picks.save(path)
    back = Picks.load(path)
    assert_same(picks, back)
    assert back.matrices is None and back.scores is None and back.voxel_size is None
    empty = Picks(np.array([], str), np.zeros((0, 3)), voxel_size=2.0)
    empty.save(path)
    assert len(Picks.load(path)) == 0 and Picks.load(path).voxel_size == 2.0


def test_failed_save_leaves_the_previous_file_and_no_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "picks.npz"
    old = oriented_picks(seed=1)
    old.save(str(path))

    def half_written(handle, **arrays):
        handle.write(b"PK\x03\x04 half a table")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(OSError, match="disk full"):
        oriented_picks(seed=2).save(str(path))
    assert os.listdir(tmp_path) == ["picks.npz"]
    assert_same(old, Picks.load(str(path)))
    with pytest.raises(OSError, match="disk full"):
        oriented_picks(seed=2).save(str(tmp_path / "new.npz"))
    assert os.listdir(tmp_path) == ["picks.npz"]


def test_load_names_the_file_that_is_not_a_table(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("x y z\n1 2 3\n")
    with pytest.raises(ValueError, match="notes.npz: not a saved particle table"):
        Picks.load(str(text))
    other = tmp_path / "other.npz"
    np.savez(str(other), volume=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz: not a saved particle table"):
        Picks.load(str(other))
    with pytest.raises(ValueError, match="missing.npz"):
        Picks.load(str(tmp_path / "missing.npz"))


# -------------------------------------------------------------------- concatenate
def test_concatenate_fills_missing_orientations_and_scores_as_scipion_does():
    a = oriented_picks(n=3, seed=4, scores=False)
    b = Picks("TS_3", [[1, 1, 1], [2, 2, 2]], [7, 8], scores=[0.25, 0.75], voxel_size=10.0,
              extra={"ids": np.array([1, 2])})
    both = Picks.concatenate([a, b])
    assert both.tomo_ids.tolist() == a.tomo_ids.tolist() + ["TS_3", "TS_3"]
    np.testing.assert_array_equal(both.positions, np.concatenate([a.positions, b.positions]))
    assert both.group_ids.tolist() == a.group_ids.tolist() + [7, 8]
    np.testing.assert_array_equal(both.matrices[:3], a.matrices)
    np.testing.assert_array_equal(both.matrices[3:], np.tile(np.eye(4), (2, 1, 1)))
    assert both.scores.tolist() == [0, 0, 0, 0.25, 0.75]
    assert both.voxel_size == 10.0
    # "ids" is in both parts, "label" only in the first: dropped
    assert sorted(both.extra) == ["ids"]
    assert both.extra["ids"].tolist() == [100, 101, 102, 1, 2]
    plain = Picks.concatenate([Picks("a", [[1, 2, 3]]), Picks("b", [[4, 5, 6]])])
    assert plain.matrices is None and plain.scores is None and plain.voxel_size is None


def test_concatenate_voxel_sizes():
    sized = Picks("a", [[1, 2, 3]], voxel_size=10.0)
    unsized = Picks("b", [[4, 5, 6]])
    # parts without a voxel size take that of the others (documented in the docstring)
    assert Picks.concatenate([unsized, sized]).voxel_size == 10.0
    with pytest.raises(ValueError, match=r"different voxel sizes \[5.0, 10.0\]"):
        Picks.concatenate([sized, Picks("b", [[4, 5, 6]], voxel_size=5.0)])
    with pytest.raises(ValueError, match="nothing to concatenate"):
        Picks.concatenate(iter([]))
