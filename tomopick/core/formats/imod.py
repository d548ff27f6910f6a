"""IMOD binary models (.mod): objects of contours of points, one tomogram.

Layout (IMOD's binary model specification, all numbers big-endian): the
8-byte id ``IMODV1.2``, a 232-byte model header, then chunks, each opened by
a 4-character id: ``OBJT`` (176-byte object header) followed by its ``CONT``
contours (16-byte header: point count, flags, time, surface; then x, y, z
float32 per point) and ``MESH`` chunks; optional chunks carry their size
after the id; ``IEOF`` ends the file.

Coordinates
    IMOD's model coordinates run from 0 to NX in x and y (pixel edges) but
    from -0.5 to NZ - 0.5 in z (integer z on each section), so the centre of
    array element ``[k, j, i]`` is the model point (i + 0.5, j + 0.5, k).
    tomopick positions are therefore ``(x - 0.5, y - 0.5, z)``. (Scipion
    counts IMOD among the BOTTOM_LEFT_CORNER programs and applies no half
    voxel; IMOD's own documentation is followed here.) Models flagged as
    stored with y and z flipped are flipped back.

Groups
    Written models hold one object per group id, its points one scattered
    contour, the object named ``tomopick group <id>``. On reading, an object
    so named gives that id; any other object gives its number (from 1), or,
    with ``group_by='contour'``, each contour its running number (from 1).

Models carry no orientation or score. The pixel size of the header (with its
units) gives the voxel size when the caller does not.
"""
import os
import re
import struct

import numpy as np

from ..picks import Picks
from .shared import _centre_positions, _require_file, _single_tomogram, tsid_from_filename

MODEL_HEADER = struct.Struct(">128s9i6f5ifii3f")    # 232 bytes
OBJECT_HEADER = struct.Struct(">64s16I4i3fi8B2i")   # 176 bytes
CONTOUR_HEADER = struct.Struct(">iIii")             # 16 bytes
MESH_HEADER = struct.Struct(">3i2h")                # 16 bytes
FLIP_YZ = 1 << 16           # model flag: y and z stored flipped
Z_FROM_MINUS_HALF = 1 << 10  # model flag: z coordinates start at -0.5
OBJ_OPEN = 1 << 3
OBJ_SCATTERED = 1 << 9
UNITS_IN_ANGSTROM = {-10: 1.0, -9: 10.0, -6: 1e4, -3: 1e7}  # units code -> Å per unit
GROUP_NAME = re.compile(r"^tomopick group (-?\d+)$")
HALF_VOXEL = np.array([0.5, 0.5, 0.0])


def _error(path, offset, message):
    return ValueError(f"{path}, byte {offset}: {message}")


def read_mod(path, voxel_size=None, tomo_id=None, group_by="object", **_):
    """Read the points of an IMOD binary model.

    Parameters
    ----------
    path : str
    voxel_size : float, optional
        Å per voxel; default: the model header's pixel size, when its units
        are physical.
    tomo_id : str, optional
        tsId of the tomogram; default: the file name without extension.
    group_by : {'object', 'contour'}, optional
        What a group id stands for (see the module doc).

    Returns
    -------
    Picks
        No matrices, no scores.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not an IMOD V1.2 binary model or is truncated (the message
        names the byte offset).

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "TS_1.mod")
    >>> write_mod(path, Picks("TS_1", [[10, 20, 30], [5.5, 6, 7]], [1, 4]), voxel_size=13.5,
    ...           shape=(64, 64, 40))
    >>> picks = read_mod(path)
    >>> picks.tomo_ids.tolist(), picks.positions.tolist(), picks.group_ids.tolist()
    (['TS_1', 'TS_1'], [[10.0, 20.0, 30.0], [5.5, 6.0, 7.0]], [1, 4])
    >>> round(picks.voxel_size, 3)          # from the header's pixel size
    13.5
    >>> tmp.cleanup()
    """
    _require_file(path)
    if group_by not in ("object", "contour"):
        raise ValueError(f"group_by must be 'object' or 'contour', not {group_by!r}")
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] != b"IMOD":
        raise _error(path, 0, "not an IMOD model (the file does not start with 'IMOD')")
    if data[4:8] != b"V1.2":
        raise _error(path, 4, f"IMOD model version {data[4:8]!r} is not supported (V1.2 only)")
    offset = 8

    def take(size, what):
        nonlocal offset
        if offset + size > len(data):
            raise _error(path, offset, f"file ends inside {what}")
        chunk = data[offset:offset + size]
        offset += size
        return chunk

    header = MODEL_HEADER.unpack(take(MODEL_HEADER.size, "the model header"))
    flags, objects = header[5], header[4]
    pixel_size, units = header[21], header[22]
    points, groups = [], []
    object_number, contour_number, group = 0, 0, 0
    while offset < len(data):
        chunk_id = take(4, "a chunk id")
        if chunk_id == b"IEOF":
            break
        if chunk_id == b"OBJT":
            obj = OBJECT_HEADER.unpack(take(OBJECT_HEADER.size, "an object header"))
            object_number += 1
            name = obj[0].split(b"\0", 1)[0].decode("latin-1").strip()
            match = GROUP_NAME.match(name)
            group = int(match.group(1)) if match else object_number
        elif chunk_id == b"CONT":
            if object_number == 0:
                raise _error(path, offset - 4, "contour before any object")
            count = CONTOUR_HEADER.unpack(take(CONTOUR_HEADER.size, "a contour header"))[0]
            if count < 0:
                raise _error(path, offset - CONTOUR_HEADER.size, f"contour of {count} points")
            xyz = np.frombuffer(take(12 * count, "contour points"), dtype=">f4").reshape(count, 3)
            contour_number += 1
            points.append(xyz.astype(float))
            groups.append(np.full(count, contour_number if group_by == "contour" else group))
        elif chunk_id == b"MESH":
            vsize, lsize = MESH_HEADER.unpack(take(MESH_HEADER.size, "a mesh header"))[:2]
            take(12 * vsize + 4 * lsize, "mesh data")
        else:
            size = struct.unpack(">i", take(4, f"the size of chunk {chunk_id!r}"))[0]
            if size < 0:
                raise _error(path, offset - 4, f"chunk {chunk_id!r} of negative size")
            take(size, f"chunk {chunk_id!r}")
    if object_number != objects:
        raise _error(path, offset, f"the header announces {objects} objects, "
                     f"the file holds {object_number}")

    xyz = np.concatenate(points) if points else np.zeros((0, 3))
    if flags & FLIP_YZ:
        xyz = xyz[:, [0, 2, 1]]
    positions = xyz - HALF_VOXEL
    if voxel_size is None and units in UNITS_IN_ANGSTROM and pixel_size > 0:
        voxel_size = float(pixel_size) * UNITS_IN_ANGSTROM[units]
    group_ids = np.concatenate(groups).astype(int) if groups else np.zeros(0, dtype=int)
    return Picks(tomo_id or tsid_from_filename(path), positions, group_ids, None, None,
                 voxel_size)


