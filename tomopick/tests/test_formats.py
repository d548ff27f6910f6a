"""Coordinate formats: round trips, hand-written files from each spec, detection, bad input.

Tolerances: 0.01 voxel and 0.01 degree, the contract of the formats; files
store 4+ decimals (float32 for IMOD), far below them.
"""
import json
import os
import shutil
import struct

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tomopick.core.formats import read_coordinates, write_coordinates
from tomopick.core.formats.coordinates import FORMATS, detect_format
from tomopick.core.picks import Picks
from tomopick.core.rotations import homogeneous

POS_TOL = 0.01   # voxels
ANGLE_TOL = 0.01  # degrees
SHAPES = {"TS_01": (64, 60, 33), "TS_02": (50, 64, 32)}
EXT = {"csv": "csv", "star": "star", "tbl": "tbl", "mod": "mod", "ndjson": "ndjson",
       "yaml": "yaml"}
CARRIES = {  # format: (orientations, scores, groups, several tomograms)
    "csv": (True, True, True, True),
    "star": (True, True, True, True),
    "tbl": (True, True, True, True),
    "mod": (False, False, True, False),
    "ndjson": (True, False, False, False),
    "yaml": (False, False, False, False),
}


def rotation_error_deg(R1, R2):
    """Angle (degrees) of the rotation taking R2 to R1, row by row."""
    rel = np.swapaxes(R2[..., :3, :3], -1, -2) @ R1[..., :3, :3]
    return np.degrees(Rotation.from_matrix(rel).magnitude())


