"""Mean rotation of a set, and projection of matrices onto rotations.

The chordal L2 mean (`average_rotations`) is the rotation nearest (Frobenius
norm) to the weighted sum of the rotations; `project_to_rotation` finds that
nearest rotation for a whole stack of 3x3 matrices at once, by a scaled
Newton iteration on the nine entries held as separate arrays (SVD where the
iteration cannot be used).
"""
import numpy as np


def average_rotations(matrices, weights=None):
    """Chordal L2 mean of rotations (the Markley quaternion average).

    The mean is the proper rotation ``R`` minimising
    ``sum_i w_i ||R - R_i||_F^2``. Markley's quaternion average (principal
    eigenvector of ``sum_i w_i q_i q_i^T``) minimises the same quantity; here it
    is computed without quaternions, as the orthogonal Procrustes projection of
    the weighted matrix sum onto SO(3) (SVD with a determinant correction).
    This is deterministic (no random start, no sign ambiguity: ``q`` and ``-q``
    give the same matrix) and the result is orthonormal to rounding error.

    Parameters
    ----------
    matrices : (N, 3, 3) or (N, 4, 4) array of float
        Proper rotations; for 4x4 transforms only the rotation block is used.
    weights : (N,) array of float, optional
        Non-negative weights, not all zero; equal weights when omitted.

    Returns
    -------
    R : (3, 3) ndarray
        The mean rotation (det +1).

    Raises
    ------
    ValueError
        If no matrix is given, shapes do not match, or the weights are
        negative or all zero.

    Examples
    --------
    The mean of turns by +10 and -10 degrees about z is the identity:

    >>> a = np.radians(10)
    >>> turn = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    >>> np.allclose(average_rotations([turn, turn.T]), np.eye(3))
    True

    A weight of zero leaves a rotation out:

    >>> np.allclose(average_rotations([turn, turn.T], weights=[1, 0]), turn)
    True
    """
    R = np.asarray(matrices, dtype=float)
    if R.ndim != 3 or R.shape[1:] not in ((3, 3), (4, 4)):
        raise ValueError(f"matrices must have shape (N, 3, 3) or (N, 4, 4), got {R.shape}")
    if len(R) == 0:
        raise ValueError("cannot average an empty set of rotations")
    R = R[:, :3, :3]
    if weights is None:
        w = np.ones(len(R))
    else:
        w = np.asarray(weights, dtype=float).reshape(-1)
        if len(w) != len(R):
            raise ValueError(f"{len(w)} weights for {len(R)} rotations")
        if np.any(w < 0) or not np.any(w > 0):
            raise ValueError("weights must be non-negative and not all zero")
    return project_to_rotation(np.einsum("n,nij->ij", w, R)[None])[0]


def project_to_rotation(M):
    """Nearest proper rotations (Frobenius norm) of a stack of 3x3 matrices.

    For det(M) > 0 this is the orthogonal polar factor of M, computed by
    Newton's iteration ``X <- (g X + X^-T / g) / 2`` with determinant scaling
    ``g = |det X|^(-1/3)`` (Higham 1986): it converges quadratically and, on
    the nine entries as separate arrays, is far cheaper than a batched SVD.
    Matrices with det(M) <= 0, or for which the iteration does not reach an
    orthonormal matrix, take the SVD route with a determinant correction.

    Parameters
    ----------
    M : (G, 3, 3) array of float

    Returns
    -------
    (G, 3, 3) ndarray
        Proper rotations (det +1), orthonormal to rounding error.

    Examples
    --------
    A scaled rotation projects back onto the rotation:

    >>> Rz = np.array([[0., -1, 0], [1, 0, 0], [0, 0, 1]])
    >>> np.allclose(project_to_rotation(3 * Rz[None]), Rz)
    True

    A reflection (det -1) goes to the nearest proper rotation:

    >>> R = project_to_rotation(np.diag([1., 1, -1])[None])[0]
    >>> float(np.linalg.det(R))
    1.0
    """
    M = np.asarray(M, dtype=float)
    G = len(M)
    return project_to_rotation_rows(M.reshape(G, 9).T.copy()).T.reshape(G, 3, 3)


