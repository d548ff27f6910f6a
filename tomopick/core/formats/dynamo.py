"""Dynamo tables (.tbl): one particle per line, whitespace-separated numbers.

Columns used (1-based, as Dynamo numbers them): 1 tag, 4-6 shifts dx dy dz,
7-9 Euler angles tdrot tilt narot (degrees), 10 cc (score), 13 ftype,
14-17 ymintilt ymaxtilt xmintilt xmaxtilt, 20 tomogram index, 21 reg,
22 class, 24-26 position x y z. Lines need at least 26 columns; written
lines have Dynamo's 35.

Positions
    The particle centre is ``(x + dx, y + dy, z + dz)``, taken as tomopick
    voxels with no offset: scipion-em-dynamo sets Dynamo's x, y, z as
    BOTTOM_LEFT_CORNER coordinates as they are. The shifts are folded into the
    position (written tables have zero shifts).

Orientations
    Dynamo's ``dynamo_euler2matrix(tdrot, tilt, narot)`` is
    ``Rz(narot) Rx(tilt) Rz(tdrot)`` (what scipion-em-dynamo stores as its
    Scipion matrix); Dynamo turns references onto particles with its
    transpose (``dynamo_angles2orientations``: the particle axis is
    ``M^T (0, 0, 1)``). tomopick's R maps the reference frame onto the
    tomogram, so ``R = (Rz(narot) Rx(tilt) Rz(tdrot))^T``; the particle's
    z-axis is (sin tdrot sin tilt, cos tdrot sin tilt, cos tilt).

Group and tomogram
    The group id is written to both reg (21) and class (22); on reading, reg
    is used when any row has one, else class (scipion-em-dynamo reads class).
    The tomogram column holds an index: pass ``tomo_index={tsId: int}``. When
    writing, the mapping (default: the sorted tsIds numbered from 1) is also
    written as a sidecar ``<table stem>.doc``, Dynamo's table map layout
    (``index name`` per line); a reader without ``tomo_index`` looks for that
    file and takes each name's base name without extension as the tsId (so
    real Dynamo table maps listing tomogram paths work too).
"""
import os

import numpy as np

from ..picks import Picks
from ..rotations import dynamo_euler_to_matrix, homogeneous, matrix_to_dynamo_euler
from .shared import _centre_positions, _line_error, _require_file, tsid_from_filename

N_COLUMNS = 35
MIN_COLUMNS = 26
# 0-based column indices
TAG, SHIFTS, ANGLES, CC, FTYPE, TILTS, TOMO, REG, CLASS, XYZ = \
    0, slice(3, 6), slice(6, 9), 9, 12, slice(13, 17), 19, 20, 21, slice(23, 26)


# Dynamo's convention is tomopick's shared one (tomopick.core.rotations)
dynamo_rotation = dynamo_euler_to_matrix
dynamo_angles = matrix_to_dynamo_euler


def table_map_path(path):
    """The sidecar table map of a table: ``<stem>.doc`` beside it.

    Examples
    --------
    >>> table_map_path("/data/particles.tbl")
    '/data/particles.doc'
    """
    return os.path.splitext(path)[0] + ".doc"


def _read_table_map(path):
    """A Dynamo table map: ``{index: tsId}`` from lines ``index name``.

    The tsId is the base name of ``name`` without its extension.
    """
    mapping = {}
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) < 2:
                raise _line_error(path, line_number, "expected 'index name'")
            try:
                index = int(float(fields[0]))
            except ValueError:
                raise _line_error(path, line_number,
                                  f"tomogram index {fields[0]!r} is not a number") from None
            name = " ".join(fields[1:])
            mapping[index] = tsid_from_filename(name)
    return mapping


