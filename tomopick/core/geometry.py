"""Geometric models of membranes, vesicles and filaments from user-picked points.

This is the numerical side of directional ("vectorial") picking and of the
model workflow: a user clicks a few points on a vesicle, a membrane or a
filament; these functions fit the geometry, spread cropping points evenly over
it and orient each one.

Conventions
-----------
- Positions and vectors are (x, y, z) in voxels.
- A normal is a unit vector. For vesicles and membranes the particle's z-axis
  is the OUTWARD normal: away from the fitted centre (sphere / ellipsoid
  centre; for an open surface the centre of the least-squares sphere through
  the user points, i.e. the centre of curvature). The user's interior marker
  overrides this: normals point away from the side it is on. For a closed
  model (vesicle) a marker inside keeps the normals outward and a marker
  outside flips every one of them (they then point into the vesicle).
- The in-plane angle is not defined by a surface; rotations are built with
  `tomopick.core.transforms.rotation_from_z_axis` with ``narot = 0``.
- Filaments: the particle's z-axis runs along the filament (direction of the
  user's clicks) and its x-axis points radially outward from the axis; it
  turns by ``dphi`` degrees from one point to the next.
- Triangle meshes are ``(vertices (V, 3) float, faces (F, 3) int)``; faces are
  wound consistently so that cross-product normals agree across the mesh.

Every fitting function raises ``ValueError`` with the reason when the points
cannot support the model (too few, degenerate); callers report the reason
and carry on with the next model.
"""
from dataclasses import dataclass, field

import numpy as np
from scipy import interpolate
from scipy.sparse import coo_matrix, diags
from scipy.spatial import cKDTree

from tomopick.core.transforms import rotation_from_z_axis

# Names of the model types, in the order of the protocols' modelType choices.
MODEL_TYPES = ("General", "Vesicle", "Ellipsoidal vesicle", "Surface", "Filament")

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
# A closed model whose size exceeds the extent of its user points this many
# times is an extrapolation from a nearly flat patch, not a vesicle.
_MAX_EXTRAPOLATION = 10.0


def _as_points(points, minimum, what):
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{what}: points must be an (N, 3) array of (x, y, z), "
                         f"got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{what}: points contain NaN or infinite values")
    if len(points) < minimum:
        raise ValueError(f"{what} needs at least {minimum} points, got {len(points)}")
    return points


def _unit(v):
    v = np.asarray(v, dtype=float)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm == 0, 1.0, norm)


# ---------------------------------------------------------------- fitting

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
    """
    points = _as_points(points, 4, "a sphere")
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
    """
    points = _as_points(points, 9, "an ellipsoid")
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
    """
    u = (np.asarray(points, dtype=float) - center) @ rotation
    return _unit((u / np.asarray(semi_axes) ** 2) @ rotation.T)


def project_to_ellipsoid(points, center, semi_axes, rotation):
    """Move points onto an ellipsoid along the ray from its centre.

    Exact for a sphere (nearest point); for an ellipsoid a point at distance
    h off the surface lands within O(h * eccentricity) of the nearest point,
    which is negligible for points already within a voxel of it.

    Returns
    -------
    (N, 3) ndarray
        Positions (x, y, z) in voxels, on the ellipsoid.
    """
    semi_axes = np.asarray(semi_axes, dtype=float)
    u = (np.asarray(points, dtype=float) - center) @ rotation / semi_axes
    return center + (_unit(u) * semi_axes) @ rotation.T


def inside_ellipsoid(point, center, semi_axes, rotation):
    """Whether a point lies inside an ellipsoid (bool)."""
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
    """
    points = np.asarray(points, dtype=float)
    normals = np.asarray(normals, dtype=float)
    side = np.sum(normals * _unit(points - np.asarray(reference, dtype=float)))
    return -normals if side < 0 else normals


# ------------------------------------------------------------- sampling

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


# ------------------------------------------------------------------ meshes

