"""Shapes of the phantom's objects: particle classes, vesicles, filaments.

Particle shapes are unions of analytic primitives (soft ellipsoids, tori,
capsules) defined in Å in the particle's canonical frame, where z is the
particle axis. Each particle is rendered by evaluating its primitives on the
rotated voxel grid of a local box around it, so the pasted copy is exactly the
template rotated by ``R`` and centred at the recorded sub-voxel position (no
interpolation blur). Primitive centres are shifted so that the density
centroid of every template is its box centre.

Vesicles are ellipsoids with a lipid-bilayer profile (two Gaussian leaflets
`LEAFLET_SEPARATION` apart); filaments are helical arrays of spherical
subunits along a smooth curved axis.

Conventions: arrays are [z, y, x]; positions and vectors are (x, y, z) in
voxels with the centre of element [k, j, i] at (i, j, k). A particle with
rotation ``R`` has its canonical z-axis along ``R @ (0, 0, 1)`` in the
tomogram; a template voxel at canonical offset r (voxels) lands at
``position + R @ r``.
"""
import math

import numpy as np
from scipy import ndimage

from ..rotations import euler_zxz_to_matrix

#: Distance between the two dense (head-group) leaflets of a lipid bilayer, Å.
LEAFLET_SEPARATION = 40.0
#: Excess density of gold relative to protein.
GOLD_DENSITY = 5.0


# ---------------------------------------------------------------------------
# Shape library
# ---------------------------------------------------------------------------

def _sphere(center, radius, density=1.0):
    return dict(type="ellipsoid", center=center, axes=(radius,) * 3, euler=(0, 0, 0),
                density=density)


#: Particle classes: id -> name, kind and primitives (Å, canonical frame).
#: Every shape lacks rotational symmetry so that its orientation is defined.
PARTICLE_CLASSES = {
    1: dict(name="trimer", kind="free", primitives=[
        _sphere((0, 0, 0), 40),
        _sphere((55, 12, -8), 32),
        _sphere((-20, 50, 10), 26),
        _sphere((5, -10, 45), 16),
    ]),
    2: dict(name="rod", kind="free", primitives=[
        dict(type="capsule", start=(0, 0, -90), end=(0, 0, 60), radius=20, density=1.0),
        _sphere((0, 0, 80), 30),
        dict(type="capsule", start=(0, 0, -50), end=(40, 0, -50), radius=12, density=1.0),
    ]),
    3: dict(name="ring", kind="free", primitives=[
        dict(type="torus", center=(0, 0, 0), radius=50, tube=16, euler=(0, 0, 0),
             density=1.0),
        _sphere((50, 0, 18), 18),
        dict(type="ellipsoid", center=(-22, 18, -16), axes=(22, 18, 12), euler=(30, 0, 0),
             density=1.0),
    ]),
    4: dict(name="ribosome", kind="free", primitives=[
        dict(type="ellipsoid", center=(0, 0, -25), axes=(75, 65, 55), euler=(0, 0, 0),
             density=1.2),
        dict(type="ellipsoid", center=(10, 0, 55), axes=(65, 40, 32), euler=(20, 0, 0),
             density=1.1),
        dict(type="capsule", start=(-60, 0, -10), end=(-92, 0, 30), radius=10, density=1.0),
    ]),
    5: dict(name="membrane_protein", kind="membrane", primitives=[
        dict(type="capsule", start=(0, 0, 0), end=(0, 0, 20), radius=12, density=1.0),
        dict(type="ellipsoid", center=(0, 0, 42), axes=(32, 26, 28), euler=(0, 0, 0),
             density=1.0),
        _sphere((24, 0, 60), 16),
    ]),
}

FREE_CLASSES = tuple(k for k, v in PARTICLE_CLASSES.items() if v["kind"] == "free")
MEMBRANE_CLASS = 5


