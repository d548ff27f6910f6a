"""RELION 5 particle STAR files (the ``particles`` table), via `starfile`.

Positions
    RELION 5 stores ``rlnCenteredCoordinate{X,Y,Z}Angst``: Å from the centre
    of the tomogram. With a tomogram of N voxels of size v along an axis,
    tomopick's bottom-left position is ``centred / v + N / 2``. This follows
    scipion-em-reliontomo, which sets these values (divided by the sampling
    rate) as Scipion-origin coordinates, and scipion-em-tomo's default
    tomogram origin, -N/2 * sampling (so the centre is N/2 for odd N too).
    The shifts ``rlnOrigin{X,Y,Z}Angst`` are folded in as RELION does:
    ``position = centred / v + N / 2 - A_subtomogram @ origin / v``.
    Files without centred coordinates may carry the RELION 3/4 pixel
    coordinates ``rlnCoordinate{X,Y,Z}``, read as voxels of ``voxel_size``.

Orientations
    RELION's matrix of Euler angles (rot, tilt, psi), ZYZ,
    ``A = Rz(-psi) Ry(-tilt) Rz(-rot)`` (= ``(Rz(rot) Ry(tilt) Rz(psi))^T``),
    maps the particle's reference frame onto the tomogram (RELION 5:
    ``A_subtomogram @ A_particle``, from ``rlnTomoSubtomogram{Rot,Tilt,Psi}``
    and ``rlnAngle{Rot,Tilt,Psi}``). tomopick's R has the same meaning, so
    ``R = A``. scipion-em-reliontomo stores the transpose of this rotation in
    its Scipion matrices (its convention f'(r) = f(M r) with f the reference),
    and the CryoET Data Portal converts RELION angles to the same
    ``xyz_rotation_matrix`` (``Rotation.from_euler('ZYZ', ...).inv()``).
    Written files carry only rlnAngle{Rot,Tilt,Psi} (tilt in [0, 180]).

Other columns
    ``rlnClassNumber`` <-> group id; score from ``rlnLCCmax`` or
    ``rlnAutopickFigureOfMerit`` (written as the latter).
"""
import numpy as np
import pandas as pd
import starfile

from ..picks import Picks
from ..rotations import euler_zxz_to_matrix, homogeneous, matrix_to_euler_zxz
from .shared import _centre_positions, _require_file, tsid_from_filename

CENTRED = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
           "rlnCenteredCoordinateZAngst"]