def mesh_area(vertices, faces):
    """Total area of a triangle mesh (voxels^2)."""
    tri = np.asarray(vertices, dtype=float)[np.asarray(faces, dtype=int)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return float(0.5 * np.linalg.norm(cross, axis=1).sum())


def vertex_normals(vertices, faces):
    """Area-weighted unit vertex normals following the faces' winding."""
    vertices = np.asarray(vertices, dtype=float)
    faces = np.asarray(faces, dtype=int)
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return _unit(normals)


def interpolate_normals(vertices, faces, face_index, barycentric):
    """Smooth unit normals at points given by face index and barycentric weights."""
    vn = vertex_normals(vertices, faces)
    return _unit(np.einsum("nk,nkd->nd", barycentric, vn[np.asarray(faces)[face_index]]))


def _edges(faces):
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(e, axis=1)


def mesh_edge_lengths(vertices, faces):
    """Lengths of the unique edges of a mesh (voxels)."""
    e = np.unique(_edges(np.asarray(faces, dtype=int)), axis=0)
    v = np.asarray(vertices, dtype=float)
    return np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)


def subdivide_mesh(vertices, faces):
    """Split every triangle into four at its edge midpoints (winding kept).

    Returns
    -------
    vertices : (V + E, 3) ndarray
    faces : (4 F, 3) ndarray of int
    """
    vertices = np.asarray(vertices, dtype=float)
    faces = np.asarray(faces, dtype=int)
    f = len(faces)
    edges = _edges(faces)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    mid = len(vertices) + inverse
    m01, m12, m20 = mid[:f], mid[f:2 * f], mid[2 * f:]
    a, b, c = faces.T
    new_faces = np.concatenate([np.column_stack([a, m01, m20]),
                                np.column_stack([m01, b, m12]),
                                np.column_stack([m20, m12, c]),
                                np.column_stack([m01, m12, m20])])
    midpoints = 0.5 * (vertices[unique[:, 0]] + vertices[unique[:, 1]])
    new_vertices = np.concatenate([vertices, midpoints])
    return new_vertices, new_faces


def boundary_vertices(faces):
    """Indices of vertices on the mesh border (edges used by one face only)."""
    edges = _edges(np.asarray(faces, dtype=int))
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return np.unique(unique[counts == 1])


def smooth_mesh(vertices, faces, iterations=10, fixed=None, lam=0.5, mu=-0.53):
    """Taubin (lambda|mu) smoothing: removes click noise without shrinking.

    Parameters
    ----------
    vertices : (V, 3) array of float
    faces : (F, 3) array of int
    iterations : int
        Number of lambda/mu pass pairs.
    fixed : array of int, optional
        Vertices that do not move (default: the border of an open mesh, so
        that it does not retract).

    Returns
    -------
    (V, 3) ndarray
    """
    vertices = np.array(vertices, dtype=float)
    faces = np.asarray(faces, dtype=int)
    if fixed is None:
        fixed = boundary_vertices(faces)
    e = np.unique(_edges(faces), axis=0)
    n = len(vertices)
    adj = coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                     shape=(n, n)).tocsr()
    degree = np.asarray(adj.sum(axis=1)).ravel()
    mean_op = diags(1.0 / np.maximum(degree, 1)) @ adj
    moving = np.ones(n, dtype=bool)
    moving[np.asarray(fixed, dtype=int)] = False
    moving &= degree > 0
    for _ in range(iterations):
        for factor in (lam, mu):
            delta = mean_op @ vertices - vertices
            vertices[moving] += factor * delta[moving]
    return vertices


def refine_mesh(vertices, faces, iterations, max_triangles=100000, project=None, smooth=True):
    """Subdivision refinement: each iteration splits triangles in four, then
    either projects the vertices onto an analytic surface (``project``) or
    smooths them (Taubin, border fixed).

    Iterations stop early when the next would exceed ``max_triangles``.

    Parameters
    ----------
    vertices, faces : the mesh
    iterations : int
        Number of subdivision iterations (>= 0).
    max_triangles : int
        Cap on the number of faces.
    project : callable, optional
        ``project(points) -> points`` onto the fitted surface.
    smooth : bool
        Smooth after each subdivision when ``project`` is None.

    Returns
    -------
    vertices, faces
    """
    if iterations < 0:
        raise ValueError(f"subdivision iterations must be >= 0, got {iterations}")
    for _ in range(int(iterations)):
        if 4 * len(faces) > max_triangles:
            break
        vertices, faces = subdivide_mesh(vertices, faces)
        if project is not None:
            vertices = project(vertices)
        elif smooth:
            vertices = smooth_mesh(vertices, faces, iterations=5)
    return vertices, faces


