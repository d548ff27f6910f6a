"""Rotation sets for searches over orientations, point-group symmetry and angular distances.

Convention (core's, see `tomopick.core.rotations`): a rotation ``R`` (3x3)
turns the particle's canonical frame into the tomogram's; ``R @ (0, 0, 1)``
is the particle's z-axis in the tomogram, and a template voxel at canonical
offset r lands at ``position + R @ r``. Sets of rotations are (N, 3, 3)
float arrays.

Symmetry: a particle of point group G (matrices ``S`` in its canonical frame,
``f(S r) = f(r)``) looks the same under ``R`` and ``R @ S``; the angular
distance between two poses is the smallest over those equivalents, and a
search needs only one rotation of each class (the asymmetric unit).
Axes: Cn about z; Dn adds a two-fold about x; T has two-folds on x, y, z and
three-folds on the cube diagonals; O four-folds on x, y, z; I two-folds on
x, y, z and five-folds on (0, +-1, phi) (the "I2" setting of RELION/Xmipp).

Uniform sets: super-Fibonacci spirals (M. Alexa, "Super-Fibonacci Spirals:
Fast, Low-Discrepancy Sampling of SO(3)", CVPR 2022): N quasi-uniform unit
quaternions in closed form, any N. The angular step ``s`` (degrees) asks for
``N = ceil(40 / s_rad**3)`` rotations, a constant measured so that both the
mean nearest-neighbour angle and the covering radius (largest angle from a
random rotation to the set) are close to ``s``. Measured on the full SO(3):

=======  =======  =======  ======  ========
step     N        NN mean  NN max  covering
=======  =======  =======  ======  ========
30.0     279      29.5     34.2    33.4
20.0     941      23.4     25.2    21.2
12.85    3,546    11.7     15.5    13.9
8.0      14,695   9.0 (*)  9.8     8.3
=======  =======  =======  ======  ========

(*) the spiral's spacing is quasi-uniform, not a lattice: NN angles vary by
about +-25 % around the step (see `nearest_neighbour_angles`).
"""
import re

import numpy as np
from scipy.spatial import cKDTree

#: Constant of ``N = ceil(C / step**3)`` (step in radians), see the module docstring.
_COUNT_CONSTANT = 40.0
_PSI = 1.533751168755204288118041    # Alexa's super-Fibonacci constant
_PHI = np.sqrt(2.0)


# ---------------------------------------------------------------------------
# quaternions, axis-angle
# ---------------------------------------------------------------------------

def quaternion_to_matrix(q):
    """Rotation matrices of unit quaternions (w, x, y, z).

    Parameters
    ----------
    q : (4,) or (N, 4) array of float
        Normalised on the way in.

    Returns
    -------
    (3, 3) or (N, 3, 3) ndarray of float

    Examples
    --------
    >>> np.round(quaternion_to_matrix([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]), 6)
    array([[ 0., -1.,  0.],
           [ 1.,  0.,  0.],
           [ 0.,  0.,  1.]])
    """
    q = np.asarray(q, dtype=float)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    return R + 0.0     # no negative zeros


def matrix_to_quaternion(R):
    """Unit quaternions (w, x, y, z), w >= 0, of rotation matrices.

    Parameters
    ----------
    R : (3, 3) or (N, 3, 3) array of float

    Returns
    -------
    (4,) or (N, 4) ndarray of float

    Examples
    --------
    >>> q = [0.5, 0.5, 0.5, 0.5]
    >>> np.allclose(matrix_to_quaternion(quaternion_to_matrix(q)), q)
    True
    """
    R = np.asarray(R, dtype=float)[..., :3, :3]
    single = R.ndim == 2
    R = R.reshape(-1, 3, 3)
    # Shepperd's method: take the largest of 4w^2, 4x^2, 4y^2, 4z^2 for stability
    t = np.stack([R[:, 0, 0] + R[:, 1, 1] + R[:, 2, 2], R[:, 0, 0] - R[:, 1, 1] - R[:, 2, 2],
                  -R[:, 0, 0] + R[:, 1, 1] - R[:, 2, 2], -R[:, 0, 0] - R[:, 1, 1] + R[:, 2, 2]], 1)
    k = np.argmax(t, axis=1)
    q = np.empty((len(R), 4))
    s = np.sqrt(np.maximum(1 + t[np.arange(len(R)), k], 1e-300)) * 2
    a = R
    for idx in range(4):
        sel = k == idx
        if not sel.any():
            continue
        m, ss = a[sel], s[sel]
        if idx == 0:
            q[sel] = np.stack([ss / 4, (m[:, 2, 1] - m[:, 1, 2]) / ss,
                               (m[:, 0, 2] - m[:, 2, 0]) / ss, (m[:, 1, 0] - m[:, 0, 1]) / ss], 1)
        elif idx == 1:
            q[sel] = np.stack([(m[:, 2, 1] - m[:, 1, 2]) / ss, ss / 4,
                               (m[:, 0, 1] + m[:, 1, 0]) / ss, (m[:, 0, 2] + m[:, 2, 0]) / ss], 1)
        elif idx == 2:
            q[sel] = np.stack([(m[:, 0, 2] - m[:, 2, 0]) / ss, (m[:, 0, 1] + m[:, 1, 0]) / ss,
                               ss / 4, (m[:, 1, 2] + m[:, 2, 1]) / ss], 1)
        else:
            q[sel] = np.stack([(m[:, 1, 0] - m[:, 0, 1]) / ss, (m[:, 0, 2] + m[:, 2, 0]) / ss,
                               (m[:, 1, 2] + m[:, 2, 1]) / ss, ss / 4], 1)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q[0] if single else q


