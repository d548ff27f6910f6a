"""Coordinate tables in every format tomopick reads and writes.

`read_coordinates` and `write_coordinates` dispatch on a format name (or detect
it from the extension and the content); each format lives in its own module:

========  =============================  ==================================
name      module                         one file holds
========  =============================  ==================================
csv       `csv_table` (SPEC.md columns)  any number of tomograms
star      `star` (RELION 5 particles)    any number of tomograms
tbl       `dynamo` (Dynamo table)        any number (tomogram index column)
mod       `imod` (IMOD binary model)     one tomogram
ndjson    `ndjson` (CryoET Data Portal)  one tomogram
yaml      `picket_yaml` (PickET output)  one tomogram
========  =============================  ==================================

Whatever the format, a read gives a `Picks` table in tomopick's conventions:
positions (x, y, z) in voxels with the bottom-left-corner origin (the centre of
array element ``[k, j, i]`` is at (i, j, k)), rotations R with ``R @ (0, 0, 1)``
the particle's z-axis in the tomogram (R maps the particle's reference frame
onto the tomogram, see `tomopick.core.rotations`), and zero shifts: a shift a
format carries is folded into the position. Writers fold the shifts of
``picks.matrices`` into the positions the same way (the particle centre is
``position + shift``: aligned(r) = subtomogram(R r + t)).

Context a format needs is passed as keyword arguments, and each reader or
writer ignores the ones it has no use for:

``voxel_size``
    Å per voxel of the positions (of the file for readers; defaults to
    ``picks.voxel_size`` for writers).
``tomo_id``
    tsId of the tomogram a per-tomogram file belongs to.
``tomo_shapes``
    ``{tsId: (nx, ny, nz)}`` in voxels of ``voxel_size`` (RELION 5 STAR files
    store positions relative to the tomogram centre; IMOD models record the
    volume size).
``tomo_index``
    ``{tsId: int}``, the Dynamo table's tomogram column.
"""
import os

from . import csv_table, dynamo, imod, ndjson, picket_yaml, star
from .shared import _require_file

FORMATS = ("csv", "star", "tbl", "mod", "ndjson", "yaml")
PER_TOMOGRAM_FORMATS = ("mod", "ndjson", "yaml")
EXTENSIONS = {".csv": "csv", ".star": "star", ".tbl": "tbl", ".mod": "mod",
              ".ndjson": "ndjson", ".jsonl": "ndjson", ".yaml": "yaml", ".yml": "yaml"}


def _modules():
    return {"csv": (csv_table.read_csv, csv_table.write_csv),
            "star": (star.read_star, star.write_star),
            "tbl": (dynamo.read_tbl, dynamo.write_tbl),
            "mod": (imod.read_mod, imod.write_mod),
            "ndjson": (ndjson.read_ndjson, ndjson.write_ndjson),
            "yaml": (picket_yaml.read_picket_yaml, picket_yaml.write_picket_yaml)}


def _format_from_extension(path):
    """Format name of a path's extension, or None when it says nothing."""
    return EXTENSIONS.get(os.path.splitext(str(path))[1].lower())


