"""Points spread evenly over surfaces: the Fibonacci sphere, Poisson-disk sampling of meshes.

The spacing asked for is the median distance between neighbouring points
(voxels); the constants below calibrate the samplers to it.
"""
import numpy as np
from scipy.spatial import cKDTree

from .mesh import mesh_area

# Candidates per spacing**2 of area drawn before Poisson-disk thinning: dense
# enough that the thinning is (nearly) maximal, i.e. leaves no holes.
_CANDIDATE_DENSITY = 24.0
# Poisson-disk radius as a fraction of the wanted spacing. A maximal
# Poisson-disk set of radius r has nearest-neighbour distances in [r, ~1.4 r]
# with median ~1.06 r for dense candidates (measured on spheres, 3-8 voxel
# spacings); this fraction puts the median at the wanted spacing.
_DISK_FRACTION = 0.94
# Area per point of a hexagonal lattice of spacing d is (sqrt(3)/2) d**2. The
# Fibonacci lattice is slightly distorted: its median nearest-neighbour distance
# is 0.89 d at that density (measured for 200-1500 points), so each point gets
# (sqrt(3)/2) / 0.89**2 d**2 of area to make the median d.
_FIBONACCI_AREA = np.sqrt(3.0) / 2.0 / 0.89 ** 2
# Most cropping points one model may give: beyond it the spacing (or the
# fitted size) is surely a mistake, and memory would run out.
MAX_CROPPING_POINTS = 2_000_000


def fibonacci_sphere(n):
    """``n`` nearly evenly spread unit vectors (Fibonacci lattice).

    Parameters
    ----------
    n : int
        Number of points, >= 1.

    Returns
    -------
    (n, 3) ndarray
        Unit vectors (x, y, z).

    Examples
    --------
    >>> v = fibonacci_sphere(100)
    >>> v.shape, bool(np.allclose(np.linalg.norm(v, axis=1), 1))
    ((100, 3), True)
    """
    if n < 1:
        raise ValueError(f"need at least one point on the sphere, got n={n}")
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + np.sqrt(5.0)) * i
    rho = np.sqrt(1.0 - z * z)
    return np.column_stack([rho * np.cos(phi), rho * np.sin(phi), z])


def crop_sphere(center, radius, spacing):
    """Cropping points spread evenly over a sphere, with their outward normals.

    Parameters
    ----------
    center : (3,) array of float
        Centre (x, y, z) in voxels.
    radius : float
        Radius in voxels (> 0).
    spacing : float
        Wanted distance between neighbouring points, voxels (> 0). The number
        of points is the sphere's area over a fixed area per point
        (calibrated so that the median nearest-neighbour distance is
        ``spacing``), so doubling ``spacing`` gives a quarter of the points.

    Returns
    -------
    positions : (N, 3) ndarray
        (x, y, z) in voxels, on the sphere.
    normals : (N, 3) ndarray
        Outward unit normals.

    Examples
    --------
    >>> positions, normals = crop_sphere([0, 0, 0], radius=10, spacing=4)
    >>> len(positions), bool(np.allclose(positions, 10 * normals))
    (72, True)
    """
    if radius <= 0:
        raise ValueError(f"sphere radius must be positive, got {radius}")
    if spacing <= 0:
        raise ValueError(f"cropping spacing must be positive, got {spacing}")
    n = max(1, int(round(4 * np.pi * radius ** 2 / (_FIBONACCI_AREA * spacing ** 2))))
    if n > MAX_CROPPING_POINTS:
        raise ValueError(f"a sphere of radius {radius:.1f} at spacing {spacing:g} would give {n} "
                         f"cropping points (more than {MAX_CROPPING_POINTS}): increase the spacing")
    normals = fibonacci_sphere(n)
    return np.asarray(center, dtype=float) + radius * normals, normals


