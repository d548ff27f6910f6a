"""Scipion objects <-> plain arrays: the one door between protocols and core.

Protocols read Scipion sets into numpy arrays / `Picks` with these functions,
call tomopick.core, and write the results back with them. Positions are in
voxels of the set's sampling rate, bottom-left-corner origin (SPEC.md).

Orientation matrices
--------------------
Scipion objects (``Coordinate3D.getMatrix()``, ``SubTomogram.getTransform()``)
store M with f'(r) = f(M r) (`tomo.objects.convertMatrix`): the particle's
z-axis is ``inv(M)[:3, :3] @ (0, 0, 1)`` (`tomo.utils.normalFromMatrix`), the
matrix every other plugin (RELION, Dynamo, EMAN, Xmipp, tomoviz) reads.
tomopick.core works with its inverse [[R, t]] = inv(M): ``R @ (0, 0, 1)`` is
the particle's z-axis and apply-alignment is aligned(r) = box(R r + t).
`scipion_matrices` / `core_matrices` are the only place where one becomes the
other. tomopick 0.1.x stored the core matrix itself in Scipion objects; the
sets tomopick writes now carry ``_tomopickMatrixConvention`` =
`MATRIX_CONVENTION`, and an unmarked set made by a tomopick protocol (its run
folder is ``Runs/<id>_ProtTomoPick...``) is read the old way
(`legacy_convention`).
"""
import os
import re

import numpy as np
from pwem.objects import Transform
from pyworkflow.object import Float, Integer, String
from tomo.constants import BOTTOM_LEFT_CORNER, SCIPION
from tomo.convert.mdoc import normalizeTSId
from tomo.objects import Coordinate3D, MeshPoint, SubTomogram, Tomogram

from tomopick.core.formats import mrc_header_info, read_mrc
from tomopick.core.formats.shared import tsid_from_filename
from tomopick.core.picks import Picks

#: Set attribute naming the matrix convention of the sets tomopick writes.
MATRIX_CONVENTION_ATTR = "_tomopickMatrixConvention"
#: 2: Scipion's M (tomopick >= 0.2). Unmarked tomopick sets (0.1.x) hold inv(M).
MATRIX_CONVENTION = 2
# run folders are Runs/<6-digit id>_<protocol class>
_RUN_FOLDER = re.compile(r"^\d+_(\w+)$")
_TOMOPICK_PROTOCOL_PREFIX = "ProtTomoPick"


def _invert(matrices):
    matrices = np.asarray(matrices, dtype=float)
    if matrices.shape[-2:] != (4, 4):
        raise ValueError(f"expected 4x4 matrices, got shape {matrices.shape}")
    return np.linalg.inv(matrices)


def scipion_matrices(core):
    """Scipion matrices M (f'(r) = f(M r)) of core transforms [[R, t]].

    Parameters
    ----------
    core : (4, 4) or (N, 4, 4) array of float
        tomopick.core transforms: ``R @ (0, 0, 1)`` is the particle's z-axis,
        aligned(r) = box(R r + t).

    Returns
    -------
    (4, 4) or (N, 4, 4) ndarray
        ``inv(core)``, what Scipion objects store.
    """
    return _invert(core)


def core_matrices(scipion, legacy=False):
    """Core transforms [[R, t]] of matrices read from Scipion objects.

    Parameters
    ----------
    scipion : (4, 4) or (N, 4, 4) array of float
        As stored (``getMatrix()``).
    legacy : bool, optional
        The matrices come from a set written by tomopick 0.1.x, which stored
        the core transform itself (see `legacy_convention`).

    Returns
    -------
    (4, 4) or (N, 4, 4) ndarray
        ``inv(M)`` (a copy of the input when ``legacy``).
    """
    if legacy:
        return np.array(scipion, dtype=float)
    return _invert(scipion)


