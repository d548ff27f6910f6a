"""Euler angles <-> rotation matrices, and rotations that point an axis.

A particle's orientation is a proper rotation ``R`` (3x3) (see
`tomopick.core.rotations`): ``R @ (0, 0, 1)`` is the particle's z-axis in
the tomogram; for membrane and vesicle models it is the outward normal.

Two Euler-angle conventions live here:

- `euler_zxz_to_matrix` / `matrix_to_euler_zxz`: the plain intrinsic ZXZ
  composition ``Rz(a) @ Rx(b) @ Rz(c)`` (a building block for other
  conventions, e.g. RELION's ZYZ).
- `dynamo_euler_to_matrix` / `matrix_to_dynamo_euler`: Dynamo's angles
  (``tdrot``, ``tilt``, ``narot``, degrees), the ones in tomopick's CSV and in
  Dynamo tables. Dynamo's ``dynamo_euler2matrix`` gives
  ``m = Rz(narot) @ Rx(tilt) @ Rz(tdrot)`` and turns the reference onto the
  particle with its transpose, so the particle's rotation is ``R = m.T``:
  its z-axis ``R @ z`` has polar angle ``tilt`` and azimuth ``90 - tdrot``.
"""
import numpy as np


def _rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, zero], -1),
                     np.stack([s, c, zero], -1),
                     np.stack([zero, zero, one], -1)], -2)


def _rot_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([one, zero, zero], -1),
                     np.stack([zero, c, -s], -1),
                     np.stack([zero, s, c], -1)], -2)


def euler_zxz_to_matrix(tdrot, tilt, narot):
    """Rotation matrices from Dynamo ZXZ Euler angles.

    Parameters
    ----------
    tdrot, tilt, narot : float or (N,) array of float
        Angles in degrees.

    Returns
    -------
    R : (3, 3) or (N, 3, 3) ndarray
        ``Rz(tdrot) @ Rx(tilt) @ Rz(narot)``.

    Examples
    --------
    A quarter turn about z takes x to y:

    >>> R = euler_zxz_to_matrix(90, 0, 0)
    >>> np.round(R @ [1, 0, 0], 6) + 0.0
    array([0., 1., 0.])
    >>> euler_zxz_to_matrix([0, 90], [0, 0], [0, 0]).shape
    (2, 3, 3)
    """
    a, b, c = (np.radians(np.asarray(v, dtype=float)) for v in (tdrot, tilt, narot))
    return _rot_z(a) @ _rot_x(b) @ _rot_z(c)


def matrix_to_euler_zxz(rotation):
    """Dynamo ZXZ Euler angles of rotation matrices (inverse of `euler_zxz_to_matrix`).

    Parameters
    ----------
    rotation : (3, 3) or (N, 3, 3) array of float
        Proper rotations (a 4x4 matrix is accepted; its shift is ignored).

    Returns
    -------
    tdrot, tilt, narot : float or (N,) ndarray
        Degrees; ``tilt`` in [0, 180]. At ``tilt`` 0 or 180 the split between
        ``tdrot`` and ``narot`` is not unique and ``narot`` is set to 0.

    Examples
    --------
    >>> np.round(matrix_to_euler_zxz(euler_zxz_to_matrix(30, 40, 50)), 6)
    array([30., 40., 50.])
    """
    R = np.asarray(rotation, dtype=float)[..., :3, :3]
    tilt = np.arccos(np.clip(R[..., 2, 2], -1.0, 1.0))
    sin_tilt = np.sin(tilt)
    regular = sin_tilt > 1e-6
    # For R = Rz(a) Rx(b) Rz(c): R[0,2] = sin a sin b, R[1,2] = -cos a sin b,
    # R[2,0] = sin b sin c, R[2,1] = cos c sin b.
    # At tilt 0 or 180 only a + c (or a - c) is defined; with c = 0 both give
    # R[0,0] = cos a, R[1,0] = sin a.
    tdrot = np.where(regular, np.arctan2(R[..., 0, 2], -R[..., 1, 2]),
                     np.arctan2(R[..., 1, 0], R[..., 0, 0]))
    narot = np.where(regular, np.arctan2(R[..., 2, 0], R[..., 2, 1]), 0.0)
    out = [np.degrees(v) for v in (tdrot, tilt, narot)]
    if np.ndim(out[0]) == 0:
        return tuple(float(v) for v in out)
    return tuple(out)


