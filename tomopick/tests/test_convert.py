"""tomopick.convert: Scipion objects <-> arrays, checked against scipion-em-tomo's own reading.

Sets are real scipion-em-tomo sets in throw-away sqlite files (no project):
what tomopick writes is read back with tomo's accessors (``getPosition``,
``tomo.utils.normalFromMatrix``), and what tomo writes is read with tomopick's.
The tomograms have odd sizes and an off-centre origin, so a position off by
half a box, a half voxel or an origin, or a transposed / inverted matrix fails.
"""
import os

import numpy as np
import pytest
from pwem.objects import Transform
from pyworkflow.object import Integer
from scipy.spatial.transform import Rotation
from tomo.constants import BOTTOM_LEFT_CORNER, CENTER_GRAVITY, SCIPION
from tomo.convert.mdoc import normalizeTSId
from tomo.objects import (Coordinate3D, MeshPoint, SetOfCoordinates3D, SetOfMeshes,
                          SetOfSubTomograms, SetOfTomograms, SubTomogram, TomoAcquisition,
                          Tomogram)
from tomo.utils import normalFromMatrix

from tomopick import convert
from tomopick.core.formats import write_mrc
from tomopick.core.picks import Picks
from tomopick.core.rotations import angle_between, homogeneous
from tomopick.tests.test_scipion_convention import draw, moments, reference, xmipp_apply_alignment

VOXEL = 10.0
#: tsId -> ([z, y, x] shape, origin shifts in Å or "centre", ProtImportTomograms' default)
TOMOGRAMS = {"TS_1": ((8, 12, 15), "centre"),            # odd nx: the centre is at 7.5
             "TS_2": ((10, 16, 20), (-30.0, -20.0, -15.0)),  # off-centre, half-voxel z
             "TS_3": ((6, 6, 9), "centre")}
ACQUISITION = (-54.0, 60.0)                              # TS_1's tilt range, degrees
Z = np.array([0.0, 0.0, 1.0])


def new_tomogram(folder, ts_id, shape, origin, acquisition=None):
    path = os.path.join(folder, f"{ts_id}.mrc")
    volume = np.random.default_rng(len(ts_id) + shape[0]).normal(size=shape).astype(np.float32)
    write_mrc(path, volume, VOXEL)
    tomogram = Tomogram()
    tomogram.setTsId(ts_id)
    tomogram.setFileName(path)
    tomogram.setSamplingRate(VOXEL)
    if origin is not None:         # None: no origin stored (tomo then takes the centre)
        if origin == "centre":      # ProtImportTomograms' default: -(dim / 2) * sampling
            origin = tuple(-n / 2 * VOXEL for n in shape[::-1])
        transform = Transform()
        transform.setShifts(*origin)
        tomogram.setOrigin(transform)
    # a set's items share their columns: an acquisition without angles where unknown
    tomogram.setAcquisition(TomoAcquisition() if acquisition is None else TomoAcquisition(
        angleMin=acquisition[0], angleMax=acquisition[1], step=3.0))
    return tomogram


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("convert"))


@pytest.fixture(scope="module")
def tomograms(folder):
    """The SetOfTomograms of TOMOGRAMS, written to its sqlite file."""
    tomo_set = SetOfTomograms(filename=os.path.join(folder, "tomograms.sqlite"))
    tomo_set.setSamplingRate(VOXEL)
    for ts_id, (shape, origin) in TOMOGRAMS.items():
        tomo_set.append(new_tomogram(folder, ts_id, shape, origin,
                                     ACQUISITION if ts_id == "TS_1" else None))
    tomo_set.write()
    return tomo_set


@pytest.fixture(scope="module")
def by_tsid(tomograms):
    return convert.tomograms_by_tsid(tomograms)


def new_set(cls, folder, name, tomograms=None):
    """An empty set of ``cls`` in ``folder/name.sqlite`` (folders made)."""
    os.makedirs(folder, exist_ok=True)
    emset = cls(filename=os.path.join(folder, f"{name}.sqlite"))
    if tomograms is not None:
        emset.setPrecedents(tomograms)
    if hasattr(emset, "setSamplingRate"):
        emset.setSamplingRate(VOXEL)
    return emset


def core_transforms(n, seed=0):
    """n core transforms [[R, t]] with random rotations and shifts of a few voxels."""
    rng = np.random.default_rng(seed)
    return homogeneous(Rotation.random(n, random_state=seed).as_matrix(), rng.uniform(-3, 3, (n, 3)))