def icosphere(subdivisions):
    """Unit-sphere triangle mesh: an icosahedron subdivided ``subdivisions`` times.

    Faces are wound counter-clockwise seen from outside (normals outward).
    Edge length is about 1.05 / 2**subdivisions; 20 * 4**subdivisions faces.
    """
    t = (1.0 + np.sqrt(5.0)) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0],
                  [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
                  [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
                  [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
                  [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    v = _unit(v)
    for _ in range(int(subdivisions)):
        v, f = subdivide_mesh(v, f)
        v = _unit(v)
    return v, f


def ellipsoid_mesh(center, semi_axes, rotation, edge, max_triangles=100000):
    """Triangle mesh of an ellipsoid with edges of about ``edge`` voxels.

    The icosphere level is the coarsest whose longest mapped edge is at most
    ``edge``, limited so that the face count stays <= ``max_triangles``
    (never below the bare icosahedron, 20 faces).

    Returns
    -------
    vertices : (V, 3) ndarray
    faces : (F, 3) ndarray of int
        Normals (winding) point outward.
    """
    if edge <= 0:
        raise ValueError(f"mesh edge must be positive, got {edge}")
    semi_axes = np.asarray(semi_axes, dtype=float)
    level = int(np.ceil(np.log2(max(1.0, 1.05 * semi_axes.max() / edge))))
    while level > 0 and 20 * 4 ** level > max_triangles:
        level -= 1
    v, f = icosphere(level)
    return np.asarray(center, dtype=float) + (v * semi_axes) @ rotation.T, f


def _order_slice(xy):
    """Order the points of one slice along the curve they trace.

    Angles around the slice's least-squares circle centre, cut at the
    largest angular gap, order arcs up to nearly closed contours; nearly
    straight slices are ordered along their principal direction.
    """
    mean = xy.mean(axis=0)
    q = xy - mean
    _, s, vt = np.linalg.svd(q, full_matrices=False)
    projection = q @ vt[0]
    if len(xy) < 4 or s[1] < 0.15 * s[0]:
        return np.argsort(projection)
    A = np.column_stack([2 * q, np.ones(len(q))])
    sol, *_ = np.linalg.lstsq(A, (q ** 2).sum(axis=1), rcond=None)
    angle = np.arctan2(q[:, 1] - sol[1], q[:, 0] - sol[0])
    order = np.argsort(angle)
    gaps = np.diff(np.r_[angle[order], angle[order[0]] + 2 * np.pi])
    start = (np.argmax(gaps) + 1) % len(order)
    return np.roll(order, -start)


def surface_from_levels(points, edge, max_triangles=100000, smoothing=1.0):
    """Triangulated surface through points picked on several z-slices.

    Each slice's points (same rounded z) are ordered along the curve they
    trace and fitted with a smoothing spline. All slices share one
    arc-length coordinate ``s``: its origin is where each curve crosses the
    plane through the centroid of all points normal to their main direction,
    and it grows along that direction. Columns of constant ``s`` (every
    ``edge`` voxels) follow a smoothing spline in z through each run of
    consecutive levels that reach that ``s`` (cubic with 4+ levels, linear
    with 2), evaluated every ``edge`` voxels in z within the run; the
    resulting (rows x columns) grid is split into triangles where all three
    corners exist, so the mesh keeps the extent the user picked on each slice.
    The surface is open (a membrane patch): a vesicle picked all around is
    modelled with `crop_vesicle` or `crop_ellipsoid` instead.

    Parameters
    ----------
    points : (N, 3) array of float
        (x, y, z) in voxels; at least two z-levels with at least two points
        each.
    edge : float
        Target triangle edge, voxels (the spacing of rows and columns).
    max_triangles : int
        Cap on the face count: the edge grows until the grid fits.
    smoothing : float
        Expected click error (voxels rms) used by the smoothing splines
        (within and across slices); 0 interpolates the clicks exactly.

    Returns
    -------
    vertices : (V, 3) ndarray
    faces : (F, 3) ndarray of int
        Consistently wound (the normal side is decided later from the interior).

    Raises
    ------
    ValueError
        With fewer than two usable levels, or levels that do not overlap.
    """
    points = _as_points(points, 4, "a surface by levels")
    if edge <= 0:
        raise ValueError(f"mesh edge must be positive, got {edge}")
    levels = np.round(points[:, 2])
    all_levels = np.unique(levels)
    centre = points[:, :2].mean(axis=0)
    _, _, vt = np.linalg.svd(points[:, :2] - centre, full_matrices=False)
    main = vt[0]
    curves = []
    for z in all_levels:
        xy = points[levels == z, :2]
        xy = xy[_order_slice(xy)]
        keep = np.r_[True, np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-9]
        xy = xy[keep]
        if len(xy) < 2:
            continue
        if np.dot(xy[-1] - xy[0], main) < 0:
            xy = xy[::-1]
        try:
            # allow twice the expected residual of the clicks: knots are then
            # added for real shape only, never to follow click noise
            tck, _ = interpolate.splprep(xy.T, k=min(3, len(xy) - 1),
                                         s=2 * len(xy) * smoothing ** 2)
            dense = np.array(interpolate.splev(np.linspace(0, 1, 2001), tck)).T
        except (ValueError, TypeError):  # too few points for a spline: use the polyline
            dense = xy
        arc = np.r_[0, np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))]
        if arc[-1] == 0:
            raise ValueError(f"the points on level z={z:g} coincide")
        origin = np.argmin(np.abs((dense - centre) @ main))
        curves.append((z, arc - arc[origin], dense))
    if len(curves) < 2:
        raise ValueError(f"a surface needs points on at least two z-levels with two points each, "
                         f"got levels {all_levels.tolist()}")
    zs = np.array([z for z, _, _ in curves])
    s_min = min(arc[0] for _, arc, _ in curves)
    s_max = max(arc[-1] for _, arc, _ in curves)
    while True:
        n_cols = max(2, int(np.ceil((s_max - s_min) / edge)) + 1)
        n_rows = max(2, int(np.ceil((zs[-1] - zs[0]) / edge)) + 1)
        if 2 * (n_rows - 1) * (n_cols - 1) <= max_triangles or (n_rows == 2 and n_cols == 2):
            break
        edge *= 1.1
    s_cols = np.linspace(s_min, s_max, n_cols)
    z_rows = np.linspace(zs[0], zs[-1], n_rows)
    # the position of every level at every column; NaN where the level does not reach it
    tolerance = 0.5 * (s_cols[1] - s_cols[0])
    columns = np.full((len(curves), n_cols, 2), np.nan)
    for i, (_, arc, dense) in enumerate(curves):
        reach = (s_cols >= arc[0] - tolerance) & (s_cols <= arc[-1] + tolerance)
        s = np.clip(s_cols[reach], arc[0], arc[-1])
        columns[i, reach, 0] = np.interp(s, arc, dense[:, 0])
        columns[i, reach, 1] = np.interp(s, arc, dense[:, 1])
    grid = np.full((n_rows, n_cols, 2), np.nan)
    for j in range(n_cols):
        have = ~np.isnan(columns[:, j, 0])
        # a column is filled only between consecutive levels that both reach
        # it: a level that stops short leaves a gap, not a guess
        runs = np.split(np.flatnonzero(have), np.flatnonzero(np.diff(np.flatnonzero(have)) > 1) + 1)
        for run in runs:
            if len(run) < 2:
                continue
            zj, cj = zs[run], columns[run, j]
            rows = (z_rows >= zj[0] - 1e-6) & (z_rows <= zj[-1] + 1e-6)
            if len(zj) >= 3:
                # click noise differs from slice to slice: an interpolating spline
                # would turn it into ripples between levels, so smooth across z too
                k = min(3, len(zj) - 1)
                for d in range(2):
                    spline = interpolate.UnivariateSpline(zj, cj[:, d], k=k,
                                                          s=len(zj) * smoothing ** 2)
                    grid[rows, j, d] = spline(z_rows[rows])
            else:
                grid[rows, j] = interpolate.interp1d(zj, cj, axis=0)(z_rows[rows])
    valid = ~np.isnan(grid[:, :, 0])
    vertices = np.concatenate([grid, np.broadcast_to(z_rows[:, None, None], (n_rows, n_cols, 1))],
                              axis=2).reshape(-1, 3)
    idx = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.column_stack([a, b, d]), np.column_stack([a, d, c])])
    ok = valid.ravel()
    faces = faces[ok[faces].all(axis=1)]
    if len(faces) == 0:
        raise ValueError("the levels do not overlap: pick the membrane over the same "
                         "stretch on each slice")
    # drop unused vertices and renumber
    used = np.unique(faces)
    remap = np.full(len(vertices), -1)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