def write_mod(path, picks, voxel_size=None, tomo_shapes=None, shape=None, point_size=3, **_):
    """Write the picks of one tomogram as an IMOD binary model.

    One object per group id (named ``tomopick group <id>``), each holding its
    points as one contour of scattered points. Matrix shifts are folded into
    the positions; orientations and scores are not stored.

    Parameters
    ----------
    path : str
    picks : Picks
        Picks of a single tomogram.
    voxel_size : float, optional
        Å per voxel, written as the pixel size in nm; default
        ``picks.voxel_size``.
    tomo_shapes : dict of str -> (nx, ny, nz), optional
    shape : (nx, ny, nz), optional
        Volume size for the header; default from ``tomo_shapes``, else the
        extent of the points.
    point_size : int, optional
        Sphere radius 3dmod draws the points with (pixels).

    Raises
    ------
    ValueError
        If the picks span several tomograms.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "TS_1.mod")
    >>> write_mod(path, Picks("TS_1", [[10, 20, 30]]), voxel_size=10.0, shape=(64, 64, 40))
    >>> open(path, "rb").read(8)
    b'IMODV1.2'
    >>> read_mod(path).positions.tolist()
    [[10.0, 20.0, 30.0]]
    >>> tmp.cleanup()
    """
    ts_id = _single_tomogram(picks, path)
    voxel_size = voxel_size or picks.voxel_size
    xyz = _centre_positions(picks) + HALF_VOXEL
    if shape is None and tomo_shapes and ts_id in tomo_shapes:
        shape = tomo_shapes[ts_id]
    if shape is None:
        shape = np.ceil(xyz.max(axis=0)).astype(int) + 1 if len(xyz) else (1, 1, 1)
    group_values = np.unique(picks.group_ids)
    out = [b"IMODV1.2"]
    name = os.path.basename(path).encode("latin-1", "replace")[:127]
    pixel_nm, units = (voxel_size / 10.0, -9) if voxel_size else (1.0, 0)
    out.append(MODEL_HEADER.pack(
        name, int(shape[0]), int(shape[1]), int(shape[2]), len(group_values),
        Z_FROM_MINUS_HALF, 1, 1, 0, 255,       # flags, drawmode, mousemode, black/white
        0.0, 0.0, 0.0, 1.0, 1.0, 1.0,         # offsets, scales
        -1, -1, -1, 3, 128,                    # current object/contour/point, res, thresh
        float(pixel_nm), units, 0, 0.0, 0.0, 0.0))
    palette = [(0.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0),
               (1.0, 0.5, 0.0), (0.5, 0.5, 1.0)]
    for k, value in enumerate(group_values):
        rows = picks.group_ids == value
        red, green, blue = palette[k % len(palette)]
        out.append(b"OBJT")
        out.append(OBJECT_HEADER.pack(
            f"tomopick group {int(value)}".encode(), *([0] * 16),
            1, OBJ_SCATTERED | OBJ_OPEN, 0, 1,  # contours, flags, axis, drawmode
            red, green, blue, int(point_size),
            1, 3, 1, 1, 0, 0, 0, 0,             # symbol circle, symsize, line widths...
            0, 0))                              # meshsize, surfsize
        out.append(b"CONT")
        out.append(CONTOUR_HEADER.pack(int(rows.sum()), 0, 0, 0))
        out.append(xyz[rows].astype(">f4").tobytes())
    out.append(b"IEOF")
    with open(path, "wb") as handle:
        handle.write(b"".join(out))