def detect_format(path):
    """Format of an existing file, from its extension or else its content.

    Parameters
    ----------
    path : str

    Returns
    -------
    str
        One of `FORMATS`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If neither the extension nor the content identifies a format.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "picks.txt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("tomoId,x,y,z\\nTS_1,1,2,3\\n")
    >>> detect_format(path)
    'csv'
    >>> from tomopick.core.picks import Picks
    >>> write_coordinates(os.path.join(tmp.name, "TS_1.ndjson"), Picks("TS_1", [[1, 2, 3]]))
    >>> detect_format(os.path.join(tmp.name, "TS_1.ndjson"))
    'ndjson'
    >>> tmp.cleanup()
    """
    _require_file(path)
    fmt = _format_from_extension(path)
    if fmt is not None:
        return fmt
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"IMOD"):
        return "mod"
    text = head.decode("utf-8", errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty file, cannot tell its coordinate format")
    if any(ln.startswith("data_") for ln in lines if not ln.startswith("#")):
        return "star"
    if "Predicted_Particle_Centroid_Coordinates" in text:
        return "yaml"
    first = next((ln for ln in lines if not ln.startswith("#")), "")
    if first.startswith("{"):
        return "ndjson"
    if "tomoId" in first.replace(" ", "").split(","):
        return "csv"
    fields = first.split()
    if len(fields) >= 26:
        try:
            [float(f) for f in fields]
            return "tbl"
        except ValueError:
            pass
    raise ValueError(f"{path}: cannot tell the coordinate format from the extension or "
                     f"the content; give it as one of {', '.join(FORMATS)}")


def read_coordinates(path, fmt="auto", voxel_size=None, target_voxel_size=None, **context):
    """Read a coordinate file into a `Picks` table.

    Parameters
    ----------
    path : str
    fmt : str, optional
        One of `FORMATS`, or 'auto' to detect it (`detect_format`).
    voxel_size : float, optional
        Å per voxel of the file's positions (for STAR, the voxel size the
        Å coordinates are converted to). Formats whose header records it
        (IMOD) fall back to that.
    target_voxel_size : float, optional
        Rescale the positions to voxels of this size (Å); needs a known
        ``voxel_size``.
    **context
        ``tomo_id``, ``tomo_shapes``, ``tomo_index`` ... (see the module doc).

    Returns
    -------
    Picks

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        For an unknown format or content that does not parse (the message
        names the file and the line or entry).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from tomopick.core.picks import Picks
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "picks.star")
    >>> write_coordinates(path, Picks("TS_1", [[10, 20, 30], [50, 60, 70]], voxel_size=10.0),
    ...                   tomo_shapes={"TS_1": (100, 100, 80)})
    >>> picks = read_coordinates(path, voxel_size=10.0, tomo_shapes={"TS_1": (100, 100, 80)})
    >>> picks.tomo_ids.tolist(), np.round(picks.positions, 3).tolist()
    (['TS_1', 'TS_1'], [[10.0, 20.0, 30.0], [50.0, 60.0, 70.0]])
    >>> coarse = read_coordinates(path, voxel_size=10.0, target_voxel_size=20.0,
    ...                           tomo_shapes={"TS_1": (100, 100, 80)})
    >>> np.round(coarse.positions, 3).tolist(), coarse.voxel_size
    ([[5.0, 10.0, 15.0], [25.0, 30.0, 35.0]], 20.0)
    >>> tmp.cleanup()
    """
    _require_file(path)
    fmt = detect_format(path) if fmt in (None, "auto") else str(fmt).lower()
    modules = _modules()
    if fmt not in modules:
        raise ValueError(f"unknown coordinate format {fmt!r} for {path}; "
                         f"known: {', '.join(FORMATS)}")
    picks = modules[fmt][0](path, voxel_size=voxel_size, **context)
    if target_voxel_size is not None:
        if picks.voxel_size is None:
            raise ValueError(f"{path}: cannot rescale to {target_voxel_size} Å/voxel, the "
                             "voxel size of the coordinates is unknown (give voxel_size)")
        picks = picks.rescaled(target_voxel_size)
    return picks


def write_coordinates(path, picks, fmt="auto", **context):
    """Write a `Picks` table to a coordinate file.

    Parameters
    ----------
    path : str
    picks : Picks
        Positions in voxels of ``picks.voxel_size`` (or of ``voxel_size``).
    fmt : str, optional
        One of `FORMATS`; 'auto' takes it from the extension of ``path``.
    **context
        ``voxel_size``, ``tomo_shapes``, ``tomo_index`` ... (see the module
        doc and each format's writer).

    Raises
    ------
    ValueError
        For an unknown format, or when the format needs context that is
        missing (named in the message).

    Examples
    --------
    >>> import os, tempfile
    >>> from tomopick.core.picks import Picks
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "out", "picks.csv")
    >>> write_coordinates(path, Picks(["TS_1", "TS_2"], [[1, 2, 3], [4, 5, 6]]))
    >>> print(open(path).read())
    tomoId,x,y,z,groupId
    TS_1,1.0000,2.0000,3.0000,0
    TS_2,4.0000,5.0000,6.0000,0
    <BLANKLINE>
    >>> tmp.cleanup()
    """
    if fmt in (None, "auto"):
        fmt = _format_from_extension(path)
        if fmt is None:
            raise ValueError(f"cannot tell the coordinate format from the name {path}; "
                             f"give fmt as one of {', '.join(FORMATS)}")
    fmt = str(fmt).lower()
    modules = _modules()
    if fmt not in modules:
        raise ValueError(f"unknown coordinate format {fmt!r} for {path}; "
                         f"known: {', '.join(FORMATS)}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    modules[fmt][1](path, picks, **context)