# --------------------------------------------------------------- models

@dataclass
class ModelCrop:
    """Cropping points of one fitted model.

    Attributes
    ----------
    positions : (N, 3) ndarray
        (x, y, z) in voxels.
    rotations : (N, 3, 3) ndarray
        Orientation of each point (core convention: ``R @ z`` is the
        particle's z-axis); identity where ``oriented`` is False.
    oriented : (N,) ndarray of bool
        Whether the orientation is defined by the geometry.
    mesh : tuple (vertices, faces) or None
        The triangle mesh the points were sampled on.
    description : dict
        Fitted parameters (centre, radius, semi-axes, ...), for the log.
    """
    positions: np.ndarray
    rotations: np.ndarray
    oriented: np.ndarray = None
    mesh: tuple = None
    description: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.oriented is None:
            self.oriented = np.ones(len(self.positions), dtype=bool)

    @property
    def normals(self):
        """The particles' z-axes, (N, 3)."""
        return self.rotations[:, :, 2]

    def __len__(self):
        return len(self.positions)


def _check_extrapolation(size, points, what):
    """Reject a closed model far larger than the region its points cover."""
    extent = float(np.ptp(np.asarray(points, dtype=float), axis=0).max())
    if size > _MAX_EXTRAPOLATION * max(extent, 1.0):
        raise ValueError(f"the fitted {what} ({size:.0f} voxels) is over {_MAX_EXTRAPOLATION:g} "
                         f"times larger than the picked region ({extent:.0f} voxels): the points "
                         "lie on a nearly flat patch; use the Surface or General model")