class _Shape:
    """A union of soft primitives, evaluated on points given in Å.

    The density of a point is the maximum over primitives of
    ``density * 0.5 * (1 - tanh(d / edge))`` with ``d`` the (approximate)
    signed distance to the primitive's surface: a smooth step about one voxel
    wide, which keeps the rendered volume free of aliasing.
    """

    def __init__(self, primitives, edge):
        self.edge = float(edge)
        self.prims = []
        for p in primitives:
            q = dict(p)
            q["center"] = np.asarray(p.get("center", (0, 0, 0)), dtype=float)
            if "euler" in p:
                q["rot"] = euler_zxz_to_matrix(*p["euler"])
            if p["type"] == "capsule":
                q["start"] = np.asarray(p["start"], dtype=float)
                q["end"] = np.asarray(p["end"], dtype=float)
            if p["type"] == "ellipsoid":
                q["axes"] = np.asarray(p["axes"], dtype=float)
            self.prims.append(q)

    def shifted(self, offset):
        """The same shape with every primitive moved by ``offset`` (Å)."""
        out = _Shape([], self.edge)
        for p in self.prims:
            q = dict(p)
            if p["type"] == "capsule":
                q["start"] = p["start"] + offset
                q["end"] = p["end"] + offset
            else:
                q["center"] = p["center"] + offset
            out.prims.append(q)
        return out

    def radius(self):
        """Radius (Å) of a sphere about the origin containing the whole shape."""
        r = 0.0
        for p in self.prims:
            if p["type"] == "ellipsoid":
                r = max(r, np.linalg.norm(p["center"]) + p["axes"].max())
            elif p["type"] == "torus":
                r = max(r, np.linalg.norm(p["center"]) + p["radius"] + p["tube"])
            else:
                r = max(r, np.linalg.norm(p["start"]) + p["radius"],
                        np.linalg.norm(p["end"]) + p["radius"])
        return r + 2 * self.edge

    def density(self, pts):
        """Density at (N, 3) points (x, y, z) in Å of the canonical frame (float32)."""
        pts = np.asarray(pts, dtype=np.float32)
        f32 = np.float32
        out = np.zeros(len(pts), dtype=np.float32)
        for p in self.prims:
            if p["type"] == "ellipsoid":
                q = (pts - p["center"].astype(f32)) @ p["rot"].astype(f32)
                a = p["axes"].astype(f32)
                f = np.sqrt(((q / a) ** 2).sum(1))
                g = np.sqrt(((q / a ** 2) ** 2).sum(1))
                # first-order distance to the level set f = 1: (f - 1) / |grad f|
                d = np.where(g > 0, (f - 1) * f / np.maximum(g, f32(1e-12)), -a.min())
            elif p["type"] == "torus":
                q = (pts - p["center"].astype(f32)) @ p["rot"].astype(f32)
                rho = np.hypot(q[:, 0], q[:, 1])
                d = np.hypot(rho - f32(p["radius"]), q[:, 2]) - f32(p["tube"])
            else:
                start = p["start"].astype(f32)
                axis = (p["end"] - p["start"]).astype(f32)
                t = np.clip(((pts - start) @ axis) / (axis @ axis), 0, 1)
                d = np.linalg.norm(pts - start - t[:, None] * axis, axis=1) - f32(p["radius"])
            # density / (1 + exp(2 d / edge)) == density * (1 - tanh(d / edge)) / 2
            e = np.exp(np.clip(d * f32(2 / self.edge), -30, 30))
            np.maximum(out, f32(p["density"]) / (1 + e), out=out)
        return out


def _box_grid(center, radius, shape):
    """Index slices and voxel coordinates (x, y, z) of the box around a centre."""
    center = np.asarray(center, dtype=float)
    lo = np.maximum(np.floor(center - radius).astype(int), 0)
    hi = np.minimum(np.ceil(center + radius).astype(int) + 1, np.array(shape[::-1]))
    if np.any(hi <= lo):
        return None, None, None
    xs, ys, zs = (np.arange(lo[i], hi[i], dtype=float) for i in range(3))
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel(), Z.ravel()], axis=1)
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    return box, pts, Z.shape


def _render(shape_obj, position, rotation, voxel_size, radius_vox, volume_shape):
    """A rotated shape's density on the box around ``position``: (slices, array)."""
    box, pts, bshape = _box_grid(position, radius_vox + 1, volume_shape)
    if box is None:
        return None, None
    local = ((pts - position) @ rotation) * voxel_size   # R^T (x - p) for each row
    return box, shape_obj.density(local).reshape(bshape).astype(np.float32)