def mark_convention(emset):
    """Mark a set tomopick writes with the matrix convention it holds (before it is stored)."""
    setattr(emset, MATRIX_CONVENTION_ATTR, Integer(MATRIX_CONVENTION))


def copy_convention(source, target):
    """Give ``target`` (items copied from ``source`` as they are) the convention of ``source``.

    A copy of a marked set is marked; a copy of a tomopick 0.1.x set stays
    unmarked (and must then live in a tomopick run folder, as viewer subsets
    do, to be read the old way).
    """
    if not legacy_convention(source):
        mark_convention(target)


def producer_class(emset):
    """Class name of the protocol whose run folder holds a set's file ('' when unknown)."""
    filename = emset.getFileName() if hasattr(emset, "getFileName") else None
    if not filename:
        return ""
    match = _RUN_FOLDER.match(os.path.basename(os.path.dirname(os.path.abspath(filename))))
    return match.group(1) if match else ""


def legacy_convention(emset):
    """Whether a set's matrices are tomopick 0.1.x's inv(M) rather than Scipion's M.

    True for a set with no convention marker made by a tomopick protocol
    (its file lies in a ``Runs/<id>_ProtTomoPick...`` folder); sets of every
    other plugin, and sets tomopick marks (`mark_convention`), hold M.
    """
    marker = getattr(emset, MATRIX_CONVENTION_ATTR, None)
    if marker is not None and marker.get():
        return int(marker.get()) < MATRIX_CONVENTION
    return producer_class(emset).startswith(_TOMOPICK_PROTOCOL_PREFIX)


def subtomogram_matrix(subtomo, legacy=False):
    """Core transform [[R, t]] of a subtomogram (identity when it has no transform).

    Parameters
    ----------
    subtomo : tomo.objects.SubTomogram
    legacy : bool, optional
        From `legacy_convention` of the subtomogram's set.

    Returns
    -------
    (4, 4) ndarray
        aligned(r) = subtomogram(R r + t), r about the box centre (voxels).
    """
    transform = subtomo.getTransform() if subtomo.hasTransform() else None
    matrix = transform.getMatrix() if transform is not None else None
    if matrix is None:
        return np.eye(4)
    return core_matrices(matrix, legacy)


def set_subtomogram_matrix(subtomo, core_matrix):
    """Give a subtomogram the Scipion transform of a core transform [[R, t]]."""
    subtomo.setTransform(Transform(scipion_matrices(core_matrix)))