def _interior_flip(interior, inside):
    """-1 when an interior marker was placed outside the closed surface."""
    return 1.0 if interior is None or inside else -1.0


def crop_vesicle(points, spacing, interior=None):
    """Sphere model: least-squares sphere, evenly spread oriented cropping points.

    Parameters
    ----------
    points : (N, 3) array of float
        User points (x, y, z) on the membrane, voxels; N >= 4.
    spacing : float
        Distance between neighbouring cropping points, voxels.
    interior : (3,) array of float, optional
        Interior marker. Normals point away from it: placed outside the
        sphere it flips every normal (they then point inward).

    Returns
    -------
    ModelCrop
    """
    center, radius = fit_sphere(points)
    _check_extrapolation(2 * radius, points, "sphere diameter")
    positions, normals = crop_sphere(center, radius, spacing)
    inside = interior is None or np.linalg.norm(np.asarray(interior, float) - center) < radius
    normals = normals * _interior_flip(interior, inside)
    return ModelCrop(positions, rotation_from_z_axis(normals),
                     description={"center": center, "radius": radius})


def crop_ellipsoid(points, spacing, edge, max_triangles=100000, subdivisions=0, interior=None,
                   seed=0):
    """Ellipsoidal-vesicle model: algebraic ellipsoid fit, mesh, even cropping.

    The ellipsoid is meshed with edges of about ``edge`` (at most
    ``max_triangles`` faces), refined ``subdivisions`` times (subdivision
    with projection onto the fitted ellipsoid), sampled with `crop_mesh`;
    the samples are then put back exactly on the ellipsoid and oriented by
    its gradient.

    Parameters
    ----------
    points : (N, 3) array of float
        User points, voxels; N >= 9, all around the vesicle.
    spacing : float
        Distance between neighbouring cropping points, voxels.
    edge : float
        Target mesh edge, voxels.
    max_triangles : int
    subdivisions : int
        Refinement iterations (0 = none).
    interior : (3,) array of float, optional
        Interior marker; placed outside the ellipsoid it flips every normal.
    seed : int

    Returns
    -------
    ModelCrop
    """
    center, semi, rot = fit_ellipsoid(points)
    _check_extrapolation(2 * semi[0], points, "ellipsoid's longest axis")

    def project(p):
        return project_to_ellipsoid(p, center, semi, rot)

    vertices, faces = ellipsoid_mesh(center, semi, rot, edge, max_triangles)
    vertices, faces = refine_mesh(vertices, faces, subdivisions, max_triangles, project=project)
    positions, _, _ = crop_mesh(vertices, faces, spacing, seed)
    positions = project(positions)
    normals = ellipsoid_normals(positions, center, semi, rot)
    inside = interior is None or inside_ellipsoid(interior, center, semi, rot)
    normals = normals * _interior_flip(interior, inside)
    return ModelCrop(positions, rotation_from_z_axis(normals), mesh=(vertices, faces),
                     description={"center": center, "semi_axes": semi, "rotation": rot})