PIXELS = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
ORIGIN_ANGST = ["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]
ORIGIN_PIXELS = ["rlnOriginX", "rlnOriginY", "rlnOriginZ"]
ANGLES = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
SUBTOMO_ANGLES = ["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]
SCORES = ["rlnLCCmax", "rlnAutopickFigureOfMerit"]


def _relion_matrix(rot, tilt, psi):
    """RELION's rotation matrices of ZYZ Euler angles.

    Parameters
    ----------
    rot, tilt, psi : (N,) array of float
        Degrees.

    Returns
    -------
    (N, 3, 3) ndarray
        ``Rz(-psi) Ry(-tilt) Rz(-rot)``: maps the particle's reference frame
        onto the tomogram.
    """
    # Rz(rot) Ry(tilt) Rz(psi) = Rz(rot + 90) Rx(tilt) Rz(psi - 90), because a
    # rotation about y is one about x conjugated by Rz(90).
    zyz = euler_zxz_to_matrix(np.asarray(rot, float) + 90.0, tilt, np.asarray(psi, float) - 90.0)
    return np.swapaxes(zyz.reshape(-1, 3, 3), -1, -2)


def _relion_angles(rotation):
    """RELION (rot, tilt, psi) of rotations (inverse of `_relion_matrix`).

    Parameters
    ----------
    rotation : (N, 3, 3) or (N, 4, 4) array

    Returns
    -------
    rot, tilt, psi : (N,) ndarray
        Degrees, rot and psi in (-180, 180], tilt in [0, 180].
    """
    R = np.asarray(rotation, dtype=float)[..., :3, :3].reshape(-1, 3, 3)
    a, tilt, c = (np.atleast_1d(v) for v in matrix_to_euler_zxz(np.swapaxes(R, -1, -2)))
    wrap = (lambda angle: -((-angle + 180.0) % 360.0 - 180.0))
    return wrap(a - 90.0), tilt, wrap(c + 90.0)


def _particles_table(path):
    try:
        blocks = starfile.read(path, always_dict=True,
                              parse_as_string=["rlnTomoName", "rlnMicrographName"])
    except Exception as err:
        raise ValueError(f"{path}: not a readable STAR file ({err})") from None
    tables = {name: block for name, block in blocks.items() if isinstance(block, pd.DataFrame)}
    if "particles" in tables:
        return tables["particles"]
    with_coords = [b for b in tables.values()
                   if set(CENTRED) <= set(b.columns) or set(PIXELS) <= set(b.columns)]
    if len(with_coords) == 1:
        return with_coords[0]
    raise ValueError(f"{path}: no particles table (data_particles) with coordinates "
                     f"{', '.join(CENTRED)} found; tables: {', '.join(blocks) or 'none'}")


def _numbers(table, columns, path):
    values = np.zeros((len(table), len(columns)))
    for j, name in enumerate(columns):
        col = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(col))
        if len(bad):
            raise ValueError(f"{path}: particle {bad[0] + 1} has {name} = "
                             f"{table[name].iloc[bad[0]]!r}, not a number")
        values[:, j] = col
    return values


def read_star(path, voxel_size=None, tomo_shapes=None, tomo_id=None, **_):
    """Read the particles of a RELION (5) STAR file.

    Parameters
    ----------
    path : str
    voxel_size : float
        Å per voxel to express the positions in (the tomograms' sampling
        rate). Required for centred Å coordinates and Å origin shifts.
    tomo_shapes : dict of str -> (nx, ny, nz)
        Tomogram dimensions in voxels of ``voxel_size``, for every tsId of the
        file (needed for centred coordinates).
    tomo_id : str, optional
        tsId for all particles when the file names no tomogram. The tsId is
        ``rlnTomoName`` (RELION 5), else the base name without extension of
        ``rlnMicrographName`` (RELION 3/4, WarpTools: ``TS_01.tomostar``).

    Returns
    -------
    Picks
        ``matrices`` when the file has angles, ``scores`` when it has a score
        column.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file does not parse, lacks coordinates, has non-numeric
        values (naming the particle row), or context needed is missing (naming
        the tsId).

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "particles.star")
    >>> with open(path, "w") as f:
    ...     _ = f.write("data_particles\\n\\nloop_\\n_rlnTomoName #1\\n"
    ...                 "_rlnCenteredCoordinateXAngst #2\\n_rlnCenteredCoordinateYAngst #3\\n"
    ...                 "_rlnCenteredCoordinateZAngst #4\\nTS_1 100.0 -50.0 0.0\\n")
    >>> picks = read_star(path, voxel_size=10.0, tomo_shapes={"TS_1": (64, 64, 32)})
    >>> picks.tomo_ids.tolist(), picks.positions.tolist()    # centre (32, 32, 16) + Å / 10
    (['TS_1'], [[42.0, 27.0, 16.0]])
    >>> tmp.cleanup()
    """
    _require_file(path)
    table = _particles_table(path)
    n = len(table)
    if "rlnTomoName" in table.columns:
        tomo_ids = table["rlnTomoName"].astype(str).to_numpy()
    elif "rlnMicrographName" in table.columns:
        # RELION 3/4 and WarpTools name the tomogram file (TS_01.tomostar, TS_01.mrc)
        tomo_ids = np.array([tsid_from_filename(name)
                             for name in table["rlnMicrographName"].astype(str)], dtype=str)
    elif tomo_id is not None:
        tomo_ids = np.full(n, str(tomo_id))
    else:
        raise ValueError(f"{path}: no rlnTomoName or rlnMicrographName column; give tomo_id")

    sub = None
    if set(SUBTOMO_ANGLES) <= set(table.columns):
        sub = _relion_matrix(*_numbers(table, SUBTOMO_ANGLES, path).T)
    if set(CENTRED) <= set(table.columns):
        if not voxel_size:
            raise ValueError(f"{path}: centred coordinates are in Å; give voxel_size")
        missing = sorted(set(tomo_ids) - set(tomo_shapes or {}))
        if missing:
            raise ValueError(f"{path}: no tomogram dimensions (tomo_shapes) for tsId "
                             f"{missing[0]!r}; centred coordinates need them")
        centre = np.array([np.asarray(tomo_shapes[t], dtype=float)[:3] for t in tomo_ids])
        positions = _numbers(table, CENTRED, path) / voxel_size + centre.reshape(n, 3) / 2.0
    elif set(PIXELS) <= set(table.columns):
        positions = _numbers(table, PIXELS, path)
    else:
        raise ValueError(f"{path}: no particle coordinates ({', '.join(CENTRED)} or "
                         f"{', '.join(PIXELS)})")

    for columns, per_voxel in ((ORIGIN_ANGST, True), (ORIGIN_PIXELS, False)):
        if set(columns) <= set(table.columns):
            origin = _numbers(table, columns, path)
            if per_voxel and np.any(origin):
                if not voxel_size:
                    raise ValueError(f"{path}: origin shifts are in Å; give voxel_size")
                origin = origin / voxel_size
            if sub is not None:
                origin = np.einsum("nij,nj->ni", sub, origin)
            positions = positions - origin

    matrices = None
    if set(ANGLES) <= set(table.columns):
        rotation = _relion_matrix(*_numbers(table, ANGLES, path).T)
        if sub is not None:
            rotation = sub @ rotation
        matrices = homogeneous(rotation)
    elif sub is not None:
        matrices = homogeneous(sub)

    groups = None
    if "rlnClassNumber" in table.columns:
        groups = _numbers(table, ["rlnClassNumber"], path)[:, 0].astype(int)
    scores = None
    for name in SCORES:
        if name in table.columns:
            scores = _numbers(table, [name], path)[:, 0]
            break
    return Picks(tomo_ids, positions, groups, matrices, scores, voxel_size)


def write_star(path, picks, voxel_size=None, tomo_shapes=None, **_):
    """Write a `Picks` table as a RELION 5 particles STAR file.

    Columns: rlnTomoName, rlnCenteredCoordinate{X,Y,Z}Angst, rlnAngle{Rot,
    Tilt,Psi} (when the table has matrices), rlnClassNumber (group id),
    rlnAutopickFigureOfMerit (when it has scores). Matrix shifts are folded
    into the coordinates.

    Parameters
    ----------
    path : str
    picks : Picks
    voxel_size : float, optional
        Å per voxel of the positions; defaults to ``picks.voxel_size``.
    tomo_shapes : dict of str -> (nx, ny, nz)
        Tomogram dimensions (voxels of ``voxel_size``) of every tsId.

    Raises
    ------
    ValueError
        If the voxel size or a tomogram's dimensions are missing.

    Examples
    --------
    >>> import os, tempfile
    >>> from tomopick.core.rotations import euler_zxz_to_matrix, homogeneous
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "particles.star")
    >>> rotation = homogeneous(np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])[None])
    >>> write_star(path, Picks("TS_1", [[42, 27, 16]], [3], rotation, voxel_size=10.0),
    ...            tomo_shapes={"TS_1": (64, 64, 32)})
    >>> import starfile
    >>> row = starfile.read(path).iloc[0]
    >>> row["rlnCenteredCoordinateXAngst"], row["rlnCenteredCoordinateYAngst"], row["rlnClassNumber"]
    (100.0, -50.0, 3)
    >>> back = read_star(path, tomo_shapes={"TS_1": (64, 64, 32)}, voxel_size=10.0)
    >>> np.round(back.matrices[0, :3, :3], 6).tolist() == rotation[0, :3, :3].tolist()
    True
    >>> tmp.cleanup()
    """
    voxel_size = voxel_size or picks.voxel_size
    if not voxel_size:
        raise ValueError(f"{path}: RELION coordinates are in Å; give voxel_size")
    missing = sorted(set(picks.tomo_ids) - set(tomo_shapes or {}))
    if missing:
        raise ValueError(f"{path}: no tomogram dimensions (tomo_shapes) for tsId "
                         f"{missing[0]!r}; centred coordinates need them")
    centre = np.array([np.asarray(tomo_shapes[t], dtype=float)[:3] / 2.0
                       for t in picks.tomo_ids]).reshape(-1, 3)
    centred = (_centre_positions(picks) - centre) * voxel_size
    data = {"rlnTomoName": picks.tomo_ids.astype(str)}
    for j, name in enumerate(CENTRED):
        data[name] = centred[:, j]
    if picks.matrices is not None:
        for name, values in zip(ANGLES, _relion_angles(picks.matrices)):
            data[name] = values
    data["rlnClassNumber"] = picks.group_ids.astype(int)
    if picks.scores is not None:
        data["rlnAutopickFigureOfMerit"] = picks.scores
    starfile.write({"particles": pd.DataFrame(data)}, path, float_format="%.6f")