def table(n=6, seed=1, matrices=True, scores=True):
    """n picks over TS_1 and TS_2, inside both, with groups, orientations and scores."""
    rng = np.random.default_rng(seed)
    ts_ids = np.where(np.arange(n) % 2, "TS_2", "TS_1")
    positions = rng.uniform(0, 7, (n, 3))                  # inside the smallest (8 z-slices)
    return Picks(ts_ids, positions, rng.integers(0, 4, n),
                 core_transforms(n, seed) if matrices else None,
                 rng.uniform(0.1, 1, n) if scores else None, VOXEL)


# ---------------------------------------------------------------- matrices
def test_scipion_and_core_matrices_are_inverses():
    core = core_transforms(5)
    stored = convert.scipion_matrices(core)
    np.testing.assert_allclose(stored @ core, np.tile(np.eye(4), (5, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(convert.core_matrices(stored), core, atol=1e-12)
    # the rotation of M is R^T (a transposed-only conversion would keep t), t becomes -R^T t
    np.testing.assert_allclose(stored[:, :3, :3], core[:, :3, :3].transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(stored[:, :3, 3],
                               -np.einsum("nji,nj->ni", core[:, :3, :3], core[:, :3, 3]),
                               atol=1e-12)
    np.testing.assert_allclose(convert.scipion_matrices(core[2]), stored[2], atol=1e-12)
    with pytest.raises(ValueError, match=r"4x4 matrices, got shape \(5, 3, 3\)"):
        convert.core_matrices(core[:, :3, :3])


def test_core_matrices_of_a_legacy_set_are_a_copy_of_what_is_stored():
    stored = core_transforms(3)
    read = convert.core_matrices(stored, legacy=True)
    np.testing.assert_array_equal(read, stored)
    read[0, 0, 0] = 7.0
    assert stored[0, 0, 0] != 7.0


def test_particle_axis_is_tomos_normal_from_matrix():
    core = core_transforms(20, seed=3)
    for matrix, stored in zip(core, convert.scipion_matrices(core)):
        assert angle_between(normalFromMatrix(stored), matrix[:3, :3] @ Z) < 1e-6
        # the inverse convention would give R^T z, far from R z for a random R
        assert angle_between(normalFromMatrix(matrix), matrix[:3, :3] @ Z) > 1.0


def test_xmipps_apply_alignment_of_the_stored_matrix_centres_the_particle():
    """A particle drawn at the box centre + d, z-axis R z: core transform [[R, d]]."""
    R = Rotation.from_euler("ZYZ", [40, 65, -20], degrees=True).as_matrix()
    d = np.array([1.5, -2.0, 1.0])
    box = reference().shape[0]
    particle = draw((box,) * 3, [np.full(3, box // 2) + d], [R])
    aligned = xmipp_apply_alignment(particle, convert.scipion_matrices(homogeneous(R, d)))
    (centroid, axis), (want_centroid, want_axis) = moments(aligned), moments(reference())
    np.testing.assert_allclose(centroid, want_centroid, atol=0.1)
    assert min(angle_between(axis, want_axis), angle_between(-axis, want_axis)) < 2.0


def test_subtomogram_matrix_round_trip(folder):
    subtomo = SubTomogram()
    np.testing.assert_array_equal(convert.subtomogram_matrix(subtomo), np.eye(4))   # no transform
    core = core_transforms(1, seed=5)[0]
    convert.set_subtomogram_matrix(subtomo, core)
    stored = subtomo.getTransform().getMatrix()
    np.testing.assert_allclose(stored @ core, np.eye(4), atol=1e-12)
    assert angle_between(normalFromMatrix(stored), core[:3, :3] @ Z) < 1e-6
    np.testing.assert_allclose(convert.subtomogram_matrix(subtomo), core, atol=1e-12)
    # a subtomogram of a tomopick 0.1.x set holds the core transform itself
    np.testing.assert_array_equal(convert.subtomogram_matrix(subtomo, legacy=True), stored)


# -------------------------------------------------------------- conventions
def test_legacy_convention_is_the_marker_else_a_tomopick_run_folder(folder):
    runs = os.path.join(folder, "Runs")
    ours = new_set(SetOfCoordinates3D, os.path.join(runs, "000123_ProtTomoPickImportCoordinates"),
                   "coordinates")
    theirs = new_set(SetOfCoordinates3D, os.path.join(runs, "000045_ProtImportCoordinates3D"),
                     "coordinates")
    assert convert.producer_class(ours) == "ProtTomoPickImportCoordinates"
    assert convert.producer_class(theirs) == "ProtImportCoordinates3D"
    assert convert.producer_class(SetOfCoordinates3D()) == ""
    assert convert.legacy_convention(ours)                  # unmarked tomopick set: 0.1.x
    assert not convert.legacy_convention(theirs)            # every other plugin: M
    assert not convert.legacy_convention(SetOfCoordinates3D())
    assert not convert.legacy_convention(new_set(SetOfCoordinates3D, folder, "elsewhere"))

    copy_of_old = new_set(SetOfCoordinates3D, os.path.join(runs, "000200_ProtTomoPickX"), "copy")
    convert.copy_convention(ours, copy_of_old)
    assert getattr(copy_of_old, convert.MATRIX_CONVENTION_ATTR, None) is None
    assert convert.legacy_convention(copy_of_old)

    convert.mark_convention(ours)
    assert getattr(ours, convert.MATRIX_CONVENTION_ATTR).get() == convert.MATRIX_CONVENTION == 2
    assert not convert.legacy_convention(ours)
    copy_of_new = new_set(SetOfCoordinates3D, os.path.join(runs, "000201_ProtTomoPickX"), "copy")
    convert.copy_convention(ours, copy_of_new)
    assert not convert.legacy_convention(copy_of_new)
    copy_of_theirs = new_set(SetOfCoordinates3D, os.path.join(runs, "000202_ProtTomoPickX"), "c")
    convert.copy_convention(theirs, copy_of_theirs)
    assert not convert.legacy_convention(copy_of_theirs)

    setattr(theirs, convert.MATRIX_CONVENTION_ATTR, Integer(1))   # an older marker wins
    assert convert.legacy_convention(theirs)


# ---------------------------------------------------------------- small rules
@pytest.mark.parametrize("threads, steps, want", [
    (8, 1, 8), (8, 3, 2), (8, 7, 1), (8, 20, 1), (16, 3, 5), (4, 2, 2), (4, 10, 1),
    (2, 5, 2),       # 2 threads: one step runs at a time, with both
    (1, 4, 1), (None, 3, 1), (0, 1, 1), (8, 0, 8)])
def test_threads_per_step(threads, steps, want):
    assert convert.threads_per_step(threads, steps) == want


@pytest.mark.parametrize("path", ["TS_01.mrc.mdoc", "/data/run1/TS_01.rec.mrc", "tomo-3.mrc",
                                  "01.mrc", "TS_7_bin4.mrc", "a.b-c.mrc"])
def test_tsid_of_file_is_scipions_normalized_name(path):
    assert convert.tsid_of_file(path) == normalizeTSId(path)
    assert "." not in convert.tsid_of_file(path)


@pytest.mark.parametrize("path, ts_ids, want", [
    ("TS_01.mrc", {"TS_01", "TS_02"}, "TS_01"),
    ("/data/TS_01.rec.mrc", {"TS_01"}, "TS_01"),               # cut at the first dot
    ("tomo-3.mrc", {"tomo-3"}, "tomo-3"),                      # as it is...
    ("tomo-3.mrc", {"tomo_3"}, "tomo_3"),                      # ...or normalised
    ("rec_TS_12_bin4.mrc", {"TS_1", "TS_12", "TS_2"}, "TS_12"),   # the longest contained
    ("/data/TS_1/other.mrc", {"TS_1"}, None),                  # folders do not count
    ("x.mrc", {"TS_1"}, None),
])
def test_tsid_of_file_among_known_tsids(path, ts_ids, want):
    assert convert.tsid_of_file(path, ts_ids) == want


# --------------------------------------------------------------- tomograms
def test_tomograms_by_tsid_are_copies_in_set_order(tomograms, by_tsid):
    assert list(by_tsid) == list(TOMOGRAMS)
    for ts_id, tomogram in by_tsid.items():
        assert tomogram.getTsId() == ts_id
        assert os.path.basename(tomogram.getFileName()) == f"{ts_id}.mrc"
    copy = convert.tomograms_by_tsid(tomograms)["TS_2"]
    copy.setFileName("elsewhere.mrc")
    assert by_tsid["TS_2"].getFileName().endswith("TS_2.mrc")
    assert convert.tomograms_by_tsid(tomograms)["TS_2"].getFileName().endswith("TS_2.mrc")


def test_tomograms_by_tsid_names_a_shared_tsid_and_an_empty_set(folder):
    tomo_set = new_set(SetOfTomograms, os.path.join(folder, "dup"), "tomograms")
    with pytest.raises(ValueError, match="is empty"):
        convert.tomograms_by_tsid(tomo_set)
    tomo_set.append(new_tomogram(os.path.join(folder, "dup"), "TS_5", (4, 4, 4), "centre"))
    tomo_set.append(new_tomogram(os.path.join(folder, "dup"), "TS_6", (4, 4, 4), "centre"))
    tomo_set.append(new_tomogram(os.path.join(folder, "dup"), "TS_5", (4, 4, 6), "centre"))
    with pytest.raises(ValueError, match="two tomograms share the tsId 'TS_5'"):
        convert.tomograms_by_tsid(tomo_set)


def test_tomograms_by_tsid_names_a_tomogram_without_tsid(folder):
    tomo_set = new_set(SetOfTomograms, os.path.join(folder, "nots"), "tomograms")
    tomogram = new_tomogram(os.path.join(folder, "nots"), "TS_9", (4, 4, 4), "centre")
    tomogram.setTsId(None)
    tomo_set.append(tomogram)
    with pytest.raises(ValueError, match=r"tomogram 1 \(.*\.mrc\) of .* has no tsId"):
        convert.tomograms_by_tsid(tomo_set)


def test_tomogram_array_shape_and_memory_map(by_tsid):
    for ts_id, (shape, _) in TOMOGRAMS.items():
        tomogram = by_tsid[ts_id]
        mapped = convert.tomogram_array(tomogram)
        assert isinstance(mapped, np.memmap) and mapped.shape == shape
        loaded = convert.tomogram_array(tomogram, mmap=False)
        assert not isinstance(loaded, np.memmap)
        np.testing.assert_array_equal(loaded, mapped)
        assert convert.tomogram_shape_xyz(tomogram) == shape[::-1]


def test_bottom_left_offset_is_tomos_own_origin_handling(by_tsid):
    positions = np.array([[0.0, 0.0, 0.0], [3.25, 7.5, 1.0], [14.0, 11.0, 7.0]])
    for ts_id, (shape, origin) in TOMOGRAMS.items():
        tomogram = by_tsid[ts_id]
        offset = convert.bottom_left_offset(tomogram)
        for position in positions:
            coord = Coordinate3D()
            coord.setVolume(tomogram)
            coord.setPosition(*position, BOTTOM_LEFT_CORNER)
            np.testing.assert_allclose(coord.getPosition(SCIPION), position + offset, atol=1e-12)
            coord.setPosition(*(position + offset), SCIPION)
            np.testing.assert_allclose(coord.getPosition(BOTTOM_LEFT_CORNER), position, atol=1e-12)
        centre = -np.array(shape[::-1]) / 2
        if origin == "centre":          # Scipion's default origin: the centre (nx / 2...)
            np.testing.assert_array_equal(offset, centre)
            np.testing.assert_allclose(coord.getPosition(SCIPION),
                                       coord.getPosition(CENTER_GRAVITY), atol=1e-12)
        else:
            np.testing.assert_array_equal(offset, np.array(origin) / VOXEL)
    np.testing.assert_array_equal(convert.bottom_left_offset(by_tsid["TS_1"]), [-7.5, -6, -4])
    np.testing.assert_array_equal(convert.bottom_left_offset(by_tsid["TS_2"]), [-3, -2, -1.5])


def test_bottom_left_offset_of_a_tomogram_without_origin(folder):
    tomogram = new_tomogram(folder, "TS_no_origin", (5, 7, 9), None)
    assert not tomogram.hasOrigin()
    coord = Coordinate3D()
    coord.setVolume(tomogram)
    coord.setPosition(1.0, 2.0, 3.0, BOTTOM_LEFT_CORNER)
    offset = convert.bottom_left_offset(tomogram)
    np.testing.assert_array_equal(offset, [-4.5, -3.5, -2.5])
    np.testing.assert_allclose(coord.getPosition(SCIPION), np.array([1, 2, 3]) + offset)
    like = convert.tomogram_like(tomogram, tomogram.getFileName())
    assert not like.hasOrigin()
    np.testing.assert_array_equal(convert.bottom_left_offset(like), offset)


def test_tomogram_like_lies_over_the_tomogram_it_came_from(folder, by_tsid):
    for ts_id in ("TS_1", "TS_2", "TS_3"):
        source = by_tsid[ts_id]
        path = os.path.join(folder, f"{ts_id}_scores.mrc")
        write_mrc(path, np.zeros(TOMOGRAMS[ts_id][0], np.float32), VOXEL)
        result = convert.tomogram_like(source, path)
        assert result.getObjId() is None and source.getObjId() is not None
        assert result.getFileName() == path and result.getTsId() == ts_id
        assert result.getSamplingRate() == VOXEL
        assert result.hasOrigin() == source.hasOrigin()
        np.testing.assert_array_equal(convert.bottom_left_offset(result),
                                      convert.bottom_left_offset(source))
        assert convert.tilt_range(result) == convert.tilt_range(source)
    assert convert.tilt_range(convert.tomogram_like(by_tsid["TS_1"], path)) == ACQUISITION


def test_tilt_range(by_tsid):
    assert convert.tilt_range(by_tsid["TS_1"]) == ACQUISITION
    assert convert.tilt_range(by_tsid["TS_2"]) is None        # an acquisition without angles
    assert convert.tilt_range(Tomogram()) is None
    flat = Tomogram()
    flat.setAcquisition(TomoAcquisition(angleMin=30.0, angleMax=30.0))
    assert convert.tilt_range(flat) is None
    assert convert.tilt_range(object()) is None


# -------------------------------------------------------------- coordinates
def test_append_picks_and_picks_from_coordinates_round_trip(folder, tomograms, by_tsid):
    picks = table()
    votes, weights = np.arange(len(picks)) + 2, np.linspace(0.5, 1.5, len(picks))
    coords = new_set(SetOfCoordinates3D, folder, "roundtrip", tomograms)
    convert.append_picks(coords, picks, by_tsid,
                         attributes={"_consensusVotes": votes, "_weight": weights})
    coords.write()
    assert getattr(coords, convert.MATRIX_CONVENTION_ATTR).get() == convert.MATRIX_CONVENTION

    # read by scipion-em-tomo: positions from the bottom-left corner, Scipion's M
    for i, coord in enumerate(coords.iterCoordinates()):
        assert coord.getTomoId() == picks.tomo_ids[i]
        np.testing.assert_allclose(coord.getPosition(BOTTOM_LEFT_CORNER), picks.positions[i],
                                   atol=1e-12)
        assert angle_between(normalFromMatrix(coord.getMatrix()),
                             picks.matrices[i, :3, :3] @ Z) < 1e-6
        np.testing.assert_allclose(coord.getMatrix() @ picks.matrices[i], np.eye(4), atol=1e-12)
        assert coord.getScore() == picks.scores[i]
        assert coord.getGroupId() == picks.group_ids[i]
        assert coord._consensusVotes.get() == votes[i] and isinstance(coord._consensusVotes, Integer)
        assert coord._weight.get() == weights[i]

    back = convert.picks_from_coordinates(coords)
    np.testing.assert_array_equal(back.tomo_ids, picks.tomo_ids)
    np.testing.assert_allclose(back.positions, picks.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.matrices, picks.matrices, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(back.scores, picks.scores)
    np.testing.assert_array_equal(back.group_ids, picks.group_ids)
    assert back.voxel_size == VOXEL
    assert back.extra["ids"].tolist() == list(range(1, len(picks) + 1))


def test_positions_on_the_voxel_grid_come_back_exactly(folder, tomograms, by_tsid):
    positions = np.array([[0, 0, 0], [14.5, 11.25, 7.5], [7.5, 6, 4], [-0.5, 3.125, 0.875]])
    picks = Picks(["TS_1", "TS_1", "TS_2", "TS_3"], positions, voxel_size=VOXEL)
    coords = new_set(SetOfCoordinates3D, folder, "grid", tomograms)
    convert.append_picks(coords, picks, by_tsid)
    back = convert.picks_from_coordinates(coords)
    np.testing.assert_array_equal(back.positions, positions)
    np.testing.assert_array_equal(back.tomo_ids, picks.tomo_ids)
    # TS_1's centre (7.5, 6, 4) is Scipion's (0, 0, 0); TS_2's origin is off-centre
    stored = [c.getPosition(SCIPION) for c in coords.iterCoordinates()]
    assert stored[2] == (4.5, 4.0, 2.5)
    np.testing.assert_array_equal(stored[1], [7.0, 5.25, 3.5])


def test_unoriented_unscored_picks_keep_scipions_defaults(folder, tomograms, by_tsid):
    picks = table(matrices=False, scores=False)
    coords = new_set(SetOfCoordinates3D, folder, "plain", tomograms)
    convert.append_picks(coords, picks, by_tsid)
    for coord in coords.iterCoordinates():
        np.testing.assert_array_equal(coord.getMatrix(), np.eye(4))
        assert coord.getScore() == 0
    back = convert.picks_from_coordinates(coords)
    assert back.matrices is None and back.scores is None
    np.testing.assert_allclose(back.positions, picks.positions, atol=1e-12)


def test_coordinates_written_by_another_plugin(folder, tomograms, by_tsid):
    """Positions set from the bottom-left corner and M given to setMatrix, as tomo's importers do."""
    stored = convert.scipion_matrices(core_transforms(3, seed=8))
    positions = np.array([[1.0, 2.0, 3.0], [14.0, 0.5, 7.0], [3.0, 3.0, 3.0]])
    coords = new_set(SetOfCoordinates3D,
                     os.path.join(folder, "Runs", "000007_ProtImportCoordinates3D"), "c", tomograms)
    for ts_id, position, matrix in zip(["TS_1", "TS_1", "TS_3"], positions, stored):
        coord = Coordinate3D()
        coord.setVolume(by_tsid[ts_id])
        coord.setPosition(*position, BOTTOM_LEFT_CORNER)
        coord.setMatrix(matrix)
        coords.append(coord)
    picks = convert.picks_from_coordinates(coords)
    np.testing.assert_allclose(picks.positions, positions, atol=1e-12)
    assert picks.scores is None and picks.tomo_ids.tolist() == ["TS_1", "TS_1", "TS_3"]
    for core, matrix in zip(picks.matrices, stored):
        assert angle_between(core[:3, :3] @ Z, normalFromMatrix(matrix)) < 1e-6
        np.testing.assert_allclose(core, np.linalg.inv(matrix), atol=1e-12)


def test_a_tomopick_0_1_set_is_read_the_old_way(folder, tomograms, by_tsid):
    picks = table(n=4, seed=9)
    run = os.path.join(folder, "Runs", "000009_ProtTomoPickPicket")
    new = new_set(SetOfCoordinates3D, os.path.join(folder, "new"), "c", tomograms)
    convert.append_picks(new, picks, by_tsid)
    old = new_set(SetOfCoordinates3D, run, "coordinates", tomograms)
    for coord in new.iterCoordinates():
        copy = coord.clone()
        copy.setMatrix(np.linalg.inv(coord.getMatrix()))       # 0.1.x stored the core transform
        old.append(copy)
    assert convert.legacy_convention(old)
    back = convert.picks_from_coordinates(old)
    np.testing.assert_allclose(back.matrices, picks.matrices, atol=1e-12)
    np.testing.assert_allclose(back.positions, picks.positions, atol=1e-12)


def test_unknown_tsids_are_named(folder, tomograms, by_tsid):
    coords = new_set(SetOfCoordinates3D, folder, "unknown", tomograms)
    picks = Picks(["TS_1", "TS_9", "TS_8"], np.ones((3, 3)), voxel_size=VOXEL)
    with pytest.raises(KeyError, match="no tomogram: TS_8, TS_9"):
        convert.append_picks(coords, picks, by_tsid)
    assert coords.getSize() == 0                               # nothing half-appended
    # a coordinate whose tomogram is not among the set's precedents
    stray = dict(by_tsid, TS_9=new_tomogram(folder, "TS_9", (4, 4, 4), "centre"))
    convert.append_picks(coords, picks.subset([0, 1]), stray)
    with pytest.raises(ValueError, match=r"coordinate 2 refers to the tomogram 'TS_9'"):
        convert.picks_from_coordinates(coords)


def test_outside_tomograms_uses_each_tomograms_header(by_tsid):
    # TS_1 is 15 x 12 x 8 (x, y, z), TS_2 20 x 16 x 10
    picks = Picks(["TS_1", "TS_2", "TS_1", "TS_2", "TS_1", "TS_3"],
                  [[14.5, 0, 0], [14.5, 0, 0], [16, 0, 0], [0, 0, 9.5], [0, 0, 7.5 + 1e-6],
                   [8.5, 5.5, 5.5]], voxel_size=VOXEL)
    assert convert.outside_tomograms(picks, by_tsid).tolist() == [False, False, True, False,
                                                                  True, False]
    assert convert.outside_tomograms(picks, by_tsid, tolerance=0).tolist() == [
        True, False, True, True, True, True]


# ------------------------------------------------------------------- meshes
def test_append_picks_as_mesh_points(folder, tomograms, by_tsid):
    picks = table(n=4, matrices=False, scores=False)
    meshes = new_set(SetOfMeshes, folder, "meshes_from_picks", tomograms)
    convert.append_picks(meshes, picks, by_tsid, mesh=True)
    points = [p.clone() for p in meshes.iterCoordinates()]     # the iterator reuses its item
    assert all(isinstance(p, MeshPoint) for p in points)
    assert [p.getVolumeName() for p in points] == picks.tomo_ids.tolist()
    back = convert.picks_from_coordinates(meshes)
    np.testing.assert_allclose(back.positions, picks.positions, atol=1e-12)
    np.testing.assert_array_equal(back.group_ids, picks.group_ids)


def test_mesh_models_read_what_append_mesh_points_wrote(folder, tomograms, by_tsid):
    rng = np.random.default_rng(2)
    vesicle = rng.uniform(0, 7, (6, 3))
    general = np.array([[1.0, 2.0, 3.0], [5.0, 2.0, 3.0], [1.0, 6.0, 3.0]])
    other = np.array([[0.5, 0.5, 0.5], [2.0, 2.0, 2.0]])
    meshes = new_set(SetOfMeshes, folder, "meshes", tomograms)
    convert.append_mesh_points(meshes, by_tsid, "TS_2", 2, general, "General",
                               interior=(2.0, 3.0, -1.5))
    convert.append_mesh_points(meshes, by_tsid, "TS_1", 3, other, "Plane")
    convert.append_mesh_points(meshes, by_tsid, "TS_1", 1, vesicle, "Vesicle")
    meshes.write()
    for point in meshes.iterCoordinates():       # tomo reads the points where they were put
        if point.getTomoId() == "TS_2":
            assert point.getGroupId() == 2 and point.getVolumeName() == "TS_2"
            assert any(np.allclose(point.getPosition(BOTTOM_LEFT_CORNER), p) for p in general)

    models = convert.mesh_models(meshes)
    assert [(m["tsId"], m["modelId"], m["type"]) for m in models] == [
        ("TS_1", 1, "Vesicle"), ("TS_1", 3, "Plane"), ("TS_2", 2, "General")]
    assert [m["interior"] for m in models] == [None, None, (2.0, 3.0, -1.5)]
    for model, points in zip(models, (vesicle, other, general)):
        np.testing.assert_allclose(model["points"], points, atol=1e-12)

    finer = convert.mesh_models(meshes, voxel_size=VOXEL / 2)    # twice as many voxels
    for model, coarse in zip(finer, models):
        np.testing.assert_allclose(model["points"], 2 * coarse["points"], atol=1e-12)
    assert finer[2]["interior"] == (4.0, 6.0, -3.0)


def test_mesh_models_of_another_plugins_meshes_have_no_type(folder, tomograms, by_tsid):
    meshes = new_set(SetOfMeshes, folder, "foreign_meshes", tomograms)
    for group, position in ((4, (1.0, 1.0, 1.0)), (4, (2.0, 1.0, 1.0)), (5, (3.0, 3.0, 3.0))):
        point = MeshPoint()
        point.setVolume(by_tsid["TS_2"])
        point.setPosition(*position, BOTTOM_LEFT_CORNER)
        point.setGroupId(group)
        meshes.append(point)
    models = convert.mesh_models(meshes)
    assert [(m["tsId"], m["modelId"], m["type"], m["interior"]) for m in models] == [
        ("TS_2", 4, None, None), ("TS_2", 5, None, None)]
    np.testing.assert_allclose(models[0]["points"], [[1, 1, 1], [2, 1, 1]], atol=1e-12)


# ------------------------------------------------------------- subtomograms
def boxes(folder, name, count, size=4, seed=0):
    """An MRC stack of ``count`` cubic boxes [z, y, x] and its content."""
    data = np.random.default_rng(seed).normal(size=(count * size, size, size)).astype(np.float32)
    path = os.path.join(folder, f"{name}.mrc")
    write_mrc(path, data, VOXEL)
    return path, data


def test_append_subtomograms_and_subtomogram_groups(folder, tomograms, by_tsid):
    picks = table(n=3, seed=11)                    # TS_1, TS_2, TS_1
    coords = new_set(SetOfCoordinates3D, os.path.join(folder, "sub"), "coordinates", tomograms)
    convert.append_picks(coords, picks, by_tsid)
    aligned = core_transforms(3, seed=12)
    files = [boxes(folder, f"particle_{i}", 1, seed=i)[0] for i in range(3)]
    extracted = {1: ("TS_1", files[0], VOXEL, aligned[0]),
                 2: ("TS_2", files[1], VOXEL, aligned[1])}        # coordinate 3 left out
    output = new_set(SetOfSubTomograms, os.path.join(folder, "sub"), "subtomograms")
    convert.append_subtomograms(output, coords, extracted, by_tsid)
    output.write()
    assert output.getSize() == 2 and not convert.legacy_convention(output)
    stored = [c.clone() for c in coords.iterCoordinates()]
    for i, subtomo in enumerate(output.iterItems(orderBy="id")):
        assert subtomo.getFileName() == files[i] and subtomo.getSamplingRate() == VOXEL
        assert subtomo.getVolName() == picks.tomo_ids[i]
        assert subtomo.getVolId() == by_tsid[picks.tomo_ids[i]].getObjId()
        M = subtomo.getTransform().getMatrix()
        assert angle_between(normalFromMatrix(M), aligned[i, :3, :3] @ Z) < 1e-6
        coord = subtomo.getCoordinate3D()
        assert coord.getTomoId() == picks.tomo_ids[i]
        np.testing.assert_array_equal(coord.getPosition(SCIPION), stored[i].getPosition(SCIPION))
        np.testing.assert_allclose(coord.getMatrix(), stored[i].getMatrix(), atol=1e-12)
    # TS_2's acquisition has no tilt angles: appending its subtomogram after TS_1's (with
    # angles) failed in sqlite (a column the first item had and the second lacked)
    assert convert.tilt_range(output[1]) == ACQUISITION and convert.tilt_range(output[2]) is None

    groups = convert.subtomogram_groups(output)
    assert sorted(groups) == ["TS_1", "TS_2"]
    for ts_id, i in (("TS_1", 0), ("TS_2", 1)):
        [(obj_id, index, path, matrix)] = groups[ts_id]
        assert (obj_id, index, path) == (i + 1, 0, files[i])
        np.testing.assert_allclose(matrix, aligned[i], atol=1e-12)


def test_append_subtomograms_of_a_0_1_set_stores_scipions_matrix(folder, tomograms, by_tsid):
    picks = table(n=2, seed=13)
    old = new_set(SetOfCoordinates3D, os.path.join(folder, "Runs", "000013_ProtTomoPickImport"),
                  "coordinates", tomograms)
    for ts_id, position, matrix in zip(picks.tomo_ids, picks.positions, picks.matrices):
        coord = Coordinate3D()
        coord.setVolume(by_tsid[ts_id])
        coord.setPosition(*position, BOTTOM_LEFT_CORNER)
        coord.setMatrix(matrix)                     # 0.1.x: the core transform itself
        old.append(coord)
    assert convert.legacy_convention(old)
    path = boxes(folder, "old_particle", 1)[0]
    output = new_set(SetOfSubTomograms, os.path.join(folder, "Runs", "000014_ProtTomoPickX"), "s")
    convert.append_subtomograms(output, old, {1: ("TS_1", path, VOXEL, np.eye(4)),
                                              2: ("TS_2", path, VOXEL, np.eye(4))}, by_tsid)
    for subtomo, core in zip(output.iterItems(orderBy="id"), picks.matrices):
        M = subtomo.getCoordinate3D().getMatrix()
        assert angle_between(normalFromMatrix(M), core[:3, :3] @ Z) < 1e-6
        np.testing.assert_allclose(M @ core, np.eye(4), atol=1e-12)


def test_subtomogram_groups_of_other_plugins_and_of_0_1_sets(folder):
    stack, _ = boxes(folder, "dynamo_stack", 3)
    core = core_transforms(3, seed=14)
    for run, legacy in (("000020_ProtDynamoSubtomoExtraction", False),
                        ("000021_ProtTomoPickExtraction", True)):
        subtomos = new_set(SetOfSubTomograms, os.path.join(folder, "Runs", run), "subtomograms")
        for index, name in ((1, "/data/TS_7.rec.mrc"), (2, "/data/TS_7.rec.mrc"), (3, None)):
            subtomo = SubTomogram()
            subtomo.setLocation(index, stack)
            subtomo.setSamplingRate(VOXEL)
            if name:
                subtomo.setVolName(name)     # scipion-em-dynamo: the tomogram's path
            matrix = core[index - 1] if legacy else convert.scipion_matrices(core[index - 1])
            subtomo.setTransform(Transform(matrix))
            subtomos.append(subtomo)
        assert convert.legacy_convention(subtomos) == legacy
        groups = convert.subtomogram_groups(subtomos)
        assert {k: [(i, j, p) for i, j, p, _ in v] for k, v in groups.items()} == {
            "TS_7": [(1, 1, stack), (2, 2, stack)], "all": [(3, 3, stack)]}
        matrices = [m for _, _, _, m in groups["TS_7"] + groups["all"]]
        np.testing.assert_allclose(matrices, core, atol=1e-12)


def test_subtomogram_array_of_files_and_stacks(folder):
    single, volume = boxes(folder, "single", 1, size=6)
    np.testing.assert_array_equal(convert.subtomogram_array(0, single), volume)
    np.testing.assert_array_equal(convert.subtomogram_array(1, single), volume)
    stack, data = boxes(folder, "stack", 3, size=4, seed=5)
    for index in (1, 2, 3):
        got = convert.subtomogram_array(index, stack)
        assert got.dtype == np.float32 and not isinstance(got, np.memmap)
        np.testing.assert_array_equal(got, data[4 * (index - 1):4 * index])
    assert convert.subtomogram_array(0, stack).shape == (12, 4, 4)     # 0: the whole file
    for index in (4, -1):
        with pytest.raises(ValueError, match=rf"cannot read subtomogram {index} of .*stack.mrc"):
            convert.subtomogram_array(index, stack)