def _curvature_center(points):
    """Centre of the least-squares sphere, or None for a flat point cloud."""
    try:
        center, radius = fit_sphere(points)
    except ValueError:
        return None
    extent = np.ptp(points, axis=0).max()
    return None if radius > 50 * max(extent, 1.0) else center


def crop_surface(points, spacing, edge, max_triangles=100000, subdivisions=0, interior=None,
                 smoothing=1.0, seed=0):
    """Surface model (membrane by levels): mesh through slices, even cropping.

    Parameters
    ----------
    points : (N, 3) array of float
        User points on several z-slices (see `surface_from_levels`), voxels.
    spacing : float
        Distance between neighbouring cropping points, voxels.
    edge : float
        Target mesh edge, voxels.
    max_triangles : int
        Cap on the face count (mesh and refinement).
    subdivisions : int
        Refinement iterations: subdivision + Taubin smoothing (0 = none).
    interior : (3,) array of float, optional
        A point on the interior side. Without it "outward" is away from the
        centre of curvature of the user points (least-squares sphere); a
        flat membrane without marker gets normals with positive z.
    smoothing : float
        Click error (voxels rms) for the per-slice spline.
    seed : int

    Returns
    -------
    ModelCrop
    """
    points = _as_points(points, 4, "a surface")
    vertices, faces = surface_from_levels(points, edge, max_triangles, smoothing)
    vertices, faces = refine_mesh(vertices, faces, subdivisions, max_triangles)
    positions, face_index, bary = crop_mesh(vertices, faces, spacing, seed)
    if len(positions) == 0:
        raise ValueError("the surface is too small for the cropping spacing")
    normals = interpolate_normals(vertices, faces, face_index, bary)
    reference = interior if interior is not None else _curvature_center(points)
    if reference is not None:
        normals = outward_normals(positions, normals, reference)
    elif normals[:, 2].sum() < 0:
        normals = -normals
    return ModelCrop(positions, rotation_from_z_axis(normals), mesh=(vertices, faces),
                     description={"levels": int(len(np.unique(np.round(points[:, 2])))),
                                  "area": mesh_area(vertices, faces)})


def crop_general(points, interior=None, neighbours=8):
    """General model: the user points themselves, oriented by local PCA.

    Each point's normal is the least-variance direction of its
    ``neighbours`` nearest points. Its sign: away from the centre of
    curvature of all points (least-squares sphere) -- per point, so closed
    clouds come out right; for a flat cloud (no finite centre) all normals
    follow the plane normal with positive z. An interior marker then picks
    the side: inside the fitted sphere (or, flat, behind the plane) it keeps
    these normals, elsewhere it flips every one of them.
    Points that span no surface (fewer than 3, or collinear) are returned
    unoriented (identity rotation, ``oriented`` False).

    Parameters
    ----------
    points : (N, 3) array of float
        User points (x, y, z), voxels.
    interior : (3,) array of float, optional
        Interior marker.
    neighbours : int
        Size of the neighbourhood of the local PCA.

    Returns
    -------
    ModelCrop
    """
    points = _as_points(points, 1, "a general model")
    n = len(points)
    rotations = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    oriented = np.zeros(n, dtype=bool)
    description = {"points": n}
    if n >= 3:
        centroid = points.mean(axis=0)
        _, s, vt = np.linalg.svd(points - centroid, full_matrices=False)
        if s[1] > 0.1 * s[0]:
            _, idx = cKDTree(points).query(points, k=min(neighbours, n))
            local = points[idx] - points[idx].mean(axis=1, keepdims=True)
            _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", local, local))
            normals = vecs[:, :, 0]
            center = _curvature_center(points)
            if center is None:
                plane = vt[2] if vt[2][2] >= 0 else -vt[2]
                normals = normals * np.where(normals @ plane < 0, -1.0, 1.0)[:, None]
                keep = (interior is None
                        or np.dot(centroid - np.asarray(interior, float), plane) >= 0)
            else:
                radial = np.einsum("ni,ni->n", normals, points - center)
                normals = normals * np.where(radial < 0, -1.0, 1.0)[:, None]
                radius = np.linalg.norm(points - center, axis=1).mean()
                keep = (interior is None
                        or np.linalg.norm(np.asarray(interior, float) - center) < radius)
                description["center"] = center
            if not keep:
                normals = -normals
            rotations = rotation_from_z_axis(normals)
            oriented[:] = True
    return ModelCrop(points.copy(), rotations, oriented, description=description)


