"""Triangle meshes: areas, normals, subdivision, smoothing, and the meshes tomopick builds.

A mesh is ``(vertices (V, 3) float, faces (F, 3) int)`` with vertices
(x, y, z) in voxels; faces are wound consistently so that cross-product
normals agree across the mesh. Built here: the icosphere, the mesh of an
ellipsoid, and the open surface through points picked on several z-slices.
"""
import numpy as np
from scipy import interpolate
from scipy.sparse import coo_matrix, diags

from ._arrays import as_points, unit


def mesh_area(vertices, faces):
    """Total area of a triangle mesh (voxels^2).

    Examples
    --------
    Two triangles making a unit square:

    >>> mesh_area([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    1.0
    """
    tri = np.asarray(vertices, dtype=float)[np.asarray(faces, dtype=int)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return float(0.5 * np.linalg.norm(cross, axis=1).sum())


def vertex_normals(vertices, faces):
    """Area-weighted unit vertex normals following the faces' winding.

    Examples
    --------
    >>> vertex_normals([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    array([[0., 0., 1.],
           [0., 0., 1.],
           [0., 0., 1.],
           [0., 0., 1.]])
    """
    vertices = np.asarray(vertices, dtype=float)
    faces = np.asarray(faces, dtype=int)
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return unit(normals)


def interpolate_normals(vertices, faces, face_index, barycentric):
    """Smooth unit normals at points given by face index and barycentric weights.

    Examples
    --------
    >>> vertices, faces = icosphere(3)
    >>> n = interpolate_normals(vertices, faces, [0, 5], [[1, 0, 0], [1/3, 1/3, 1/3]])
    >>> bool(np.allclose(n[0], vertices[faces[0, 0]], atol=0.01))
    True
    """
    vn = vertex_normals(vertices, faces)
    return unit(np.einsum("nk,nkd->nd", barycentric, vn[np.asarray(faces)[face_index]]))


def _edges(faces):
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(e, axis=1)


def mesh_edge_lengths(vertices, faces):
    """Lengths of the unique edges of a mesh (voxels).

    Examples
    --------
    >>> np.round(mesh_edge_lengths(*icosphere(0)), 3)[:3]
    array([1.051, 1.051, 1.051])
    """
    e = np.unique(_edges(np.asarray(faces, dtype=int)), axis=0)
    v = np.asarray(vertices, dtype=float)
    return np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)


def subdivide_mesh(vertices, faces):
    """Split every triangle into four at its edge midpoints (winding kept).

    Returns
    -------
    vertices : (V + E, 3) ndarray
    faces : (4 F, 3) ndarray of int

    Examples
    --------
    >>> vertices, faces = subdivide_mesh([[0, 0, 0], [2, 0, 0], [0, 2, 0]], [[0, 1, 2]])
    >>> vertices
    array([[0., 0., 0.],
           [2., 0., 0.],
           [0., 2., 0.],
           [1., 0., 0.],
           [0., 1., 0.],
           [1., 1., 0.]])
    >>> len(faces)
    4
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
    """Indices of vertices on the mesh border (edges used by one face only).

    Examples
    --------
    Every vertex of a square made of two triangles is on its border:

    >>> boundary_vertices([[0, 1, 2], [0, 2, 3]])
    array([0, 1, 2, 3])
    """
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

    Examples
    --------
    A bump on a square of fixed border vertices is flattened:

    >>> vertices = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0.5, 0.5, 0.3]]
    >>> faces = [[0, 1, 4], [1, 3, 4], [3, 2, 4], [2, 0, 4]]
    >>> float(smooth_mesh(vertices, faces)[4, 2]) < 0.03
    True
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

    Examples
    --------
    >>> vertices, faces = refine_mesh(*icosphere(1), iterations=2)
    >>> len(faces)
    1280
    >>> len(refine_mesh(*icosphere(1), iterations=2, max_triangles=500)[1])
    320
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

    Examples
    --------
    >>> vertices, faces = icosphere(1)
    >>> vertices.shape, faces.shape
    ((42, 3), (80, 3))
    """
    t = (1.0 + np.sqrt(5.0)) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0],
                  [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
                  [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
                  [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
                  [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    v = unit(v)
    for _ in range(int(subdivisions)):
        v, f = subdivide_mesh(v, f)
        v = unit(v)
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

    Examples
    --------
    >>> vertices, faces = ellipsoid_mesh([0, 0, 0], [20, 10, 5], np.eye(3), edge=4)
    >>> len(faces), float(np.abs(vertices).max(axis=0)[0])
    (1280, 20.0)
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

    Examples
    --------
    Clicks on three slices of the plane x = 10:

    >>> y, z = np.meshgrid(np.arange(0, 21, 5.0), [0.0, 10.0, 20.0])
    >>> clicks = np.column_stack([np.full(y.size, 10.0), y.ravel(), z.ravel()])
    >>> vertices, faces = surface_from_levels(clicks, edge=5, smoothing=0)
    >>> vertices.shape, faces.shape, bool(np.allclose(vertices[:, 0], 10))
    ((25, 3), (32, 3), True)
    """
    points = as_points(points, 4, "a surface by levels")
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
