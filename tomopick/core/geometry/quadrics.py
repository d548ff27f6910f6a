"""Quadric surfaces fitted to points: spheres and ellipsoids, their normals.

Positions are (x, y, z) in voxels; normals are unit vectors pointing away
from the centre.
"""
import numpy as np

from ._arrays import as_points, unit


def fit_sphere(points):
    """Least-squares sphere through 3D points.

    Parameters
    ----------
    points : (N, 3) array of float
        Positions (x, y, z) in voxels; N >= 4, not all coplanar.

    Returns
    -------
    center : (3,) ndarray
        Centre (x, y, z) in voxels.
    radius : float
        Radius in voxels.

    Raises
    ------
    ValueError
        If fewer than four points are given or they are (nearly) coplanar.

    Examples
    --------
    >>> from tomopick.core.geometry import fibonacci_sphere
    >>> center, radius = fit_sphere([10, 20, 30] + 5 * fibonacci_sphere(20))
    >>> np.round(center, 6), round(radius, 6)
    (array([10., 20., 30.]), 5.0)
    """
    points = as_points(points, 4, "a sphere")
    mean = points.mean(axis=0)
    scale = np.sqrt(((points - mean) ** 2).sum(axis=1).mean())
    if scale == 0:
        raise ValueError("a sphere cannot be fitted to coincident points")
    q = (points - mean) / scale
    # |p|^2 = 2 c.p + (r^2 - |c|^2) is linear in (c, r^2 - |c|^2)
    A = np.column_stack([2 * q, np.ones(len(q))])
    b = (q ** 2).sum(axis=1)
    singular = np.linalg.svd(A, compute_uv=False)
    if singular[-1] < 1e-6 * singular[0]:
        raise ValueError("the points are coplanar or collinear: no sphere through them")
    solution, *_ = np.linalg.lstsq(A, b, rcond=None)
    center = solution[:3]
    r2 = solution[3] + center @ center
    if r2 <= 0:
        raise ValueError("the points do not define a sphere")
    return mean + scale * center, float(scale * np.sqrt(r2))


def fit_ellipsoid(points):
    """Least-squares ellipsoid (algebraic fit of a general quadric).

    The quadric ``a x^2 + b y^2 + c z^2 + 2d xy + 2e xz + 2f yz + 2g x + 2h y +
    2i z = 1`` (9 parameters, points centred and scaled first for
    conditioning) is solved linearly; its centre and the eigen-decomposition
    of its quadratic part give the semi-axes and their directions.

    Parameters
    ----------
    points : (N, 3) array of float
        Positions (x, y, z) in voxels; N >= 9, spread over the surface (a
        one-sided patch may fit a hyperboloid, which is rejected).

    Returns
    -------
    center : (3,) ndarray
        Centre (x, y, z) in voxels.
    semi_axes : (3,) ndarray
        Semi-axis lengths in voxels, longest first.
    rotation : (3, 3) ndarray
        Proper rotation whose columns are the unit directions of the
        semi-axes: a point ``p`` lies on the ellipsoid when
        ``|R.T (p - center) / semi_axes| = 1``.

    Raises
    ------
    ValueError
        If fewer than nine points are given or the quadric is not an
        ellipsoid (degenerate points, hyperboloid, paraboloid).

    Examples
    --------
    >>> from tomopick.core.geometry import fibonacci_sphere
    >>> points = [10, 20, 30] + fibonacci_sphere(40) * [8, 5, 3]
    >>> center, semi_axes, rotation = fit_ellipsoid(points)
    >>> np.round(center, 6), np.round(semi_axes, 6)
    (array([10., 20., 30.]), array([8., 5., 3.]))
    """
    points = as_points(points, 9, "an ellipsoid")
    mean = points.mean(axis=0)
    scale = np.sqrt(((points - mean) ** 2).sum(axis=1).mean())
    if scale == 0:
        raise ValueError("an ellipsoid cannot be fitted to coincident points")
    x, y, z = ((points - mean) / scale).T
    D = np.column_stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z, 2 * x, 2 * y, 2 * z])
    singular = np.linalg.svd(D, compute_uv=False)
    if singular[-1] < 1e-8 * singular[0]:
        raise ValueError("the points are degenerate (coplanar, or on a curve): "
                         "no ellipsoid through them")
    v, *_ = np.linalg.lstsq(D, np.ones(len(D)), rcond=None)
    Q = np.array([[v[0], v[3], v[4]], [v[3], v[1], v[5]], [v[4], v[5], v[2]]])
    g = v[6:9]
    try:
        c = -np.linalg.solve(Q, g)
    except np.linalg.LinAlgError:
        raise ValueError("the fitted quadric has no centre (paraboloid or cylinder)") from None
    # translated to its centre: u^T Q u = 1 + c^T Q c
    k = 1.0 + c @ Q @ c
    eigval, eigvec = np.linalg.eigh(Q / k)
    if np.any(eigval <= 0):
        raise ValueError(f"the fitted quadric is not an ellipsoid (eigenvalues "
                         f"{np.array2string(eigval, precision=3)}): "
                         "pick points all around the vesicle")
    semi = 1.0 / np.sqrt(eigval)
    order = np.argsort(semi)[::-1]
    semi, eigvec = semi[order], eigvec[:, order]
    if np.linalg.det(eigvec) < 0:
        eigvec[:, 2] *= -1
    return mean + scale * c, scale * semi, eigvec