def random_picks(n=30, several=True, seed=0):
    rng = np.random.default_rng(seed)
    tomo_ids = np.where(np.arange(n) < n // 2, "TS_01", "TS_02") if several \
        else np.full(n, "TS_01")
    positions = rng.uniform(0, 31, (n, 3))
    rotations = Rotation.random(n, random_state=seed).as_matrix()
    # include the degenerate tilts 0 and 180 of the Euler conventions
    rotations[0] = np.eye(3)
    rotations[1] = np.diag([1.0, -1.0, -1.0])
    return Picks(tomo_ids, positions, rng.integers(0, 5, n), homogeneous(rotations),
                 rng.uniform(0, 1, n), 10.0)


def sorted_rows(picks):
    """Row order by (tsId, group, x): formats grouping points reorder them."""
    return np.lexsort((picks.positions[:, 0], picks.group_ids, picks.tomo_ids))


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_positions_rotations_groups_scores(tmp_path, fmt):
    orient, scored, grouped, several = CARRIES[fmt]
    picks = random_picks(several=several)
    path = str(tmp_path / f"picks.{EXT[fmt]}")
    write_coordinates(path, picks, fmt, tomo_shapes=SHAPES)
    back = read_coordinates(path, fmt, voxel_size=10.0, tomo_shapes=SHAPES, tomo_id="TS_01")
    assert len(back) == len(picks)
    a, b = (sorted_rows(picks), sorted_rows(back)) if grouped else (slice(None),) * 2
    assert np.abs(back.positions[b] - picks.positions[a]).max() < POS_TOL
    assert list(back.tomo_ids[b]) == list(picks.tomo_ids[a])
    if orient:
        assert rotation_error_deg(back.matrices[b], picks.matrices[a]).max() < ANGLE_TOL
        assert np.abs(back.matrices[:, :3, 3]).max() == 0
    else:
        assert back.matrices is None
    if scored:
        assert np.abs(back.scores[b] - picks.scores[a]).max() < 1e-5
    if grouped:
        assert np.array_equal(back.group_ids[b], picks.group_ids[a])
    assert back.voxel_size == 10.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_writers_fold_matrix_shifts_into_positions(tmp_path, fmt):
    picks = random_picks(n=6, several=False)
    shift = np.array([1.5, -2.0, 0.25])
    picks.matrices[:, :3, 3] = shift
    path = str(tmp_path / f"shifted.{EXT[fmt]}")
    write_coordinates(path, picks, fmt, tomo_shapes=SHAPES)
    back = read_coordinates(path, voxel_size=10.0, tomo_shapes=SHAPES)
    a, b = (sorted_rows(picks), sorted_rows(back)) if CARRIES[fmt][2] else (slice(None),) * 2
    # sorting by x is unaffected: the same shift is added to every row
    assert np.abs(back.positions[b] - (picks.positions[a] + shift)).max() < POS_TOL


def test_per_tomogram_formats_refuse_several_tomograms(tmp_path):
    picks = random_picks(several=True)
    for fmt in ("mod", "ndjson", "yaml"):
        with pytest.raises(ValueError, match="one tomogram"):
            write_coordinates(str(tmp_path / f"x.{fmt}"), picks, fmt)


# --------------------------------------------------------- hand-written files
def test_csv_written_by_hand_reads_to_known_values(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text("# picked by hand\n"
                    "tomoId,x,y,z,groupId,tdrot,tilt,narot,score\n"
                    "TS_01,10.5,20,30,2,30,60,0,0.75\n"
                    "\n"
                    "TS_02,0,1,2,0,0,0,0,0.5\n")
    picks = read_coordinates(str(path), voxel_size=8.0)
    assert list(picks.tomo_ids) == ["TS_01", "TS_02"]
    assert np.allclose(picks.positions, [[10.5, 20, 30], [0, 1, 2]])
    assert list(picks.group_ids) == [2, 0]
    assert np.allclose(picks.scores, [0.75, 0.5])
    # Dynamo angles: the z-axis has polar angle tilt and azimuth 90 - tdrot
    axis = picks.matrices[0, :3, :3] @ [0, 0, 1]
    polar, azimuth = np.radians(60), np.radians(90 - 30)
    assert np.allclose(axis, [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth),
                              np.cos(polar)], atol=1e-9)
    assert np.allclose(picks.matrices[1], np.eye(4))
    assert picks.voxel_size == 8.0


def test_csv_without_optional_columns_has_no_orientations_or_scores(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("x,y,z,tomoId\n1,2,3,TS_05\n")
    picks = read_coordinates(str(path))
    assert picks.matrices is None and picks.scores is None
    assert list(picks.group_ids) == [0]
    assert np.allclose(picks.positions, [[1, 2, 3]])


def relion_euler_matrix(rot, tilt, psi):
    """RELION's Euler_angles2matrix written out element by element (degrees)."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc, ss, cb]])


def test_relion5_star_written_by_hand_reads_to_known_values(tmp_path):
    path = tmp_path / "particles.star"
    path.write_text(
        "# version 50001\n\n"
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnTomoTiltSeriesPixelSize #2\n"
        "1 2.5\n\n"
        "data_particles\n\nloop_\n"
        "_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n_rlnCenteredCoordinateYAngst #3\n"
        "_rlnCenteredCoordinateZAngst #4\n_rlnAngleRot #5\n_rlnAngleTilt #6\n"
        "_rlnAnglePsi #7\n_rlnOriginXAngst #8\n_rlnOriginYAngst #9\n_rlnOriginZAngst #10\n"
        "_rlnClassNumber #11\n_rlnLCCmax #12\n"
        "TS_01 100.0 -50.0 0.0 30.0 50.0 -70.0 10.0 0.0 0.0 3 0.42\n"
        "TS_02 0.0 0.0 -15.0 0.0 0.0 0.0 0.0 0.0 0.0 1 0.10\n")
    shapes = {"TS_01": (64, 64, 33), "TS_02": (50, 40, 32)}
    picks = read_coordinates(str(path), voxel_size=10.0, tomo_shapes=shapes)
    # centred / 10 + N / 2 - origin / 10
    assert np.allclose(picks.positions, [[10 + 32 - 1, -5 + 32, 16.5], [25, 20, 16 - 1.5]])
    assert list(picks.group_ids) == [3, 1]
    assert np.allclose(picks.scores, [0.42, 0.10])
    assert np.allclose(picks.matrices[0, :3, :3], relion_euler_matrix(30, 50, -70), atol=1e-12)
    assert np.allclose(picks.matrices[1], np.eye(4))


def test_relion4_and_warp_star_name_the_tomogram_in_micrograph_name(tmp_path):
    """RELION 3/4 and WarpTools files have no rlnTomoName: the tsId is the file stem."""
    path = tmp_path / "warp.star"
    path.write_text(
        "data_particles\n\nloop_\n_rlnMicrographName #1\n_rlnCoordinateX #2\n"
        "_rlnCoordinateY #3\n_rlnCoordinateZ #4\n"
        "TS_01.tomostar 10.5 20.0 5.0\n"
        "tomograms/TS_02.mrc 1.0 2.0 3.0\n"
        "TS_01.tomostar 4.0 5.0 6.0\n")
    picks = read_coordinates(str(path), voxel_size=10.0)
    assert picks.tomo_ids.tolist() == ["TS_01", "TS_02", "TS_01"]
    assert np.allclose(picks.positions, [[10.5, 20, 5], [1, 2, 3], [4, 5, 6]])


def test_relion_subtomogram_angles_compose_and_rotate_the_origin_shift(tmp_path):
    path = tmp_path / "sub.star"
    path.write_text(
        "data_particles\n\nloop_\n_rlnTomoName\n_rlnCenteredCoordinateXAngst\n"
        "_rlnCenteredCoordinateYAngst\n_rlnCenteredCoordinateZAngst\n"
        "_rlnTomoSubtomogramRot\n_rlnTomoSubtomogramTilt\n_rlnTomoSubtomogramPsi\n"
        "_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n"
        "_rlnOriginXAngst\n_rlnOriginYAngst\n_rlnOriginZAngst\n"
        "TS_01 0 0 0 20 40 60 -10 30 15 10 20 -30\n")
    picks = read_coordinates(str(path), voxel_size=10.0, tomo_shapes={"TS_01": (40, 40, 40)})
    sub, part = relion_euler_matrix(20, 40, 60), relion_euler_matrix(-10, 30, 15)
    assert np.allclose(picks.matrices[0, :3, :3], sub @ part, atol=1e-12)
    assert np.allclose(picks.positions[0], 20 - sub @ [1.0, 2.0, -3.0], atol=1e-9)


def dynamo_line(values, n_columns=35):
    row = np.zeros(n_columns)
    for column, value in values.items():  # 1-based as Dynamo numbers them
        row[column - 1] = value
    return " ".join(f"{v:g}" for v in row)


def test_dynamo_table_written_by_hand_reads_to_known_values(tmp_path):
    path = tmp_path / "crop.tbl"
    path.write_text(dynamo_line({1: 1, 4: 1, 5: 0, 6: -1, 7: 0, 8: 90, 9: 0, 10: 0.9, 20: 2,
                                 21: 5, 22: 3, 24: 10, 25: 20, 26: 30}) + "\n"
                    + dynamo_line({1: 2, 7: 30, 8: 60, 9: 45, 10: 0.1, 20: 2, 22: 4,
                                   24: 1, 25: 2, 26: 3}, n_columns=26) + "\n")
    picks = read_coordinates(str(path), tomo_index={"TS_09": 2})
    assert list(picks.tomo_ids) == ["TS_09", "TS_09"]
    assert np.allclose(picks.positions, [[11, 20, 29], [1, 2, 3]])  # x + dx
    assert list(picks.group_ids) == [5, 0]  # reg (column 21) when any row has one
    assert np.allclose(picks.scores, [0.9, 0.1])
    # Dynamo turns the reference axis onto the particle with the transpose of
    # dynamo_euler2matrix = Rz(narot) Rx(tilt) Rz(tdrot): tilt 90 points it to +y
    assert np.allclose(picks.matrices[0, :3, :3] @ [0, 0, 1], [0, 1, 0], atol=1e-12)
    td, ti = np.radians([30, 60])
    assert np.allclose(picks.matrices[1, :3, :3] @ [0, 0, 1],
                       [np.sin(td) * np.sin(ti), np.cos(td) * np.sin(ti), np.cos(ti)])


def test_dynamo_table_map_sidecar_gives_tsids_and_class_is_the_fallback_group(tmp_path):
    path = tmp_path / "particles.tbl"
    path.write_text(dynamo_line({1: 1, 20: 1, 22: 7, 24: 4, 25: 5, 26: 6}) + "\n"
                    + dynamo_line({1: 2, 20: 3, 22: 8, 24: 1, 25: 1, 26: 1}) + "\n")
    (tmp_path / "particles.doc").write_text("1 /data/tomos/TS_alpha.mrc\n3 /data/TS_beta.rec\n")
    picks = read_coordinates(str(path))
    assert list(picks.tomo_ids) == ["TS_alpha", "TS_beta"]
    assert list(picks.group_ids) == [7, 8]


def test_written_dynamo_table_has_35_columns_and_a_table_map(tmp_path):
    picks = random_picks()
    path = str(tmp_path / "out.tbl")
    write_coordinates(path, picks, tomo_index={"TS_01": 4, "TS_02": 9})
    rows = [ln.split() for ln in open(path)]
    assert {len(r) for r in rows} == {35}
    assert {int(r[19]) for r in rows} == {4, 9}
    assert open(str(tmp_path / "out.doc")).read().split() == ["4", "TS_01", "9", "TS_02"]


def imod_model_bytes(objects, pixel_nm=1.0, units=-9, flags=1 << 10, extra_chunks=True):
    """An IMOD V1.2 binary model built from the binary specification.

    objects: list of (name, [contour points (K, 3)]).
    """
    out = [b"IMOD", b"V1.2"]
    out.append(struct.pack(">128s9i6f5ifii3f", b"hand.mod", 64, 64, 32, len(objects), flags,
                           1, 1, 0, 255, 0, 0, 0, 1, 1, 1, 0, 0, 0, 3, 128, pixel_nm, units,
                           0, 0, 0, 0))
    for name, contours in objects:
        out.append(b"OBJT")
        out.append(struct.pack(">64s16I4i3fi8B2i", name.encode(), *([0] * 16), len(contours),
                               1 << 9, 0, 1, 0.0, 1.0, 0.0, 4, 0, 3, 1, 1, 0, 0, 0, 0,
                               1 if extra_chunks else 0, 0))
        for pts in contours:
            pts = np.asarray(pts, dtype=">f4").reshape(-1, 3)
            out.append(b"CONT" + struct.pack(">iIii", len(pts), 0, 0, 0) + pts.tobytes())
        if extra_chunks:  # a one-triangle mesh and a material chunk, to be skipped
            out.append(b"MESH" + struct.pack(">3i2h", 3, 2, 0, 0, 0)
                       + np.zeros(9, ">f4").tobytes() + np.array([-25, -1], ">i4").tobytes())
            out.append(b"IMAT" + struct.pack(">i", 16) + bytes(16))
    out.append(b"IEOF")
    return b"".join(out)


def test_imod_model_written_by_hand_reads_to_known_values(tmp_path):
    path = tmp_path / "TS_03.mod"
    path.write_bytes(imod_model_bytes([
        ("membrane", [[[10.5, 20.5, 5.0], [11.5, 20.5, 5.0]], [[0.5, 0.5, 0.0]]]),
        ("ribosomes", [[[30.0, 40.0, 12.0]]])]))
    picks = read_coordinates(str(path))
    assert list(picks.tomo_ids) == ["TS_03"] * 4
    # IMOD: centre of voxel [k, j, i] is (i + 0.5, j + 0.5, k)
    assert np.allclose(picks.positions, [[10, 20, 5], [11, 20, 5], [0, 0, 0], [29.5, 39.5, 12]])
    assert list(picks.group_ids) == [1, 1, 1, 2]           # object numbers
    assert picks.voxel_size == pytest.approx(10.0)           # 1 nm pixels
    by_contour = read_coordinates(str(path), group_by="contour", tomo_id="TS_x")
    assert list(by_contour.group_ids) == [1, 1, 2, 3]
    assert set(by_contour.tomo_ids) == {"TS_x"}


def test_imod_model_stored_flipped_is_flipped_back(tmp_path):
    path = tmp_path / "flipped.mod"
    path.write_bytes(imod_model_bytes([("o", [[[10.5, 7.0, 20.5]]])],
                                      flags=(1 << 10) | (1 << 16), extra_chunks=False))
    assert np.allclose(read_coordinates(str(path)).positions, [[10, 20, 7]])


def test_cryoet_portal_ndjson_written_by_hand_reads_to_known_values(tmp_path):
    path = tmp_path / "TS_04_ribosome.ndjson"
    rz90 = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    lines = [{"type": "orientedPoint", "location": {"x": 1.5, "y": 2, "z": 3},
              "xyz_rotation_matrix": rz90},
             {"type": "orientedPoint", "location": {"x": 4, "y": 5, "z": 6},
              "xyz_rotation_matrix": np.eye(3).tolist()}]
    path.write_text("\n".join(json.dumps(ln) for ln in lines) + "\n")
    picks = read_coordinates(str(path), tomo_id="TS_04", voxel_size=13.48)
    assert np.allclose(picks.positions, [[1.5, 2, 3], [4, 5, 6]])
    assert np.allclose(picks.matrices[0, :3, :3], rz90)
    assert list(picks.tomo_ids) == ["TS_04", "TS_04"]
    assert picks.voxel_size == 13.48


def test_portal_rotation_is_relions_matrix(tmp_path):
    # the portal converts RELION angles with Rotation.from_euler('ZYZ', ...).inv()
    portal = Rotation.from_euler("ZYZ", [30, 50, -70], degrees=True).inv().as_matrix()
    assert np.allclose(portal, relion_euler_matrix(30, 50, -70))


def test_picket_yaml_written_by_hand_reads_to_known_values(tmp_path):
    path = tmp_path / "predicted_centroids_0_ffts_gmm_cc.yaml"
    path.write_text("Predicted_Particle_Centroid_Coordinates:\n"
                    "- x: 12\n  y: 40\n  z: 7\n"
                    "- {x: 0, y: 1, z: 2}\n"
                    "metadata:\n  fex_mode: ffts\n  tomogram_path: /data/TS_07.mrc\n")
    picks = read_coordinates(str(path))
    assert np.allclose(picks.positions, [[12, 40, 7], [0, 1, 2]])
    assert list(picks.tomo_ids) == ["TS_07", "TS_07"]
    assert picks.matrices is None and picks.scores is None


def test_relion_and_dynamo_angles_of_one_particle_give_one_axis(tmp_path):
    picks = random_picks(n=8, several=False)
    write_coordinates(str(tmp_path / "a.star"), picks, tomo_shapes=SHAPES)
    write_coordinates(str(tmp_path / "a.tbl"), picks)
    import starfile
    star = starfile.read(str(tmp_path / "a.star"))
    table = np.loadtxt(str(tmp_path / "a.tbl"))
    for i in range(len(picks)):
        relion_axis = relion_euler_matrix(*star.loc[i, ["rlnAngleRot", "rlnAngleTilt",
                                                         "rlnAnglePsi"]]) @ [0, 0, 1]
        tdrot, tilt = np.radians(table[i, 6:8])
        dynamo_axis = [np.sin(tdrot) * np.sin(tilt), np.cos(tdrot) * np.sin(tilt), np.cos(tilt)]
        assert np.allclose(relion_axis, dynamo_axis, atol=1e-5)
        assert np.allclose(relion_axis, picks.matrices[i, :3, :3] @ [0, 0, 1], atol=1e-5)


# ----------------------------------------------------------------- detection
@pytest.mark.parametrize("fmt", FORMATS)
def test_format_is_detected_from_extension_and_from_content(tmp_path, fmt):
    picks = random_picks(n=5, several=False)
    path = str(tmp_path / f"picks.{EXT[fmt]}")
    write_coordinates(path, picks, tomo_shapes=SHAPES)  # format from the extension
    assert detect_format(path) == fmt
    anonymous = str(tmp_path / "picks.txt")
    shutil.copy(path, anonymous)
    assert detect_format(anonymous) == fmt
    back = read_coordinates(anonymous, voxel_size=10.0, tomo_shapes=SHAPES, tomo_id="TS_01")
    assert len(back) == 5


def test_undetectable_content_and_unknown_format_raise(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello world\n")
    with pytest.raises(ValueError, match="notes.txt"):
        read_coordinates(str(path))
    with pytest.raises(ValueError, match="unknown coordinate format 'xml'"):
        read_coordinates(str(path), "xml")
    with pytest.raises(ValueError, match="cannot tell"):
        write_coordinates(str(tmp_path / "out.dat"), random_picks(3))


# ----------------------------------------------------------------- bad input
def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    missing = str(tmp_path / "nowhere.csv")
    for fmt in ("auto",) + FORMATS:
        with pytest.raises(FileNotFoundError, match="nowhere.csv"):
            read_coordinates(missing, fmt)


@pytest.mark.parametrize("text, message", [
    ("tomoId,x,y,z\nTS_1,1,2,3\nTS_1,1,abc,3\n", r"bad\.csv, line 3: y is 'abc'"),
    ("tomoId,x,y,z\nTS_1,1,2\n", r"bad\.csv, line 2: 3 fields for 4 columns"),
    ("tomoId,x,y,z,colour\nTS_1,1,2,3,red\n", r"bad\.csv, line 1: unknown column 'colour'"),
    ("tomoId,x,y\nTS_1,1,2\n", r"line 1: missing column 'z'"),
    ("tomoId,x,y,z,tdrot,tilt\nTS_1,1,2,3,0,0\n", "come together"),
    ("tomoId,x,y,z,groupId\nTS_1,1,2,3,1.5\n", r"line 2: groupId is '1.5'"),
])
def test_bad_csv_raises_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_coordinates(str(path))


def test_bad_files_of_other_formats_raise_naming_the_place(tmp_path):
    tbl = tmp_path / "bad.tbl"
    tbl.write_text(dynamo_line({1: 1}) + "\n1 2 3\n")
    with pytest.raises(ValueError, match=r"bad\.tbl, line 2: 3 columns"):
        read_coordinates(str(tbl))
    tbl.write_text(dynamo_line({1: 1, 20: 4}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: tomogram index 4 has no tsId"):
        read_coordinates(str(tbl), tomo_index={"TS_01": 1})

    nd = tmp_path / "bad.ndjson"
    nd.write_text('{"type": "point", "location": {"x": 1, "y": 2, "z": 3}}\n{"type": point}\n')
    with pytest.raises(ValueError, match=r"bad\.ndjson, line 2: not JSON"):
        read_coordinates(str(nd))
    nd.write_text('{"location": {"x": 1, "y": 2, "z": 3}, "xyz_rotation_matrix": '
                  '[[1,0,0],[0,1,0],[0,0,1]]}\n{"location": {"x": 1, "y": 2, "z": 3}}\n')
    with pytest.raises(ValueError, match=r"line 2: point without xyz_rotation_matrix"):
        read_coordinates(str(nd))

    ym = tmp_path / "bad.yaml"
    ym.write_text("Predicted_Particle_Centroid_Coordinates:\n- {x: 1, y: 2}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: entry 1 .* needs numeric x, y and z"):
        read_coordinates(str(ym))
    ym.write_text("Predicted_Particle_Centroid_Coordinates: [\n  {x: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line \d+: not valid YAML"):
        read_coordinates(str(ym))

    mod = tmp_path / "bad.mod"
    mod.write_bytes(imod_model_bytes([("o", [[[1, 2, 3], [4, 5, 6]]])])[:-40])
    with pytest.raises(ValueError, match=r"bad\.mod, byte \d+: file ends inside"):
        read_coordinates(str(mod))
    mod.write_bytes(b"NOPE" + bytes(300))
    with pytest.raises(ValueError, match="not an IMOD model"):
        read_coordinates(str(mod), "mod")

    star = tmp_path / "bad.star"
    star.write_text("data_particles\n\nloop_\n_rlnTomoName\n_rlnCenteredCoordinateXAngst\n"
                    "_rlnCenteredCoordinateYAngst\n_rlnCenteredCoordinateZAngst\n"
                    "TS_01 1 2 3\nTS_02 1 x 3\n")
    with pytest.raises(ValueError, match="tomo_shapes.*'TS_02'"):
        read_coordinates(str(star), voxel_size=10.0, tomo_shapes={"TS_01": (10, 10, 10)})
    with pytest.raises(ValueError, match=r"bad\.star: particle 2 has rlnCenteredCoordinateYAngst"):
        read_coordinates(str(star), voxel_size=10.0, tomo_shapes=SHAPES | {"TS_02": (9, 9, 9)})
    with pytest.raises(ValueError, match="give voxel_size"):
        read_coordinates(str(star), tomo_shapes=SHAPES)


# ----------------------------------------------------------------- rescaling
def test_reading_rescales_positions_to_the_target_voxel_size(tmp_path):
    picks = random_picks(n=10)
    path = str(tmp_path / "p.csv")
    write_coordinates(path, picks)
    half = read_coordinates(path, voxel_size=10.0, target_voxel_size=5.0)
    assert half.voxel_size == 5.0
    assert np.abs(half.positions - 2 * picks.positions).max() < POS_TOL
    with pytest.raises(ValueError, match="voxel size of the coordinates is unknown"):
        read_coordinates(path, target_voxel_size=5.0)


def test_star_angstrom_coordinates_read_at_another_voxel_size(tmp_path):
    picks = random_picks(n=10)
    path = str(tmp_path / "p.star")
    write_coordinates(path, picks, tomo_shapes=SHAPES)  # 10 Å voxels
    doubled = {t: tuple(2 * np.array(s)) for t, s in SHAPES.items()}
    fine = read_coordinates(path, voxel_size=5.0, tomo_shapes=doubled)
    assert np.abs(fine.positions - 2 * picks.positions).max() < POS_TOL
    assert fine.voxel_size == 5.0


# ----------------------------------------------------------------- phantoms
def test_simulator_particle_csv_reads_back_the_phantom_truth(tmp_path):
    from tomopick.core.simulate import simulate_tomogram
    phantom = simulate_tomogram(shape=(48, 64, 64), voxel_size=10.0, n_particles=6,
                                n_vesicles=1, proteins_per_vesicle=4, seed=3)
    phantom.save(str(tmp_path), "ph")
    picks = read_coordinates(str(tmp_path / "ph_particles.csv"), voxel_size=10.0)
    truth = phantom.particles
    assert np.abs(picks.positions - truth.positions).max() < POS_TOL
    assert np.array_equal(picks.group_ids, truth.group_ids)
    assert rotation_error_deg(picks.matrices, truth.matrices).max() < ANGLE_TOL
    # and every other multi-tomogram format carries the same truth through (the
    # rotations only: a matrix shift would be folded into the written position)
    truth = Picks(truth.tomo_ids, truth.positions, truth.group_ids,
                  homogeneous(truth.matrices[:, :3, :3]), None, truth.voxel_size)
    shapes = {truth.tomo_ids[0]: (64, 64, 48)}
    for fmt in ("star", "tbl"):
        path = str(tmp_path / f"ph.{fmt}")
        write_coordinates(path, truth, tomo_shapes=shapes)
        back = read_coordinates(path, voxel_size=10.0, tomo_shapes=shapes)
        assert np.abs(back.positions - truth.positions).max() < POS_TOL
        assert rotation_error_deg(back.matrices, truth.matrices).max() < ANGLE_TOL


def test_2d_mrc_reads_as_one_section_memory_mapped_or_not(tmp_path):
    import mrcfile

    from tomopick.core.formats.mrc import read_mrc
    path = str(tmp_path / "section.mrc")
    section = np.arange(12, dtype=np.float32).reshape(3, 4)
    with mrcfile.new(path) as mrc:
        mrc.set_data(section)
    loaded, mapped = read_mrc(path), read_mrc(path, mmap=True)
    assert loaded.shape == mapped.shape == (1, 3, 4)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped[0], section)
