"""Scipion objects <-> plain arrays: the one door between protocols and core.

Protocols read Scipion sets into numpy arrays / `Picks` with these functions,
call tomopick.core, and write the results back with them. Positions are in
voxels of the set's sampling rate, bottom-left-corner origin (SPEC.md).
"""
import numpy as np
from pyworkflow.object import Float, Integer
from tomo.constants import BOTTOM_LEFT_CORNER, SCIPION
from tomo.objects import Coordinate3D, MeshPoint

from tomopick.core.formats import mrc_header_info, read_mrc
from tomopick.core.picks import Picks, outside_volume


def tomograms_by_tsid(tomograms):
    """Copies of the tomograms of a set, keyed by tsId, in set order.

    Parameters
    ----------
    tomograms : tomo.objects.SetOfTomograms

    Returns
    -------
    dict of str -> tomo.objects.Tomogram

    Raises
    ------
    ValueError
        If the set is empty or two tomograms share a tsId.
    """
    result = {}
    for tomogram in tomograms.iterItems(orderBy="id"):
        ts_id = tomogram.getTsId()
        if ts_id in result:
            raise ValueError(f"two tomograms share the tsId {ts_id!r} in {tomograms.getNameId()}")
        result[ts_id] = tomogram.clone()
    if not result:
        raise ValueError(f"the set of tomograms {tomograms.getNameId()} is empty")
    return result


def tomogram_array(tomogram, mmap=True):
    """The voxels of a tomogram, [z, y, x], memory-mapped by default."""
    return read_mrc(tomogram.getFileName(), mmap=mmap)


def tomogram_shape_xyz(tomogram):
    """(nx, ny, nz) of a tomogram, from its MRC header."""
    nz, ny, nx = mrc_header_info(tomogram.getFileName())["shape"]
    return nx, ny, nz


def bottom_left_offset(tomogram):
    """Scipion's stored coordinate minus the bottom-left-corner one, in voxels.

    ``Coordinate3D.get/setPosition(BOTTOM_LEFT_CORNER)`` derive this from the
    tomogram's origin and read its MRC header three times per coordinate;
    computed once per tomogram, the conversion is one vector addition.
    """
    probe = Coordinate3D()
    probe.setVolume(tomogram)
    probe.setPosition(0.0, 0.0, 0.0, BOTTOM_LEFT_CORNER)
    return np.array(probe.getPosition(SCIPION), dtype=float)


def picks_from_coordinates(coordinates):
    """All coordinates of a set as a `Picks` table.

    Parameters
    ----------
    coordinates : tomo.objects.SetOfCoordinates3D
        Any set of 3D coordinates (SetOfMeshes too), whichever plugin made it.

    Returns
    -------
    Picks
        Positions in voxels of the set's sampling rate (bottom-left origin),
        matrices (identity where a coordinate has none), group ids, scores,
        ``extra['ids']`` with each coordinate's object id.

    Raises
    ------
    ValueError
        If a coordinate refers to a tsId its set's tomograms lack.
    """
    precedents = coordinates.getPrecedents()
    offsets = ({} if precedents is None else
               {tsId: bottom_left_offset(t) for tsId, t in tomograms_by_tsid(precedents).items()})
    tomo_ids, positions, matrices, groups, scores, ids = [], [], [], [], [], []
    for coord in coordinates.iterItems(orderBy="id"):
        ts_id = coord.getTomoId()
        if ts_id not in offsets:
            raise ValueError(f"{coordinates.getNameId()}: coordinate {coord.getObjId()} refers to "
                             f"the tomogram {ts_id!r}, which is not among its tomograms")
        tomo_ids.append(ts_id)
        positions.append(np.array(coord.getPosition(SCIPION), dtype=float) - offsets[ts_id])
        matrix = coord.getMatrix()
        matrices.append(np.eye(4) if matrix is None else matrix)
        groups.append(coord.getGroupId() or 0)
        scores.append(coord.getScore() or 0.0)
        ids.append(coord.getObjId())
    picks = Picks(np.array(tomo_ids, dtype=str), np.array(positions, dtype=float).reshape(-1, 3),
                  np.array(groups, dtype=int), np.array(matrices, dtype=float).reshape(-1, 4, 4),
                  np.array(scores, dtype=float), coordinates.getSamplingRate())
    picks.extra["ids"] = np.array(ids, dtype=int)
    return picks


def append_picks(coordinates, picks, tomograms, mesh=False, attributes=None):
    """Append a `Picks` table to a set of coordinates.

    Parameters
    ----------
    coordinates : tomo.objects.SetOfCoordinates3D
        The output set; its sampling rate must be that of ``picks``.
    picks : Picks
        Positions in voxels, bottom-left origin.
    tomograms : dict of str -> Tomogram
        From `tomograms_by_tsid`; every ``picks.tomo_ids`` must be a key.
    mesh : bool, optional
        Append `MeshPoint` items (for a SetOfMeshes) instead of Coordinate3D.
    attributes : dict of str -> (N,) array, optional
        Extra per-coordinate columns (e.g. ``{"_consensusVotes": votes}``),
        stored as Integer or Float by the array's dtype.

    Raises
    ------
    KeyError
        Naming the first tsId that has no tomogram.
    """
    unknown = sorted(set(picks.tomo_ids) - set(tomograms))
    if unknown:
        raise KeyError(f"coordinates refer to tsIds with no tomogram: {', '.join(unknown)}")
    item_class = MeshPoint if mesh else Coordinate3D
    offsets = {ts_id: bottom_left_offset(tomograms[ts_id]) for ts_id in np.unique(picks.tomo_ids)}
    attributes = {name: (Integer if np.issubdtype(np.asarray(values).dtype, np.integer) else Float,
                         np.asarray(values)) for name, values in (attributes or {}).items()}
    for i in range(len(picks)):
        coord = item_class()
        ts_id = picks.tomo_ids[i]
        tomogram = tomograms[ts_id]
        coord.setVolume(tomogram)
        x, y, z = picks.positions[i] + offsets[ts_id]
        coord.setPosition(float(x), float(y), float(z), SCIPION)
        if picks.matrices is not None:
            coord.setMatrix(picks.matrices[i])
        coord.setGroupId(int(picks.group_ids[i]))
        if picks.scores is not None:
            coord.setScore(float(picks.scores[i]))
        if mesh:
            coord.setVolumeName(ts_id)
        for name, (kind, values) in attributes.items():
            setattr(coord, name, kind(values[i].item()))
        coordinates.append(coord)


def outside_tomograms(picks, tomograms, tolerance=0.5):
    """Which picks lie outside the volume of their tomogram.

    Parameters
    ----------
    picks : Picks
    tomograms : dict of str -> Tomogram
    tolerance : float, optional
        Voxels a position may lie beyond the edge (voxel centres are at
        0 .. n-1, so the volume spans -0.5 .. n-0.5).

    Returns
    -------
    (N,) ndarray of bool
    """
    outside = np.zeros(len(picks), dtype=bool)
    for ts_id in np.unique(picks.tomo_ids):
        rows = picks.tomo_ids == ts_id
        outside[rows] = outside_volume(picks.positions[rows],
                                       tomogram_shape_xyz(tomograms[ts_id]), tolerance)
    return outside