def read_tbl(path, voxel_size=None, tomo_index=None, tomo_id=None, **_):
    """Read a Dynamo table.

    Parameters
    ----------
    path : str
    voxel_size : float, optional
        Å per voxel of the positions (recorded in the returned table).
    tomo_index : dict of str -> int, optional
        tsId of each tomogram index of column 20. Without it the sidecar
        ``<stem>.doc`` is used when present, else ``tomo_id`` for every row,
        else the index itself (as text).
    tomo_id : str, optional

    Returns
    -------
    Picks
        With matrices and scores (cc).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        On a line with too few or non-numeric columns, or a tomogram index
        with no tsId (the message names the file and the line).

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "crop.tbl")
    >>> write_tbl(path, Picks(["TS_7", "TS_3"], [[10, 20, 30], [1, 2, 3]], [1, 2], scores=[0.5, 0.25]))
    >>> picks = read_tbl(path)              # the tsIds come from the table map crop.doc
    >>> picks.tomo_ids.tolist(), picks.positions.tolist(), picks.group_ids.tolist()
    (['TS_7', 'TS_3'], [[10.0, 20.0, 30.0], [1.0, 2.0, 3.0]], [1, 2])
    >>> picks.scores.tolist()
    [0.5, 0.25]
    >>> tmp.cleanup()
    """
    _require_file(path)
    rows, lines = [], []
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) < MIN_COLUMNS:
                raise _line_error(path, line_number, f"{len(fields)} columns, a Dynamo table "
                                  f"line needs at least {MIN_COLUMNS}")
            try:
                values = [float(f) for f in fields[:MIN_COLUMNS]]
            except ValueError:
                bad = next(f for f in fields if not _is_number(f))
                raise _line_error(path, line_number, f"{bad!r} is not a number") from None
            if not np.all(np.isfinite(values)):
                raise _line_error(path, line_number, "non-finite value")
            rows.append(values)
            lines.append(line_number)
    table = np.array(rows, dtype=float).reshape(-1, MIN_COLUMNS)

    if tomo_index:
        index_to_tsid = {int(i): str(t) for t, i in tomo_index.items()}
    elif os.path.isfile(table_map_path(path)):
        index_to_tsid = _read_table_map(table_map_path(path))
    else:
        index_to_tsid = None
    indices = table[:, TOMO].astype(int)
    if index_to_tsid is not None:
        unknown = [k for k, i in enumerate(indices) if i not in index_to_tsid]
        if unknown:
            raise _line_error(path, lines[unknown[0]],
                              f"tomogram index {indices[unknown[0]]} has no tsId in the table map")
        tomo_ids = np.array([index_to_tsid[i] for i in indices], dtype=str)
    elif tomo_id is not None:
        tomo_ids = np.full(len(table), str(tomo_id))
    else:
        tomo_ids = indices.astype(str)

    positions = table[:, XYZ] + table[:, SHIFTS]
    matrices = homogeneous(dynamo_rotation(*table[:, ANGLES].T))
    groups = table[:, REG] if np.any(table[:, REG]) else table[:, CLASS]
    return Picks(tomo_ids, positions, groups.astype(int), matrices, table[:, CC].copy(),
                 voxel_size)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_tbl(path, picks, tomo_index=None, tilt_range=None, write_map=True, **_):
    """Write a `Picks` table as a Dynamo table (35 columns).

    Parameters
    ----------
    path : str
    picks : Picks
    tomo_index : dict of str -> int, optional
        Tomogram index of each tsId; default: sorted tsIds numbered from 1.
    tilt_range : (float, float), optional
        Tilt range of the tilt series (degrees), written as a single-axis
        missing wedge (ftype 1). Without it ftype is 0 (no wedge).
    write_map : bool, optional
        Also write the table map ``<stem>.doc`` (index and tsId per line).

    Raises
    ------
    ValueError
        If ``tomo_index`` lacks a tsId of the table.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "crop.tbl")
    >>> write_tbl(path, Picks(["TS_7", "TS_3"], [[10, 20, 30], [1, 2, 3]]), tilt_range=(-60, 60))
    >>> row = np.loadtxt(path)[0]
    >>> row.shape, row[19], row[23:26].tolist(), row[12:17].tolist()
    ((35,), 2.0, [10.0, 20.0, 30.0], [1.0, -60.0, 60.0, -60.0, 60.0])
    >>> print(open(table_map_path(path)).read())
    1 TS_3
    2 TS_7
    <BLANKLINE>
    >>> tmp.cleanup()
    """
    ids = sorted(set(picks.tomo_ids))
    if tomo_index is None:
        tomo_index = {t: i + 1 for i, t in enumerate(ids)}
    missing = [t for t in ids if t not in tomo_index]
    if missing:
        raise ValueError(f"{path}: tomo_index has no index for tsId {missing[0]!r}")
    n = len(picks)
    table = np.zeros((n, N_COLUMNS))
    table[:, TAG] = np.arange(1, n + 1)
    table[:, 1] = 1  # aligned
    table[:, 2] = 1  # averaged
    if picks.matrices is not None and n:
        table[:, ANGLES] = np.column_stack(dynamo_angles(picks.matrices))
    if picks.scores is not None:
        table[:, CC] = picks.scores
    if tilt_range is not None:
        table[:, FTYPE] = 1
        table[:, TILTS] = [tilt_range[0], tilt_range[1], tilt_range[0], tilt_range[1]]
    table[:, TOMO] = [tomo_index[t] for t in picks.tomo_ids]
    table[:, REG] = picks.group_ids
    table[:, CLASS] = picks.group_ids
    table[:, XYZ] = _centre_positions(picks)
    integer = {TAG, 1, 2, FTYPE, TOMO, REG, CLASS}
    formats = ["%d" if j in integer else "%.6g" if j == CC else "%.4f" for j in range(N_COLUMNS)]
    np.savetxt(path, table, fmt=formats, delimiter=" ")
    if write_map:
        with open(table_map_path(path), "w") as handle:
            for t in ids:
                handle.write(f"{int(tomo_index[t])} {t}\n")