def axis_angle_to_matrix(rotvec):
    """Rotations of rotation vectors (axis times angle in radians), Rodrigues' formula.

    Parameters
    ----------
    rotvec : (3,) or (N, 3) array of float
        (x, y, z) components; the norm is the angle in radians.

    Returns
    -------
    (3, 3) or (N, 3, 3) ndarray

    Examples
    --------
    >>> np.round(axis_angle_to_matrix([0, 0, np.pi / 2]) @ [1, 0, 0], 6) + 0.0
    array([0., 1., 0.])
    """
    v = np.asarray(rotvec, dtype=float)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = angle / 2
    # sin(a/2)/a -> 1/2 as a -> 0
    scale = np.where(angle > 1e-12, np.sin(half) / np.where(angle > 1e-12, angle, 1), 0.5)
    return quaternion_to_matrix(np.concatenate([np.cos(half), v * scale], axis=-1))


# ---------------------------------------------------------------------------
# uniform sets
# ---------------------------------------------------------------------------

def angular_step_for(diameter, resolution):
    """Angular step (degrees) that a resolution allows for a particle diameter.

    Crowther-like rule: rotating by ``resolution / diameter`` radians moves
    the rim of a particle of radius ``diameter / 2`` by ``resolution / 2``,
    so finer steps do not change the band-limited template noticeably.

    Parameters
    ----------
    diameter, resolution : float
        Particle diameter and resolution (e.g. the low-pass), same unit (Å).

    Returns
    -------
    float
        ``degrees(resolution / diameter)``.

    Examples
    --------
    >>> round(angular_step_for(300.0, 30.0), 3)
    5.73
    """
    if diameter <= 0 or resolution <= 0:
        raise ValueError(f"diameter and resolution must be positive, got {diameter} and "
                         f"{resolution}")
    return float(np.degrees(resolution / diameter))


def rotation_count(step):
    """Number of rotations of `uniform_rotations` over SO(3) for an angular step (degrees).

    Examples
    --------
    >>> rotation_count(30.0)
    279
    """
    if not step > 0:
        raise ValueError(f"the angular step must be positive, got {step} degrees")
    return int(np.ceil(_COUNT_CONSTANT / np.radians(step) ** 3))


