"""4x4 homogeneous transforms and angles between vectors.

A transform ``M`` (4x4) holds a proper rotation ``R`` in its upper-left block and
the shift (x, y, z) in voxels in its last column; see `tomopick.core.rotations`
for what ``R`` means.
"""
import numpy as np


def homogeneous(rotation=None, shift=None):
    """4x4 transforms from rotations and shifts.

    Parameters
    ----------
    rotation : (3, 3) or (N, 3, 3) array, optional
        Identity when omitted.
    shift : (3,) or (N, 3) array, optional
        (x, y, z) in voxels; zero when omitted.

    Returns
    -------
    M : (4, 4) or (N, 4, 4) ndarray

    Examples
    --------
    >>> homogeneous(shift=[1, 2, 3])
    array([[1., 0., 0., 1.],
           [0., 1., 0., 2.],
           [0., 0., 1., 3.],
           [0., 0., 0., 1.]])
    >>> homogeneous(np.broadcast_to(np.eye(3), (5, 3, 3))).shape
    (5, 4, 4)
    """
    if rotation is None:
        rotation = np.eye(3) if shift is None or np.ndim(shift) == 1 else \
            np.broadcast_to(np.eye(3), (len(shift), 3, 3))
    rotation = np.asarray(rotation, dtype=float)
    M = np.zeros(rotation.shape[:-2] + (4, 4))
    M[..., :3, :3] = rotation
    M[..., 3, 3] = 1.0
    if shift is not None:
        M[..., :3, 3] = shift
    return M


def angle_between(u, v):
    """Angle in degrees between vectors, row by row.

    Parameters
    ----------
    u, v : (3,) or (N, 3) array of float

    Returns
    -------
    float or (N,) ndarray

    Examples
    --------
    >>> float(angle_between([1, 0, 0], [0, 2, 0]))
    90.0
    >>> angle_between([[1, 0, 0], [1, 1, 0]], [[1, 0, 0], [1, 0, 0]])
    array([ 0., 45.])
    """
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