def threads_per_step(number_of_threads, n_steps):
    """Threads a core call may use inside one of ``n_steps`` parallel protocol steps.

    With STEPS_PARALLEL and ``numberOfThreads`` = T, pyworkflow runs up to
    T - 1 steps at once (one thread schedules); the T threads are shared
    among the steps that run together.

    Examples
    --------
    >>> threads_per_step(8, 1), threads_per_step(8, 3), threads_per_step(8, 20), threads_per_step(1, 4)
    (8, 2, 1, 1)
    """
    threads = max(1, int(number_of_threads or 1))
    return max(1, threads // max(1, min(int(n_steps), threads - 1)))


def tsid_of_file(path, ts_ids=None):
    """The tsId of a file, by the one rule (`tomopick.core.formats.shared.tsid_from_filename`
    and Scipion's ``normalizeTSId``).

    Parameters
    ----------
    path : str
    ts_ids : collection of str, optional
        Known tsIds: the name (as it is, or normalised) when it is one of them,
        else the longest known tsId the name contains, else None.

    Returns
    -------
    str or None
    """
    stem = tsid_from_filename(path)
    normalized = normalizeTSId(stem) if stem else stem
    if ts_ids is None:
        return normalized
    for candidate in (stem, normalized):
        if candidate in ts_ids:
            return candidate
    contained = [t for t in ts_ids if t and t in os.path.basename(str(path))]
    return max(contained, key=len) if contained else None


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
        If the set is empty, a tomogram has no tsId or two share one.
    """
    result = {}
    for tomogram in tomograms.iterItems(orderBy="id"):
        ts_id = tomogram.getTsId()
        if not ts_id:
            raise ValueError(f"tomogram {tomogram.getObjId()} ({tomogram.getFileName()}) of "
                             f"{tomograms.getNameId()} has no tsId: coordinates and picks are "
                             "matched to tomograms by tsId")
        if ts_id in result:
            raise ValueError(f"two tomograms share the tsId {ts_id!r} in {tomograms.getNameId()}")
        result[ts_id] = tomogram.clone()
    if not result:
        raise ValueError(f"the set of tomograms {tomograms.getNameId()} is empty")
    return result


def tomogram_like(tomogram, path):
    """A new Tomogram for a volume computed from ``tomogram`` (same grid) and stored in ``path``.

    It keeps the tsId, acquisition, sampling rate and origin of ``tomogram``, so
    coordinates and viewers place it exactly over the tomogram it came from.
    """
    result = Tomogram()
    result.copyInfo(tomogram)
    result.setObjId(None)
    result.setFileName(path)
    result.setSamplingRate(tomogram.getSamplingRate())
    if tomogram.hasOrigin():
        result.setOrigin(tomogram.getOrigin())
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
        group ids, ``extra['ids']`` with each coordinate's object id. Scipion
        coordinates always carry a matrix (identity by default) and a score
        (0 by default), so the set is taken as oriented when some matrix is
        not the identity and as scored when some score is not 0; otherwise
        ``matrices`` / ``scores`` are None. Matrices are core transforms
        (`core_matrices`; tomopick 0.1.x sets are read through
        `legacy_convention`).

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
    matrices = np.array(matrices, dtype=float).reshape(-1, 4, 4)
    scores = np.array(scores, dtype=float)
    oriented = bool(np.any(np.abs(matrices - np.eye(4)) > 1e-6))
    scored = bool(np.any(scores != 0))
    picks = Picks(np.array(tomo_ids, dtype=str), np.array(positions, dtype=float).reshape(-1, 3),
                  np.array(groups, dtype=int),
                  core_matrices(matrices, legacy_convention(coordinates)) if oriented else None,
                  scores if scored else None, coordinates.getSamplingRate())
    picks.extra["ids"] = np.array(ids, dtype=int)
    return picks


def append_picks(coordinates, picks, tomograms, mesh=False, attributes=None):
    """Append a `Picks` table to a set of coordinates.

    Parameters
    ----------
    coordinates : tomo.objects.SetOfCoordinates3D
        The output set; its sampling rate must be that of ``picks``.
    picks : Picks
        Positions in voxels, bottom-left origin; matrices as core transforms.
    tomograms : dict of str -> Tomogram
        From `tomograms_by_tsid`; every ``picks.tomo_ids`` must be a key.
    mesh : bool, optional
        Append `MeshPoint` items (for a SetOfMeshes) instead of Coordinate3D.
    attributes : dict of str -> (N,) array, optional
        Extra per-coordinate columns (e.g. ``{"_consensusVotes": votes}``),
        stored as Integer or Float by the array's dtype.

    Matrices are stored as Scipion's M (`scipion_matrices`) and the set is
    marked with the convention (`mark_convention`); without matrices the
    coordinates keep Scipion's identity.

    Raises
    ------
    KeyError
        Naming the first tsId that has no tomogram.
    """
    unknown = sorted(set(picks.tomo_ids) - set(tomograms))
    if unknown:
        raise KeyError(f"coordinates refer to tsIds with no tomogram: {', '.join(unknown)}")
    mark_convention(coordinates)
    item_class = MeshPoint if mesh else Coordinate3D
    stored = None if picks.matrices is None else scipion_matrices(picks.matrices)
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
        if stored is not None:
            coord.setMatrix(stored[i])
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
    shapes = {ts_id: tomogram_shape_xyz(tomograms[ts_id]) for ts_id in np.unique(picks.tomo_ids)}
    return picks.outside(shapes, tolerance)


def append_subtomograms(output, coordinates, extracted, tomograms):
    """Append extracted subtomograms to a set, in the order of their coordinates.

    Parameters
    ----------
    output : tomo.objects.SetOfSubTomograms
    coordinates : tomo.objects.SetOfCoordinates3D
        The coordinates extracted; each subtomogram keeps a copy of its own.
    extracted : dict of int -> (str, str, float, (4, 4) array)
        Coordinate object id -> (tsId, MRC file, sampling rate in Å/voxel,
        core transform [[R, t]]). Coordinates absent from it are left out.
    tomograms : dict of str -> Tomogram
        From `tomograms_by_tsid` (volume id and acquisition).
    """
    mark_convention(output)
    legacy = legacy_convention(coordinates)
    for coord in coordinates.iterCoordinates():
        entry = extracted.get(coord.getObjId())
        if entry is None:
            continue
        ts_id, path, sampling_rate, matrix = entry
        tomogram = tomograms[ts_id]
        subtomo = SubTomogram()
        subtomo.setFileName(path)
        subtomo.setSamplingRate(sampling_rate)
        copy = coord.clone()
        if legacy:  # the copy goes into a marked set: store it as Scipion's M
            copy.setMatrix(scipion_matrices(coord.getMatrix()))
        subtomo.setCoordinate3D(copy)
        subtomo.setVolName(ts_id)
        subtomo.setVolId(tomogram.getObjId())
        set_subtomogram_matrix(subtomo, matrix)
        # whenever the tomogram carries one, with tilt angles or not: a set's items share
        # their columns, and a subtomogram without one after one with it fails to append
        if tomogram.getAcquisition() is not None:
            subtomo.setAcquisition(tomogram.getAcquisition())
        output.append(subtomo)


def subtomogram_groups(subtomograms):
    """The subtomograms of a set grouped by tomogram, with their files and core transforms.

    Parameters
    ----------
    subtomograms : tomo.objects.SetOfSubTomograms
        From any plugin. The tomogram of a subtomogram is its coordinate's
        tsId, else its volume name reduced to a file stem (scipion-em-dynamo
        stores the tomogram's path there), else "all".

    Returns
    -------
    dict of str -> list of (int, int, str, (4, 4) ndarray)
        tsId -> [(object id, index in its file (0: the whole file), file,
        core transform)], in object-id order.
    """
    legacy = legacy_convention(subtomograms)
    groups = {}
    for subtomo in subtomograms.iterItems(orderBy="id"):
        coord = subtomo.getCoordinate3D() if hasattr(subtomo, "getCoordinate3D") else None
        ts_id = coord.getTomoId() if coord is not None else None
        if not ts_id:
            name = subtomo.getVolName()
            ts_id = tsid_from_filename(name) if name and name != "Missing" else "all"
        index, path = subtomo.getLocation()
        groups.setdefault(ts_id, []).append(
            (subtomo.getObjId(), int(index or 0), path, subtomogram_matrix(subtomo, legacy)))
    return groups


def subtomogram_array(index, path):
    """The voxels [z, y, x] of one subtomogram, float32.

    Parameters
    ----------
    index : int
        Its index in the file (``getLocation()[0]``): 0 for a whole MRC file,
        else the 1-based volume of a z-stack of cubic boxes.
    path : str
        The MRC file.

    Raises
    ------
    ValueError
        If the file holds no such volume (naming the file and index).
    """
    data = read_mrc(path, mmap=True)
    if index == 0 or (index == 1 and data.shape[0] == data.shape[1]):
        return np.array(data, dtype=np.float32)
    box = data.shape[1]
    if data.shape[0] % box or index < 1 or index * box > data.shape[0]:
        raise ValueError(f"cannot read subtomogram {index} of {path} "
                         f"(shape z, y, x {data.shape})")
    return np.array(data[(index - 1) * box:index * box], dtype=np.float32)


def tilt_range(item):
    """(min, max) tilt angles, degrees, of an object's acquisition; None when unknown.

    Parameters
    ----------
    item : a Scipion object with ``getAcquisition`` (tomogram, subtomogram, set)
    """
    if not hasattr(item, "hasAcquisition") or not item.hasAcquisition():
        return None
    acquisition = item.getAcquisition()
    low, high = acquisition.getAngleMin(), acquisition.getAngleMax()
    if low is None or high is None or not high > low:
        return None
    return float(low), float(high)


# ------------------------------------------------------------ meshes (vectorial picking)

#: MeshPoint attributes: the model type name and the interior marker ("x y z" voxels or "").
MODEL_TYPE_ATTR = "_tpModelType"
INTERIOR_ATTR = "_tpInterior"


def mesh_models(meshes, voxel_size=None):
    """The models of a SetOfMeshes: their points, stored model types and interior markers.

    Parameters
    ----------
    meshes : tomo.objects.SetOfMeshes
        From vectorial picking (with model types and interior markers) or any
        other plugin (without).
    voxel_size : float, optional
        Å/voxel wanted for the positions (rescaled from the set's rate).

    Returns
    -------
    list of dict
        One per (tsId, groupId), sorted: ``tsId``, ``modelId``, ``type`` (the
        stored model type name or None), ``interior`` ((x, y, z) voxels or
        None), ``points`` ((K, 3) ndarray, voxels, bottom-left origin, in id
        order).
    """
    picks = picks_from_coordinates(meshes)
    if voxel_size and picks.voxel_size and picks.voxel_size != voxel_size:
        picks = picks.rescaled(voxel_size)
    factor = (meshes.getSamplingRate() / voxel_size
              if voxel_size and meshes.getSamplingRate() else 1.0)
    types, interiors = {}, {}
    for coord in meshes.iterItems(orderBy="id"):
        key = (coord.getTomoId(), int(coord.getGroupId() or 0))
        if key in types:
            continue
        stored = getattr(coord, MODEL_TYPE_ATTR, None)
        types[key] = stored.get() if stored is not None and stored.get() else None
        interior = getattr(coord, INTERIOR_ATTR, None)
        if interior is not None and interior.get():
            interiors[key] = tuple(factor * float(v) for v in interior.get().split())
    models = []
    for key in sorted(types):
        rows = (picks.tomo_ids == key[0]) & (picks.group_ids == key[1])
        models.append({"tsId": key[0], "modelId": key[1], "type": types[key],
                       "interior": interiors.get(key), "points": picks.positions[rows]})
    return models


def append_mesh_points(meshes, tomograms, ts_id, model_id, points, model_type, interior=None):
    """Append one model's points to a SetOfMeshes, with its model type and interior marker.

    Parameters
    ----------
    meshes : tomo.objects.SetOfMeshes
    tomograms : dict of str -> Tomogram
    ts_id : str
    model_id : int
        Becomes the groupId.
    points : (K, 3) array
        (x, y, z) voxels, bottom-left origin.
    model_type : str
        Name of the model type (core.geometry.MODEL_TYPES).
    interior : (x, y, z) voxels or None
    """
    tomogram = tomograms[ts_id]
    offset = bottom_left_offset(tomogram)
    marker = "" if interior is None else " ".join(f"{float(v):.3f}" for v in interior)
    for position in np.asarray(points, dtype=float).reshape(-1, 3):
        point = MeshPoint()
        point.setVolume(tomogram)
        x, y, z = position + offset
        point.setPosition(float(x), float(y), float(z), SCIPION)
        point.setGroupId(int(model_id))
        point.setVolumeName(ts_id)
        setattr(point, MODEL_TYPE_ATTR, String(model_type))
        setattr(point, INTERIOR_ATTR, String(marker))
        meshes.append(point)