def ellipsoid_normals(points, center, semi_axes, rotation):
    """Outward unit normals of an ellipsoid at (or near) given points.

    Parameters
    ----------
    points : (N, 3) array of float
        Positions (x, y, z) in voxels.
    center, semi_axes, rotation :
        The ellipsoid, as returned by `fit_ellipsoid` (a sphere is
        ``semi_axes = (r, r, r)``, ``rotation = I``).

    Returns
    -------
    (N, 3) ndarray
        Gradient direction of the ellipsoid's implicit function at each point
        (pointing away from the centre).

    Examples
    --------
    >>> ellipsoid_normals([[3, 0, 0], [0, 0, -1]], [0, 0, 0], [3, 2, 1], np.eye(3)) + 0.0
    array([[ 1.,  0.,  0.],
           [ 0.,  0., -1.]])
    """
    u = (np.asarray(points, dtype=float) - center) @ rotation
    return unit((u / np.asarray(semi_axes) ** 2) @ rotation.T)


def project_to_ellipsoid(points, center, semi_axes, rotation):
    """Move points onto an ellipsoid along the ray from its centre.

    Exact for a sphere (nearest point); for an ellipsoid a point at distance
    h off the surface lands within O(h * eccentricity) of the nearest point,
    which is negligible for points already within a voxel of it.

    Returns
    -------
    (N, 3) ndarray
        Positions (x, y, z) in voxels, on the ellipsoid.

    Examples
    --------
    >>> project_to_ellipsoid([[6, 0, 0], [0, 0.5, 0]], [0, 0, 0], [3, 2, 1], np.eye(3))
    array([[3., 0., 0.],
           [0., 2., 0.]])
    """
    semi_axes = np.asarray(semi_axes, dtype=float)
    u = (np.asarray(points, dtype=float) - center) @ rotation / semi_axes
    return center + (unit(u) * semi_axes) @ rotation.T


def inside_ellipsoid(point, center, semi_axes, rotation):
    """Whether a point lies inside an ellipsoid (bool).

    Examples
    --------
    >>> inside_ellipsoid([2, 0, 0], [0, 0, 0], [3, 2, 1], np.eye(3))
    True
    >>> inside_ellipsoid([0, 0, 2], [0, 0, 0], [3, 2, 1], np.eye(3))
    False
    """
    u = (np.asarray(point, dtype=float) - center) @ rotation / np.asarray(semi_axes)
    return bool(u @ u < 1.0)


def outward_normals(points, normals, reference):
    """Orient consistently wound normals so that they point away from a reference.

    All normals are flipped together or not at all: their orientation
    relative to each other (mesh winding) is kept, only the side changes.

    Parameters
    ----------
    points : (N, 3) array of float
        Positions (x, y, z) in voxels.
    normals : (N, 3) array of float
        Unit normals, consistently oriented.
    reference : (3,) array of float
        A point on the interior side (interior marker, or the centre of
        curvature).

    Returns
    -------
    (N, 3) ndarray
        ``normals`` or ``-normals``, whichever points away from ``reference``
        on (area-)average.

    Examples
    --------
    Normals wound towards the reference are all flipped:

    >>> outward_normals([[0, 0, 1], [1, 0, 0]], [[0, 0, -1], [-1, 0, 0]], [0, 0, 0]) + 0.0
    array([[0., 0., 1.],
           [1., 0., 0.]])
    """
    points = np.asarray(points, dtype=float)
    normals = np.asarray(normals, dtype=float)
    side = np.sum(normals * unit(points - np.asarray(reference, dtype=float)))
    return -normals if side < 0 else normals