def crop_filament(points, dz, dphi=0.0, radius=0.0, smoothing=0.0):
    """Filament model: points along a smooth spline through the user points.

    A parametric spline (scipy.interpolate.splprep, cubic when there are 4+
    points) runs through the points in the order given; cropping points are
    placed every ``dz`` voxels of arc length from the first point. The
    reference frame is carried along the spline by parallel transport (no
    spurious twist); point i is turned by ``i * dphi`` degrees about the axis
    and placed ``radius`` voxels from it.

    Orientation: z-axis along the filament (tangent, in the picking
    direction); x-axis radial (from the axis towards the point; with radius 0
    the direction it would be placed in), so consecutive particles differ by
    a rotation of ``dphi`` about their z-axis.

    Parameters
    ----------
    points : (N, 3) array of float
        Points along the filament axis in order, voxels; N >= 2.
    dz : float
        Arc length between consecutive points, voxels (> 0).
    dphi : float
        Rotation about the axis from one point to the next, degrees.
    radius : float
        Distance of the points from the axis, voxels (0 = on the axis).
    smoothing : float
        Click error (voxels rms) for the smoothing spline; 0 interpolates.

    Returns
    -------
    ModelCrop
        ``description`` holds ``axis`` (the on-axis positions) and ``length``.
    """
    points = _as_points(points, 2, "a filament")
    if dz <= 0:
        raise ValueError(f"filament step dz must be positive, got {dz}")
    if radius < 0:
        raise ValueError(f"filament radius must be >= 0, got {radius}")
    keep = np.r_[True, np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-9]
    points = points[keep]
    if len(points) < 2:
        raise ValueError("a filament needs at least two distinct points")
    k = min(3, len(points) - 1)
    tck, _ = interpolate.splprep(points.T, k=k, s=len(points) * smoothing ** 2)
    dense_u = np.linspace(0, 1, max(2000, 50 * len(points)))
    dense = np.array(interpolate.splev(dense_u, tck)).T
    arc = np.r_[0, np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))]
    length = arc[-1]
    if length / dz > MAX_CROPPING_POINTS:
        raise ValueError(f"a filament of length {length:.0f} at dz {dz:g} would give over "
                         f"{MAX_CROPPING_POINTS} points: increase dz")
    s = np.arange(0, length + 1e-9, dz)
    u = np.interp(s, arc, dense_u)
    axis = np.array(interpolate.splev(u, tck)).T
    tangent = _unit(np.array(interpolate.splev(u, tck, der=1)).T)
    # parallel transport of a reference direction perpendicular to the tangent
    ref = np.empty_like(tangent)
    ref[0] = rotation_from_z_axis(tangent[0])[:, 0]
    for i in range(1, len(tangent)):
        r = ref[i - 1] - np.dot(ref[i - 1], tangent[i]) * tangent[i]
        ref[i] = r / np.linalg.norm(r)
    side = np.cross(tangent, ref)
    phi = np.radians(dphi) * np.arange(len(s))
    radial = np.cos(phi)[:, None] * ref + np.sin(phi)[:, None] * side
    rotations = np.stack([radial, np.cross(tangent, radial), tangent], axis=2)
    positions = axis + radius * radial
    return ModelCrop(positions, rotations, description={"axis": axis, "length": float(length)})


def crop_model(model_type, points, interior=None, spacing=10.0, edge=10.0, max_triangles=100000,
               subdivisions=0, dz=10.0, dphi=0.0, radius=0.0, seed=0):
    """Dispatch to the crop function of a model type (one of `MODEL_TYPES`).

    Parameters not used by the model are ignored (``dz``/``dphi``/``radius``
    only act on filaments, ``edge``/``max_triangles``/``subdivisions`` on
    meshed models: Ellipsoidal vesicle and Surface; a Vesicle is sampled on
    its exact sphere).

    Returns
    -------
    ModelCrop

    Raises
    ------
    ValueError
        Unknown model type, or the model cannot be fitted (reason given).
    """
    if model_type == "Vesicle":
        return crop_vesicle(points, spacing, interior)
    if model_type == "Ellipsoidal vesicle":
        return crop_ellipsoid(points, spacing, edge, max_triangles, subdivisions, interior, seed)
    if model_type == "Surface":
        return crop_surface(points, spacing, edge, max_triangles, subdivisions, interior, seed=seed)
    if model_type == "General":
        return crop_general(points, interior)
    if model_type == "Filament":
        return crop_filament(points, dz, dphi, radius)
    raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