def dynamo_euler_to_matrix(tdrot, tilt, narot):
    """Particle rotations of Dynamo Euler angles.

    Parameters
    ----------
    tdrot, tilt, narot : float or (N,) array of float
        Dynamo angles, degrees.

    Returns
    -------
    R : (3, 3) or (N, 3, 3) ndarray
        ``(Rz(narot) @ Rx(tilt) @ Rz(tdrot)).T``: ``R @ (0, 0, 1)`` is the
        particle's z-axis in the tomogram.

    Examples
    --------
    ``tilt`` is the polar angle of the particle's z-axis, ``90 - tdrot`` its
    azimuth:

    >>> R = dynamo_euler_to_matrix(0, 90, 0)
    >>> np.round(R @ [0, 0, 1], 6) + 0.0
    array([0., 1., 0.])
    """
    return np.swapaxes(euler_zxz_to_matrix(narot, tilt, tdrot), -1, -2)


def matrix_to_dynamo_euler(rotation):
    """Dynamo Euler angles of particle rotations (inverse of `dynamo_euler_to_matrix`).

    Parameters
    ----------
    rotation : (3, 3) or (N, 3, 3) array of float
        A 4x4 matrix is accepted; its shift is ignored.

    Returns
    -------
    tdrot, tilt, narot : float or (N,) ndarray
        Degrees; ``tilt`` in [0, 180].

    Examples
    --------
    >>> np.round(matrix_to_dynamo_euler(dynamo_euler_to_matrix(10, 20, 30)), 6)
    array([10., 20., 30.])
    """
    R = np.asarray(rotation, dtype=float)[..., :3, :3]
    narot, tilt, tdrot = matrix_to_euler_zxz(np.swapaxes(R, -1, -2))
    return tdrot, tilt, narot


def rotation_from_z_axis(z_axes, in_plane=0.0):
    """Rotations whose z-axis points along given directions.

    Parameters
    ----------
    z_axes : (3,) or (N, 3) array of float
        Target directions (x, y, z); need not be unit length, must be non-zero.
    in_plane : float or (N,) array of float, optional
        Right-handed rotation about the new z-axis, degrees, applied to the
        particle before it is tilted. With 0 the particle's x-axis stays
        horizontal (in the tomogram's x-y plane): Dynamo's ``narot = 0``.

    Returns
    -------
    R : (3, 3) or (N, 3, 3) ndarray
        Proper rotations with ``R @ (0, 0, 1)`` equal to the normalised axis.

    Raises
    ------
    ValueError
        If an axis has zero length.

    Examples
    --------
    >>> R = rotation_from_z_axis([2, 0, 0])
    >>> np.round(R @ [0, 0, 1], 6) + 0.0
    array([1., 0., 0.])
    >>> float(np.linalg.det(R))
    1.0
    >>> rotation_from_z_axis([[0, 0, 1], [0, 1, 0]]).shape
    (2, 3, 3)
    """
    v = np.asarray(z_axes, dtype=float)
    single = v.ndim == 1
    v = np.atleast_2d(v)
    norm = np.linalg.norm(v, axis=1)
    if np.any(norm == 0):
        raise ValueError("cannot orient along a zero-length z-axis")
    v = v / norm[:, None]
    tilt = np.degrees(np.arccos(np.clip(v[:, 2], -1.0, 1.0)))
    # R @ z = (sin a sin b, -cos a sin b, cos b)
    tdrot = np.degrees(np.arctan2(v[:, 0], -v[:, 1]))
    R = euler_zxz_to_matrix(tdrot, tilt, np.broadcast_to(in_plane, tdrot.shape))
    return R[0] if single else R