def sample_mesh(vertices, faces, n, seed=0):
    """Uniform random points on a triangle mesh (area weighted).

    Returns
    -------
    points : (n, 3) ndarray
    face_index : (n,) ndarray of int
    barycentric : (n, 3) ndarray
        Weights of the face's three vertices.

    Examples
    --------
    >>> from tomopick.core.geometry import icosphere
    >>> points, face_index, barycentric = sample_mesh(*icosphere(2), 500, seed=1)
    >>> points.shape, bool(np.allclose(barycentric.sum(axis=1), 1))
    ((500, 3), True)
    """
    vertices = np.asarray(vertices, dtype=float)
    faces = np.asarray(faces, dtype=int)
    rng = np.random.default_rng(seed)
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        raise ValueError("the mesh has zero area")
    face_index = rng.choice(len(faces), size=n, p=area / area.sum())
    # sqrt trick: uniform density over each triangle
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    bary = np.column_stack([1 - r1, r1 * (1 - r2), r1 * r2])
    points = np.einsum("nk,nkd->nd", bary, tri[face_index])
    return points, face_index, bary


def poisson_disk(points, radius, seed=0):
    """Greedy Poisson-disk thinning: keep points no closer than ``radius``.

    Candidates are visited in random order; each kept point removes its
    neighbours within ``radius``. With a dense candidate set the result is a
    maximal Poisson-disk set: nearest-neighbour distances lie in about
    [radius, 1.4 radius].

    Returns
    -------
    (M,) ndarray of int
        Indices of the kept points.

    Examples
    --------
    The second point is within the radius of the first:

    >>> poisson_disk([[0, 0, 0], [0.5, 0, 0], [3, 0, 0]], radius=1.0)
    array([0, 2])
    """
    points = np.asarray(points, dtype=float)
    order = np.random.default_rng(seed).permutation(len(points))
    tree = cKDTree(points)
    removed = np.zeros(len(points), dtype=bool)
    kept = []
    # neighbours are looked up only for kept points (a few % of the
    # candidates): memory stays O(candidates) on large membranes
    for i in order:
        if not removed[i]:
            kept.append(i)
            removed[tree.query_ball_point(points[i], radius)] = True
    return np.array(sorted(kept), dtype=int)


def crop_mesh(vertices, faces, spacing, seed=0):
    """Cropping points spread evenly over a triangle mesh (Poisson-disk sampling).

    Dense uniform candidates are thinned with a Poisson-disk radius chosen so
    that the median distance to the nearest neighbour is about ``spacing``.

    Parameters
    ----------
    vertices : (V, 3) array of float
        (x, y, z) in voxels.
    faces : (F, 3) array of int
    spacing : float
        Wanted distance between neighbouring points, voxels (> 0).
    seed : int
        Seed of the random candidates (results are reproducible).

    Returns
    -------
    points : (N, 3) ndarray
        (x, y, z) in voxels, on the mesh.
    face_index : (N,) ndarray of int
        Face each point lies on.
    barycentric : (N, 3) ndarray
        Barycentric coordinates in that face (to interpolate vertex data).

    Examples
    --------
    Points 2 voxels apart (median distance to the nearest) on a sphere of
    radius 10:

    >>> from scipy.spatial import cKDTree
    >>> from tomopick.core.geometry import icosphere
    >>> vertices, faces = icosphere(3)
    >>> points, face_index, barycentric = crop_mesh(10 * vertices, faces, spacing=2.0)
    >>> distance, _ = cKDTree(points).query(points, k=2)
    >>> round(float(np.median(distance[:, 1])), 1)
    2.0
    """
    if spacing <= 0:
        raise ValueError(f"cropping spacing must be positive, got {spacing}")
    vertices = np.asarray(vertices, dtype=float)
    faces = np.asarray(faces, dtype=int)
    area = mesh_area(vertices, faces)
    if area / spacing ** 2 > MAX_CROPPING_POINTS:
        raise ValueError(f"a surface of {area:.0f} voxels^2 at spacing {spacing:g} would give "
                         f"over {MAX_CROPPING_POINTS} cropping points: increase the spacing")
    n = int(np.ceil(_CANDIDATE_DENSITY * area / spacing ** 2)) + 1
    points, face_index, bary = sample_mesh(vertices, faces, n, seed)
    keep = poisson_disk(points, _DISK_FRACTION * spacing, seed)
    return points[keep], face_index[keep], bary[keep]