def _paste_shape(volume, shape_obj, position, rotation, voxel_size, radius_vox):
    """Render a rotated shape into ``volume`` (max-combine) around ``position``."""
    box, dens = _render(shape_obj, position, rotation, voxel_size, radius_vox, volume.shape)
    if box is None:
        return
    sub = volume[box]
    np.maximum(sub, dens, out=sub)


def _paste_spheres(volume, centers, radius_vox, density, edge_vox):
    """Soft spheres of one radius (voxels) at many centres (max-combine)."""
    for c in np.atleast_2d(centers):
        box, pts, bshape = _box_grid(c, radius_vox + 2 * edge_vox + 1, volume.shape)
        if box is None:
            continue
        d = np.linalg.norm(pts - c, axis=1) - radius_vox
        dens = (density * 0.5 * (1 - np.tanh(d / edge_vox))).reshape(bshape)
        sub = volume[box]
        np.maximum(sub, dens.astype(volume.dtype), out=sub)


def _render_template(shape_obj, voxel_size):
    """The shape at identity orientation in a cubic box centred on the origin."""
    half = int(math.ceil(shape_obj.radius() / voxel_size)) + 1
    n = 2 * half + 1
    template = np.zeros((n, n, n), dtype=np.float32)
    _paste_shape(template, shape_obj, np.full(3, float(half)), np.eye(3), voxel_size,
                 shape_obj.radius() / voxel_size)
    return template, half


def _centered_shape(primitives, voxel_size):
    """A class shape moved so its density centroid is the origin, its template and radius.

    ``primitives`` is a list of primitives or a shape object with the same
    interface (e.g. `tomopick.core.simulate.maps.MapShape`).
    """
    shape_obj = (primitives if hasattr(primitives, "density")
                 else _Shape(primitives, edge=0.5 * voxel_size))
    # The centroid is measured on the voxel grid itself, and the shift
    # repeated until it is below 1e-3 voxel, so that the rendered template
    # (and every pasted copy) has its centroid where the position says.
    for _ in range(5):
        template, half = _render_template(shape_obj, voxel_size)
        com = np.array(ndimage.center_of_mass(template))[::-1] - half   # (x, y, z) voxels
        if np.abs(com).max() < 1e-3:
            break
        shape_obj = shape_obj.shifted(-com * voxel_size)
    else:
        template, _ = _render_template(shape_obj, voxel_size)
    return shape_obj, template, shape_obj.radius() / voxel_size


def particle_template(class_id, voxel_size):
    """The canonical-orientation density of a particle class.

    Parameters
    ----------
    class_id : int
        A key of `PARTICLE_CLASSES`.
    voxel_size : float
        Å per voxel.

    Returns
    -------
    template : (n, n, n) ndarray of float32
        Positive density, indexed [z, y, x], its centroid at the centre voxel
        ``n // 2``; the particle's axis is +z.

    Examples
    --------
    >>> t = particle_template(2, voxel_size=10.0)        # the rod, 10 Å voxels
    >>> t.shape[0] % 2 == 1 and t.shape[0] == t.shape[1] == t.shape[2]
    True
    >>> c = t.shape[0] // 2
    >>> com = np.array(ndimage.center_of_mass(t))
    >>> bool(np.abs(com - c).max() < 0.01)               # centroid at the centre voxel
    True
    >>> z, y, x = np.nonzero(t > 0.5)
    >>> bool(np.ptp(z) > np.ptp(x))                      # the rod lies along z
    True
    """
    if class_id not in PARTICLE_CLASSES:
        raise ValueError(f"unknown particle class {class_id}; known: {sorted(PARTICLE_CLASSES)}")
    return _centered_shape(PARTICLE_CLASSES[class_id]["primitives"], voxel_size)[1]

# ---------------------------------------------------------------------------
# Vesicles
# ---------------------------------------------------------------------------

def _vesicle_arrays(vesicle):
    c = np.asarray(vesicle["center"], dtype=float)
    a = np.asarray(vesicle["semi_axes"], dtype=float)
    R = np.asarray(vesicle["rotation"], dtype=float)
    return c, a, R


