"""The five models of directional picking: fit, crop evenly, orient.

Each ``crop_*`` function fits its geometry to the user's points and returns
the cropping points with their orientations (`ModelCrop`); `crop_model`
dispatches by model type name.
"""
from dataclasses import dataclass, field

import numpy as np
from scipy import interpolate
from scipy.spatial import cKDTree

from tomopick.core.rotations import rotation_from_z_axis

from ._arrays import as_points, unit
from .mesh import ellipsoid_mesh, interpolate_normals, mesh_area, refine_mesh, surface_from_levels
from .quadrics import (ellipsoid_normals, fit_ellipsoid, fit_sphere, inside_ellipsoid,
                       outward_normals, project_to_ellipsoid)
from .sampling import MAX_CROPPING_POINTS, crop_mesh, crop_sphere

# Names of the model types `crop_model` knows (a set of names: the order of a
# form's choices is the protocol's, see protocol_vectorial_picking).
MODEL_TYPES = ("General", "Vesicle", "Ellipsoidal vesicle", "Surface", "Filament")
# A closed model whose size exceeds the extent of its user points this many
# times is an extrapolation from a nearly flat patch, not a vesicle.
_MAX_EXTRAPOLATION = 10.0


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

    Examples
    --------
    >>> from tomopick.core.geometry import fibonacci_sphere
    >>> crop = crop_vesicle(20 + 10 * fibonacci_sphere(30), spacing=3)
    >>> len(crop), bool(np.allclose(crop.normals, (crop.positions - 20) / 10))
    (128, True)
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

    Examples
    --------
    >>> from tomopick.core.geometry import fibonacci_sphere
    >>> clicks = [30, 30, 30] + fibonacci_sphere(40) * [12, 8, 6]
    >>> crop = crop_ellipsoid(clicks, spacing=3, edge=3)
    >>> np.round(crop.description["semi_axes"], 6)
    array([12.,  8.,  6.])
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

    Examples
    --------
    Clicks on three slices of the plane x = 10; the marker at x = 0 makes the
    normals point to +x:

    >>> y, z = np.meshgrid(np.arange(0, 21, 5.0), [0.0, 10.0, 20.0])
    >>> clicks = np.column_stack([np.full(y.size, 10.0), y.ravel(), z.ravel()])
    >>> crop = crop_surface(clicks, spacing=4, edge=4, smoothing=0, interior=[0, 10, 10])
    >>> bool(np.allclose(crop.positions[:, 0], 10)), bool(np.allclose(crop.normals, [1, 0, 0]))
    (True, True)
    """
    points = as_points(points, 4, "a surface")
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

    Examples
    --------
    >>> crop = crop_general([[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    >>> crop.oriented
    array([False, False, False])
    """
    points = as_points(points, 1, "a general model")
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

    Examples
    --------
    >>> crop = crop_filament([[0, 0, 0], [0, 0, 20]], dz=5)
    >>> crop.positions[:, 2]
    array([ 0.,  5., 10., 15., 20.])
    >>> crop.normals[0] + 0.0
    array([0., 0., 1.])
    """
    points = as_points(points, 2, "a filament")
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
    tangent = unit(np.array(interpolate.splev(u, tck, der=1)).T)
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

    Examples
    --------
    >>> crop = crop_model("Filament", [[0, 0, 0], [0, 0, 20]], dz=10)
    >>> len(crop)
    3
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
