"""CryoET Data Portal point annotations (.ndjson): one JSON object per line.

Each line is ``{"type": "point" | "orientedPoint", "location": {"x", "y",
"z"}[, "xyz_rotation_matrix": [[...], [...], [...]]]}``; instance points add
``"instance_id"``. One file annotates one tomogram (the tsId comes from the
caller or the file name).

Locations are voxels of the annotation's voxel spacing, 0-based with voxel
centres on integers (the portal checks ``0 <= x <= size_x - 1``): tomopick's
bottom-left positions as they are. ``xyz_rotation_matrix`` (rows and
columns in x, y, z order) maps the particle's reference frame onto the
tomogram: the portal converts RELION angles to it as
``Rotation.from_euler('ZYZ', (rot, tilt, psi)).inv()``, RELION's own
matrix, so it is tomopick's R as it is. ``instance_id`` is read as the group
id; written files are plain (oriented) points without group or score.
"""
import json

import numpy as np

from ..picks import Picks
from ..rotations import homogeneous
from .shared import (_centre_positions, _line_error, _require_file, _single_tomogram,
                     tsid_from_filename)


def read_ndjson(path, voxel_size=None, tomo_id=None, **_):
    """Read a CryoET Data Portal point / oriented-point annotation file.

    Parameters
    ----------
    path : str
    voxel_size : float, optional
        Å per voxel of the annotation (recorded in the returned table).
    tomo_id : str, optional
        tsId of the tomogram; default: the file name without extension.

    Returns
    -------
    Picks
        ``matrices`` when every point carries ``xyz_rotation_matrix``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        On a line that is not a JSON object with a numeric location, a
        rotation that is not a proper 3x3 rotation, or a file mixing oriented
        and plain points (the message names the file and the line).

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "TS_1.ndjson")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"type": "point", "location": {"x": 1, "y": 2, "z": 3}, "instance_id": 5}\\n')
    >>> picks = read_ndjson(path, voxel_size=10.0)
    >>> picks.tomo_ids.tolist(), picks.positions.tolist(), picks.group_ids.tolist()
    (['TS_1'], [[1.0, 2.0, 3.0]], [5])
    >>> tmp.cleanup()
    """
    _require_file(path)
    positions, rotations, groups, lines = [], [], [], []
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise _line_error(path, line_number, f"not JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("location"), dict):
                raise _line_error(path, line_number, "no 'location' object")
            try:
                location = [float(record["location"][axis]) for axis in "xyz"]
            except (KeyError, TypeError, ValueError):
                raise _line_error(path, line_number,
                                  "location needs numeric 'x', 'y' and 'z'") from None
            if not np.all(np.isfinite(location)):
                raise _line_error(path, line_number, f"location {location} is not finite")
            positions.append(location)
            lines.append(line_number)
            groups.append(record.get("instance_id", 0) or 0)
            if "xyz_rotation_matrix" in record:
                try:
                    R = np.array(record["xyz_rotation_matrix"], dtype=float)
                except (TypeError, ValueError):
                    raise _line_error(path, line_number,
                                      "xyz_rotation_matrix is not numeric") from None
                if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-3) \
                        or np.linalg.det(R) < 0:
                    raise _line_error(path, line_number,
                                      "xyz_rotation_matrix is not a 3x3 rotation")
                rotations.append((line_number, R))
    matrices = None
    if rotations:
        if len(rotations) != len(positions):
            oriented = {ln for ln, _ in rotations}
            first = next(ln for ln in lines if ln not in oriented)
            raise _line_error(path, first, "point without xyz_rotation_matrix in a file of "
                              "oriented points")
        matrices = homogeneous(np.array([R for _, R in rotations]))
    try:
        group_ids = np.array(groups, dtype=int)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: instance_id values must be integers") from None
    return Picks(tomo_id or tsid_from_filename(path), np.array(positions).reshape(-1, 3),
                 group_ids, matrices, None, voxel_size)


def write_ndjson(path, picks, **_):
    """Write the picks of one tomogram as a CryoET Data Portal annotation.

    Lines are ``orientedPoint`` with ``xyz_rotation_matrix`` when the table
    has matrices, else ``point``. Matrix shifts are folded into the location.

    Raises
    ------
    ValueError
        If the picks span several tomograms.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "TS_1.ndjson")
    >>> write_ndjson(path, Picks("TS_1", [[1, 2, 3]], matrices=np.eye(4)[None]))
    >>> print(open(path).read())  # doctest: +ELLIPSIS
    {"type": "orientedPoint", "location": {"x": 1.0, "y": 2.0, "z": 3.0}, "xyz_rotation_matrix": ...}
    <BLANKLINE>
    >>> read_ndjson(path).matrices[0].tolist() == np.eye(4).tolist()
    True
    >>> tmp.cleanup()
    """
    _single_tomogram(picks, path)
    positions = _centre_positions(picks)
    with open(path, "w") as handle:
        for i in range(len(picks)):
            x, y, z = (round(float(v), 4) for v in positions[i])
            record = {"type": "point", "location": {"x": x, "y": y, "z": z}}
            if picks.matrices is not None:
                record["type"] = "orientedPoint"
                record["xyz_rotation_matrix"] = [[round(float(v), 8) for v in row]
                                                 for row in picks.matrices[i, :3, :3]]
            handle.write(json.dumps(record) + "\n")