def vesicle_normals(vesicle, points):
    """Unit outward normals of a vesicle's ellipsoid level sets at given points.

    Parameters
    ----------
    vesicle : dict
        With 'center' (x, y, z voxels), 'semi_axes' (a, b, c voxels, bilayer
        mid-plane) and 'rotation' (3x3; column i is the direction of semi-axis i).
    points : (N, 3) array
        (x, y, z) voxels; on the surface the result is the surface normal.

    Returns
    -------
    (N, 3) ndarray

    Examples
    --------
    >>> ves = dict(center=(10, 10, 10), semi_axes=(4, 4, 2), rotation=np.eye(3))
    >>> vesicle_normals(ves, [[14, 10, 10], [10, 10, 12]]).round(6)
    array([[1., 0., 0.],
           [0., 0., 1.]])
    """
    c, a, R = _vesicle_arrays(vesicle)
    q = (np.atleast_2d(points) - c) @ R
    n = (q / a ** 2) @ R.T
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def vesicle_surface_points(vesicle, n, rng, offset=0.0):
    """Points spread uniformly over a vesicle's (ellipsoidal) mid-plane surface.

    Parameters
    ----------
    vesicle : dict
        A truth vesicle (see `vesicle_normals`).
    n : int
        Number of points.
    rng : numpy.random.Generator
    offset : float, optional
        Distance (voxels) to move each point along its outward normal.

    Returns
    -------
    points : (n, 3) ndarray
        (x, y, z) voxels; with ``offset`` 0 exactly on the ellipsoid.
    normals : (n, 3) ndarray
        Unit outward normals at the surface points.

    Examples
    --------
    >>> ves = dict(center=(20, 20, 20), semi_axes=(8, 6, 4), rotation=np.eye(3))
    >>> pts, nrm = vesicle_surface_points(ves, 100, np.random.default_rng(0))
    >>> q = (pts - 20) / np.array([8, 6, 4])
    >>> bool(np.allclose((q ** 2).sum(1), 1))            # on the ellipsoid
    True
    >>> bool(np.allclose(nrm, vesicle_normals(ves, pts)))
    True
    """
    c, a, R = _vesicle_arrays(vesicle)
    out = []
    need = int(n)
    # The area element of the map u -> a * u (u on the unit sphere) is
    # proportional to |u / a|; rejection with that weight gives uniform density.
    wmax = (1 / a).max()
    while need > 0:
        u = rng.standard_normal((2 * need + 16, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        keep = rng.random(len(u)) * wmax < np.linalg.norm(u / a, axis=1)
        out.append(u[keep][:need])
        need -= len(out[-1])
    u = np.concatenate(out)[:n]
    points = (u * a) @ R.T + c
    normals = (u / a) @ R.T
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return points + offset * normals, normals


def _ellipsoid_signed_distance(q, a):
    """First-order signed distance (voxels) to the ellipsoid |q / a| = 1."""
    f = np.sqrt(((q / a) ** 2).sum(1))
    g = np.sqrt(((q / a ** 2) ** 2).sum(1))
    return np.where(g > 0, (f - 1) * f / np.maximum(g, 1e-12), -a.min())


def _paste_vesicle(volume, vesicle, leaflet_sigma):
    c, a, R = _vesicle_arrays(vesicle)
    half_t = vesicle["thickness"] / 2
    box, pts, bshape = _box_grid(c, a.max() + half_t + 4 * leaflet_sigma + 1, volume.shape)
    if box is None:
        return
    d = _ellipsoid_signed_distance((pts - c) @ R, a)
    dens = (np.exp(-0.5 * ((d - half_t) / leaflet_sigma) ** 2)
            + np.exp(-0.5 * ((d + half_t) / leaflet_sigma) ** 2))
    sub = volume[box]
    np.maximum(sub, dens.reshape(bshape).astype(volume.dtype), out=sub)


# ---------------------------------------------------------------------------
# Filaments
# ---------------------------------------------------------------------------

def _filament_axis(start, direction, length, persistence, rng, step=1.0):
    """A smooth random curve (x, y, z) sampled every ``step`` voxels."""
    n = max(2, int(length / step))
    t = np.asarray(direction, dtype=float)
    t /= np.linalg.norm(t)
    pts = [np.asarray(start, dtype=float)]
    # a slowly turning tangent: random curvature drawn once per segment of
    # ~persistence/4 voxels and interpolated keeps the curve smooth
    knots = max(2, int(length / max(persistence / 4, 1)) + 2)
    turn = rng.normal(0, step / persistence, size=(knots, 3))
    turn[:, 2] *= 0.3                              # stay mostly in the lamella plane
    s = np.linspace(0, knots - 1, n)
    turns = np.stack([np.interp(s, np.arange(knots), turn[:, i]) for i in range(3)], axis=1)
    for i in range(1, n):
        t = t + turns[i] - (turns[i] @ t) * t
        t /= np.linalg.norm(t)
        pts.append(pts[-1] + step * t)
    return np.array(pts)


def _frames(axis_pts):
    """Tangents and parallel-transported normals along a polyline."""
    tangents = np.gradient(axis_pts, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    normals = np.empty_like(tangents)
    ref = np.array([0, 0, 1.0]) if abs(tangents[0, 2]) < 0.9 else np.array([1.0, 0, 0])
    n = np.cross(tangents[0], ref)
    n /= np.linalg.norm(n)
    for i, t in enumerate(tangents):
        n = n - (n @ t) * t
        n /= np.linalg.norm(n)
        normals[i] = n
    return tangents, normals, np.cross(tangents, normals)


def _filament_subunits(axis_pts, kind, voxel_size):
    """Subunit centres (voxels) of a helical filament along an axis polyline."""
    seglen = np.linalg.norm(np.diff(axis_pts, axis=0), axis=1)
    arc = np.concatenate([[0], np.cumsum(seglen)]) * voxel_size       # Å
    tangents, normals, binormals = _frames(axis_pts)
    if kind == "actin":
        rise, twist, offset, n_pf = 27.5, np.radians(-166.7), 20.0, 1
        s = np.arange(0, arc[-1], rise)
        phi = twist * np.arange(len(s))
        pf_shift = np.zeros(1)
    else:   # microtubule: 13 protofilaments, 3-start helix
        rise, offset, n_pf = 40.0, 115.0, 13
        base = np.arange(0, arc[-1] - 40.0, rise)
        pf_shift = np.arange(n_pf) * 3 * 40.0 / 13
        s = (base[None, :] + pf_shift[:, None]).ravel()
        phi = np.repeat(2 * np.pi * np.arange(n_pf) / n_pf, len(base))
    idx = np.clip(np.searchsorted(arc, s), 1, len(arc) - 1)
    w = ((s - arc[idx - 1]) / np.maximum(arc[idx] - arc[idx - 1], 1e-9))[:, None]
    centre = (1 - w) * axis_pts[idx - 1] + w * axis_pts[idx]
    nrm = normals[idx]
    bin_ = binormals[idx]
    radial = np.cos(phi)[:, None] * nrm + np.sin(phi)[:, None] * bin_
    return centre + radial * offset / voxel_size


FILAMENT_TYPES = {"actin": dict(outer_radius=45.0, subunit_radius=25.0),
                  "microtubule": dict(outer_radius=140.0, subunit_radius=25.0)}


def _shape_min_z(shape_obj):
    """Lowest z (Å) reached by a shape in its canonical frame (surface, not soft edge)."""
    zmin = np.inf
    for p in shape_obj.prims:
        if p["type"] == "ellipsoid":
            # extent along z of a rotated ellipsoid: sqrt(sum_i (R[2, i] a_i)^2)
            zmin = min(zmin, p["center"][2] - np.sqrt(((p["rot"][2] * p["axes"]) ** 2).sum()))
        elif p["type"] == "torus":
            zmin = min(zmin, p["center"][2] - p["tube"]
                       - p["radius"] * np.hypot(p["rot"][2, 0], p["rot"][2, 1]))
        else:
            zmin = min(zmin, p["start"][2] - p["radius"], p["end"][2] - p["radius"])
    return zmin