def super_fibonacci_quaternions(n):
    """``n`` quasi-uniform unit quaternions on S^3 (Alexa's super-Fibonacci spiral).

    Examples
    --------
    >>> q = super_fibonacci_quaternions(100)
    >>> q.shape, np.allclose(np.linalg.norm(q, axis=1), 1)
    ((100, 4), True)
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"need at least one rotation, got {n}")
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1 - s / n)
    alpha, beta = 2 * np.pi * s / _PHI, 2 * np.pi * s / _PSI
    # (x, y, z, w) of the paper reordered to (w, x, y, z); uniformity does not care
    return np.stack([big_r * np.cos(beta), r * np.sin(alpha), r * np.cos(alpha),
                     big_r * np.sin(beta)], 1)


def uniform_rotations(step, symmetry="c1"):
    """A quasi-uniform rotation set at an angular step, reduced to the asymmetric unit.

    Parameters
    ----------
    step : float
        Angular step, degrees (see the module docstring for the achieved
        spacing).
    symmetry : str
        Point group of the particle (see `symmetry_matrices`); the set keeps
        one rotation of each symmetry class, about ``1 / order`` of the full set.

    Returns
    -------
    (N, 3, 3) ndarray of float

    Examples
    --------
    >>> len(uniform_rotations(30.0))
    279
    >>> abs(len(uniform_rotations(12.0, "c4")) * 4 / len(uniform_rotations(12.0)) - 1) < 0.05
    True
    """
    rotations = quaternion_to_matrix(super_fibonacci_quaternions(rotation_count(step)))
    return asymmetric_unit(rotations, symmetry)


def local_rotations(center, radius, step):
    """Rotations within an angle of a given one, on a cubic grid of rotation vectors.

    Parameters
    ----------
    center : (3, 3) array of float
        The rotation to refine around.
    radius : float
        Largest angle (degrees) from ``center``.
    step : float
        Grid spacing of the rotation vectors, degrees.

    Returns
    -------
    (N, 3, 3) ndarray
        ``D @ center`` for every small rotation D of the grid (D about axes in
        the tomogram frame); the first is ``center`` itself.

    Examples
    --------
    >>> rots = local_rotations(np.eye(3), 10.0, 5.0)
    >>> len(rots), np.allclose(rots[0], np.eye(3))
    (33, True)
    >>> float(rotation_angle(rots).max()) <= 10.0 + 1e-9
    True
    """
    if not radius >= 0 or not step > 0:
        raise ValueError(f"local rotations need radius >= 0 and step > 0 degrees, got "
                         f"{radius} and {step}")
    k = int(np.floor(radius / step + 1e-9))
    g = np.arange(-k, k + 1) * np.radians(step)
    v = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    v = v[np.linalg.norm(v, axis=1) <= np.radians(radius) + 1e-12]
    v = v[np.argsort(np.linalg.norm(v, axis=1), kind="stable")]
    return axis_angle_to_matrix(v) @ np.asarray(center, dtype=float)[:3, :3]


def nearest_neighbour_angles(rotations, symmetry="c1"):
    """Angle (degrees) from each rotation of a set to its nearest other member.

    Parameters
    ----------
    rotations : (N, 3, 3) array, N >= 2
    symmetry : str
        Equivalent rotations ``R @ S`` count as the same pose.

    Returns
    -------
    (N,) ndarray

    Examples
    --------
    >>> a = nearest_neighbour_angles(uniform_rotations(30.0))
    >>> 20 < a.mean() < 35
    True
    """
    sym = symmetry_matrices(symmetry)
    q = matrix_to_quaternion(np.asarray(rotations)[:, None] @ sym[None]).reshape(-1, 4)
    n = len(rotations)
    owner = np.repeat(np.arange(n), len(sym))
    # q and -q are the same rotation; the chord d between unit quaternions at
    # 4D angle a is 2 sin(a/2), and the rotation angle is 2a
    tree = cKDTree(np.vstack([q, -q]))
    owners = np.concatenate([owner, owner])
    k = min(len(owners), 2 * len(sym) + 2)
    d, idx = tree.query(matrix_to_quaternion(rotations), k)
    d = np.where(owners[idx] == np.arange(n)[:, None], np.inf, d)
    chord = d.min(axis=1)
    return np.degrees(4 * np.arcsin(np.clip(chord / 2, 0, 1)))


# ---------------------------------------------------------------------------
# symmetry
# ---------------------------------------------------------------------------

def _close_group(generators):
    """All products of the generators (a finite rotation group)."""
    group = [np.eye(3)]
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                m = g @ a
                if not any(np.abs(m - b).max() < 1e-6 for b in group):
                    group.append(m)
                    new.append(m)
        frontier = new
        if len(group) > 60:
            raise RuntimeError("symmetry generators do not close into a point group")
    return np.array(group)


def _about(axis, angle_deg):
    axis = np.asarray(axis, dtype=float)
    return axis_angle_to_matrix(axis / np.linalg.norm(axis) * np.radians(angle_deg))


def symmetry_matrices(symmetry):
    """The rotations of a point group, in the particle's canonical frame.

    Parameters
    ----------
    symmetry : str
        ``c1``, ``cN``, ``dN`` (N >= 1), ``t``, ``o`` or ``i`` (case and
        surrounding spaces ignored). Axes as in the module docstring.

    Returns
    -------
    (order, 3, 3) ndarray
        The identity first.

    Raises
    ------
    ValueError
        If the string is not one of those, naming it.

    Examples
    --------
    >>> [len(symmetry_matrices(s)) for s in ("c1", "C7", "d7", "t", "o", "i")]
    [1, 7, 14, 12, 24, 60]
    >>> symmetry_matrices("x3")
    Traceback (most recent call last):
    ...
    ValueError: cannot parse the symmetry 'x3': use c1, cN, dN (N >= 1), t, o or i
    """
    text = str(symmetry).strip().lower()
    match = re.fullmatch(r"([cd])([0-9]+)|([toi])", text)
    if not match or (match.group(2) is not None and int(match.group(2)) < 1):
        raise ValueError(f"cannot parse the symmetry {symmetry!r}: use c1, cN, dN (N >= 1), "
                         f"t, o or i")
    if match.group(1):
        n = int(match.group(2))
        gens = [_about((0, 0, 1), 360.0 / n)]
        if match.group(1) == "d":
            gens.append(_about((1, 0, 0), 180.0))
    elif text == "t":
        gens = [_about((0, 0, 1), 180.0), _about((1, 1, 1), 120.0)]
    elif text == "o":
        gens = [_about((0, 0, 1), 90.0), _about((1, 1, 1), 120.0)]
    else:
        phi = (1 + np.sqrt(5)) / 2
        gens = [_about((0, 1, phi), 72.0), _about((1, 1, 1), 120.0), _about((0, 0, 1), 180.0)]
    return _close_group(gens)


def symmetry_order(symmetry):
    """Number of rotations of a point group (see `symmetry_matrices`).

    Examples
    --------
    >>> symmetry_order("d7")
    14
    """
    return len(symmetry_matrices(symmetry))


def rotation_angle(R):
    """Rotation angle (degrees, 0..180) of rotation matrices.

    Examples
    --------
    >>> round(float(rotation_angle(axis_angle_to_matrix([0, 0.3, 0]))), 4)
    17.1887
    """
    R = np.asarray(R, dtype=float)[..., :3, :3]
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def angular_distance(R1, R2, symmetry="c1"):
    """Smallest rotation angle (degrees) between poses, over the symmetry's equivalents.

    Parameters
    ----------
    R1, R2 : (3, 3) or (N, 3, 3) arrays (broadcast against each other)
        4x4 matrices are accepted; their shifts are ignored.
    symmetry : str
        Point group of the particle: ``R2 @ S`` is the same pose as ``R2``.

    Returns
    -------
    float or (N,) ndarray

    Examples
    --------
    >>> a = axis_angle_to_matrix([0, 0, np.radians(100)])
    >>> round(float(angular_distance(np.eye(3), a)), 6)
    100.0
    >>> round(float(angular_distance(np.eye(3), a, "c4")), 6)
    10.0
    """
    A = np.asarray(R1, dtype=float)[..., :3, :3]
    B = np.asarray(R2, dtype=float)[..., :3, :3]
    rel = np.swapaxes(A, -1, -2) @ B
    sym = symmetry_matrices(symmetry)
    # trace(rel @ S) for every S: the largest trace is the smallest angle
    traces = np.einsum("...ij,kji->...k", rel, sym)
    cos = (traces.max(axis=-1) - 1) / 2
    out = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return float(out) if np.ndim(out) == 0 else out


def canonical_rotations(rotations, symmetry):
    """The symmetry-equivalent of each rotation closest to the identity.

    ``R @ S`` with the largest trace over the group: the representative in
    the asymmetric unit around the identity (a Dirichlet domain).

    Examples
    --------
    >>> r = canonical_rotations(axis_angle_to_matrix([[0, 0, np.radians(100)]]), "c4")
    >>> round(float(rotation_angle(r)[0]), 6)
    10.0
    """
    R = np.asarray(rotations, dtype=float)[..., :3, :3]
    sym = symmetry_matrices(symmetry)
    traces = np.einsum("...ij,kji->...k", R, sym)
    best = np.argmax(traces, axis=-1)
    return R @ sym[best]


def asymmetric_unit(rotations, symmetry):
    """One rotation of each symmetry class: the one closest to the identity.

    Parameters
    ----------
    rotations : (N, 3, 3) array
        A set uniform over SO(3).
    symmetry : str

    Returns
    -------
    (M, 3, 3) ndarray
        About ``N / order`` rotations (the Dirichlet domain of the group about
        the identity: ``trace(R) >= trace(R @ S)`` for every S of the group).

    Examples
    --------
    >>> full = uniform_rotations(15.0)
    >>> round(len(asymmetric_unit(full, "d2")) * 4 / len(full), 1)
    1.0
    """
    R = np.asarray(rotations, dtype=float)[..., :3, :3]
    sym = symmetry_matrices(symmetry)
    if len(sym) == 1:
        return R.copy()
    traces = np.einsum("nij,kji->nk", R, sym)
    keep = traces[:, 0] >= traces.max(axis=1) - 1e-9
    return R[keep]