def project_to_rotation_rows(M):
    """`project_to_rotation` on entries held as rows: a (9, G) array.

    Row k holds entry k (row-major: ``M[i, j]`` is row ``3 i + j``) of all G
    matrices, so that per-group sums made as rows need no transposition.

    Parameters
    ----------
    M : (9, G) array of float

    Returns
    -------
    (9, G) ndarray
        The nearest proper rotations, in the same layout.

    Examples
    --------
    >>> rows = np.stack([2 * np.eye(3).ravel(), np.diag([1., -1, -1]).ravel()], axis=1)
    >>> out = project_to_rotation_rows(rows)
    >>> out.shape
    (9, 2)
    >>> np.allclose(out[:, 0], np.eye(3).ravel()), np.allclose(out[:, 1], rows[:, 1])
    (True, True)
    """
    scale = np.abs(M).max(axis=0)
    newton = _det9(M) > 1e-9 * scale ** 3
    everything = bool(newton.all())
    X = M.copy() if everything else M[:, newton]
    if X.shape[1]:
        # iterate on the matrices still moving only (after two or three steps,
        # a handful)
        active = None                       # None: all of them
        Y = X
        for _ in range(60):
            new = _newton_step9(Y)
            moving = np.abs(np.subtract(new, Y, out=Y)).max(axis=0) >= 1e-13
            if active is None:
                X = new
                if moving.all():
                    Y = X.copy()
                    continue
                active = np.flatnonzero(moving)
                Y = X[:, active]
            else:
                X[:, active] = new
                active = active[moving]
                Y = new[:, moving]
            if len(active) == 0:
                break
        # a step that moved < 1e-13 leaves an error ~1e-26: the result is
        # orthonormal to rounding error; anything else goes to the SVD
        good = _orthonormality_error9(X) < 1e-12
        if everything and good.all():
            return X
        out = np.empty_like(M)
        idx = np.flatnonzero(newton)
        out[:, idx[good]] = X[:, good]
        newton[idx[~good]] = False
    else:
        out = np.empty_like(M)
    rest = np.flatnonzero(~newton)
    if len(rest):
        U, _, Vt = np.linalg.svd(M[:, rest].T.reshape(-1, 3, 3))
        # Flipping the last singular vector when U V^T is a reflection gives
        # the nearest det +1 matrix.
        sign = np.sign(np.linalg.det(U @ Vt))
        sign[sign == 0] = 1.0
        U[..., :, 2] *= sign[..., None]
        out[:, rest] = (U @ Vt).reshape(-1, 9).T
    return out


def _newton_step9(X):
    """One scaled Newton step towards the polar factor, (9, G) entries, det > 0."""
    C = _cofactor9(X)
    det = (X[:3] * C[:3]).sum(axis=0)
    g = det ** (-1.0 / 3.0)
    C *= 0.5 / (g * det)
    new = X * (0.5 * g)
    new += C
    return new


def _cofactor9(X):
    """Cofactors of 3x3 matrices stored as (9, G) row-major entries.

    ``inv(A).T == cofactor(A) / det(A)`` and ``det(A) = sum(A[:3] * C[:3])``.
    """
    a, b, c, d, e, f, g, h, i = X
    C = np.empty_like(X)
    C[0] = e * i - f * h
    C[1] = f * g - d * i
    C[2] = d * h - e * g
    C[3] = c * h - b * i
    C[4] = a * i - c * g
    C[5] = b * g - a * h
    C[6] = b * f - c * e
    C[7] = c * d - a * f
    C[8] = a * e - b * d
    return C


def _det9(X):
    a, b, c, d, e, f, g, h, i = X
    return a * (e * i - f * h) + b * (f * g - d * i) + c * (d * h - e * g)


def _orthonormality_error9(X):
    """max |A^T A - I| per matrix, for (9, G) row-major entries."""
    cols = (X[0::3], X[1::3], X[2::3])       # the three columns, each (3, G)
    err = np.zeros(X.shape[1])
    for p in range(3):
        for q in range(p, 3):
            dot = (cols[p] * cols[q]).sum(axis=0)
            err = np.maximum(err, np.abs(dot - (p == q)))
    return err
