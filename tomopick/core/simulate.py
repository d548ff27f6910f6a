"""Synthetic cryo-ET tomograms ("phantoms") with exact ground truth.

`simulate_tomogram` builds a lamella-like volume for tests, demos and
benchmarks:

* an ice slab whose top and bottom surfaces (the lamella boundaries) bound the
  content in z; its thickness and grey level vary linearly across x/y when
  ``thickness_gradient`` is set;
* low-pass correlated noise inside the ice (structured background);
* free macromolecules of several asymmetric shape classes (multi-lobe
  globule, elongated rod with a knob, ring with a bump, two-subunit
  "ribosome") at random sub-voxel positions and uniformly random
  orientations, never overlapping (bounding spheres may touch);
* spherical and ellipsoidal vesicles with a lipid-bilayer profile (two
  Gaussian leaflets 40 Å apart) carrying membrane proteins whose body sits
  outside the membrane with its z-axis along the outward normal;
* helical filaments (actin-like two-start helices of subunits, or
  microtubule-like 13-protofilament tubes) along smooth curved axes;
* gold beads (small spheres five times as dense as protein);
* a missing wedge (tilt axis y, beam z), a phase-flipped CTF band-pass and
  Gaussian noise at a requested SNR.

Shapes are unions of analytic primitives (soft ellipsoids, tori, capsules)
defined in Å in the particle's canonical frame, where z is the particle axis.
Each particle is rendered by evaluating its primitives on the rotated voxel
grid of a local box around it, so the pasted copy is exactly the template
rotated by ``R`` and centred at the recorded sub-voxel position (no
interpolation blur). Primitive centres are shifted so that the density
centroid of every template is its box centre.

Conventions: arrays are [z, y, x]; positions and vectors are (x, y, z) in
voxels with the centre of element [k, j, i] at (i, j, k). A particle with
rotation ``R`` has its canonical z-axis along ``R @ (0, 0, 1)`` in the
tomogram; a template voxel at canonical offset r (voxels) lands at
``position + R @ r``.
"""
import csv
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial import cKDTree

from .fourier import wedge_mask  # noqa: F401  (moved to core.fourier; still importable here)
from .picks import Picks
from .formats.mrc import write_mrc
from .rotations import (dynamo_euler_to_matrix, euler_zxz_to_matrix, homogeneous,
                         matrix_to_dynamo_euler, rotation_from_z_axis)

#: Distance between the two dense (head-group) leaflets of a lipid bilayer, Å.
LEAFLET_SEPARATION = 40.0
#: Excess density of gold relative to protein.
GOLD_DENSITY = 5.0

_N_THREADS = max(1, os.cpu_count() or 1)


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
    interface (e.g. `tomopick.core.simulate_maps.MapShape`).
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
    """
    if class_id not in PARTICLE_CLASSES:
        raise ValueError(f"unknown particle class {class_id}; known: {sorted(PARTICLE_CLASSES)}")
    return _centered_shape(PARTICLE_CLASSES[class_id]["primitives"], voxel_size)[1]


# ---------------------------------------------------------------------------
# Geometry helpers (also for other modules' tests)
# ---------------------------------------------------------------------------

def random_rotations(n, rng):
    """``n`` rotations drawn uniformly from SO(3) (via random unit quaternions)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.empty((n, 3, 3))
    R[:, 0, 0] = 1 - 2 * (y * y + z * z)
    R[:, 0, 1] = 2 * (x * y - z * w)
    R[:, 0, 2] = 2 * (x * z + y * w)
    R[:, 1, 0] = 2 * (x * y + z * w)
    R[:, 1, 1] = 1 - 2 * (x * x + z * z)
    R[:, 1, 2] = 2 * (y * z - x * w)
    R[:, 2, 0] = 2 * (x * z - y * w)
    R[:, 2, 1] = 2 * (y * z + x * w)
    R[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return R


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
# Occupancy (non-overlap by bounding spheres)
# ---------------------------------------------------------------------------

class _Occupancy:
    """Bounding spheres already placed; answers whether a new sphere is free.

    Small spheres live in a cKDTree rebuilt every few dozen insertions (the
    recent ones are checked by brute force); big ones (vesicles) are always
    checked by brute force so that they do not inflate the query radius.
    """

    BIG = 12.0

    def __init__(self):
        self.tree = None
        self.tree_pts = np.zeros((0, 3))
        self.tree_r = np.zeros(0)
        self.recent = []
        self.big = []

    def fits(self, center, radius):
        center = np.asarray(center, dtype=float)
        for c, r in self.big + self.recent:
            if np.sum((c - center) ** 2) < (r + radius) ** 2:
                return False
        if self.tree is not None:
            idx = self.tree.query_ball_point(center, radius + self.tree_r.max())
            if idx:
                d = np.linalg.norm(self.tree_pts[idx] - center, axis=1)
                if np.any(d < self.tree_r[idx] + radius):
                    return False
        return True

    def add(self, center, radius):
        center = np.asarray(center, dtype=float)
        if radius > self.BIG:
            self.big.append((center, radius))
            return
        self.recent.append((center, radius))
        if len(self.recent) >= 32:
            self.tree_pts = np.vstack([self.tree_pts] + [c[None] for c, _ in self.recent])
            self.tree_r = np.concatenate([self.tree_r, [r for _, r in self.recent]])
            self.tree = cKDTree(self.tree_pts)
            self.recent = []


# ---------------------------------------------------------------------------
# Ice slab
# ---------------------------------------------------------------------------

def _ice_geometry(shape, thickness, gradient, ice_density, rng):
    """Lamella surfaces z_bot, z_top and grey level, each (ny, nx)."""
    nz, ny, nx = shape
    y, x = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    u = (x - (nx - 1) / 2) / nx
    v = (y - (ny - 1) / 2) / ny
    t0 = thickness * nz
    if gradient:
        angle = rng.uniform(0, 2 * np.pi)
        along = np.cos(angle) * u + np.sin(angle) * v          # in [-0.5, 0.5]
        tilt_angle = rng.uniform(0, 2 * np.pi)
        across = np.cos(tilt_angle) * u + np.sin(tilt_angle) * v
        t = t0 * (1 + 0.5 * along)                              # +-25 % thickness
        mid = (nz - 1) / 2 + 0.08 * nz * across                 # slightly tilted lamella
        level = ice_density * (1 - 0.4 * along)                 # thicker ice, darker level
    else:
        t = np.full_like(u, t0)
        mid = np.full_like(u, (nz - 1) / 2)
        level = np.full_like(u, ice_density)
    z_bot = np.clip(mid - t / 2, 1.0, nz - 2.0)
    z_top = np.clip(mid + t / 2, 1.0, nz - 2.0)
    return z_bot, z_top, level


def _linear_upsample_weights(n, step):
    """Indices and weights interpolating a coarse axis (node spacing ``step``) to ``n`` samples."""
    u = np.arange(n) / step + 1          # +1: the coarse grid has a node of margin
    i0 = np.floor(u).astype(int)
    return i0, (u - i0).astype(np.float32)


def _smooth_noise(shape, correlation, rng):
    """Unit-variance Gaussian noise low-passed to a correlation length (voxels).

    White noise on a grid ``correlation`` times coarser is Gaussian-smoothed
    and linearly interpolated back, one axis at a time (separable, so the
    cost is a few passes over the output rather than a 3D interpolation).
    """
    coarse_shape = tuple(int(math.ceil(n / correlation)) + 3 for n in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 1.0)
    coarse = (coarse / coarse.std()).astype(np.float32)
    ix, wx = _linear_upsample_weights(shape[2], correlation)
    coarse = coarse[:, :, ix] * (1 - wx) + coarse[:, :, ix + 1] * wx
    iy, wy = _linear_upsample_weights(shape[1], correlation)
    coarse = coarse[:, iy] * (1 - wy)[:, None] + coarse[:, iy + 1] * wy[:, None]
    iz, wz = _linear_upsample_weights(shape[0], correlation)
    out = np.empty(shape, dtype=np.float32)
    for z in range(shape[0]):
        out[z] = coarse[iz[z]] * (1 - wz[z]) + coarse[iz[z] + 1] * wz[z]
    return out


# ---------------------------------------------------------------------------
# Fourier filters
# ---------------------------------------------------------------------------

def ctf_band_pass(k, defocus=3.0, voltage=300.0, amplitude_contrast=0.07, bfactor=50.0):
    """Phase-flipped CTF magnitude used as the simulator's band-pass.

    ``|sqrt(1 - A^2) sin(chi) + A cos(chi)| * exp(-B k^2 / 4)`` with
    ``chi = pi * lambda * defocus * k^2`` (spherical aberration neglected):
    low frequencies are attenuated to the amplitude-contrast level ``A``,
    then the band oscillates with zeros where ``chi`` hits multiples of pi,
    as in a phase-flipped cryo-ET tomogram.

    Parameters
    ----------
    k : array of float
        Spatial frequency, 1/Å.
    defocus : float
        Underfocus, µm.
    voltage : float
        Acceleration voltage, kV (sets the electron wavelength).
    amplitude_contrast : float
    bfactor : float
        Envelope B-factor, Å^2.
    """
    v = voltage * 1e3
    wavelength = 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))    # Å
    chi = np.pi * wavelength * defocus * 1e4 * k ** 2
    a = amplitude_contrast
    envelope = np.exp(-bfactor * k ** 2 / 4)
    return np.abs(np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * envelope


# ---------------------------------------------------------------------------
# The phantom
# ---------------------------------------------------------------------------

@dataclass
class Phantom:
    """A simulated tomogram and its ground truth (see `simulate_tomogram`).

    Attributes
    ----------
    tomogram : (nz, ny, nx) float32
        Final volume: density with missing wedge, CTF band-pass and noise.
    clean : (nz, ny, nx) float32
        Noise-free, wedge-free, unfiltered density with the tomogram's polarity.
    particles : Picks
        Every particle centre (free and membrane), group_ids = class id,
        matrices = true orientation (``R @ z`` = particle axis; for membrane
        proteins the outward normal of their vesicle).
    particle_info : dict of (N,) arrays
        'class_name', 'diameter' (voxels), 'kind' ('free'/'membrane'),
        'vesicle' (index or -1), 'offset' (membrane proteins: distance of the
        centre from the bilayer mid-plane along the normal, voxels; NaN for
        free ones).
    vesicles : list of dict
        'center' (x, y, z), 'semi_axes' (a, b, c) of the bilayer mid-plane
        and 'thickness' (leaflet separation), all voxels; 'rotation' (3x3,
        column i = direction of semi-axis i).
    filaments : list of (K, 3) ndarray
        Axis polylines (x, y, z), voxels.
    filament_info : list of dict
        'type' ('actin'/'microtubule') and 'radius' (outer, voxels).
    gold : list of dict
        'center' (x, y, z) and 'radius', voxels.
    templates : dict
        class id -> cubic float32 template (positive density, centroid at the
        centre voxel, canonical orientation).
    voxel_size : float
        Å per voxel.
    ice_bounds : tuple of (ny, nx) ndarrays
        z of the lamella's bottom and top surfaces at every (y, x).
    params : dict
        The arguments of the build.
    """
    tomogram: np.ndarray
    clean: np.ndarray
    particles: Picks
    particle_info: dict
    vesicles: list
    filaments: list
    filament_info: list
    gold: list
    templates: dict
    voxel_size: float
    ice_bounds: tuple
    params: dict = field(default_factory=dict)
    classes: dict = None

    def sample_mask(self):
        """Boolean [z, y, x] mask of voxels inside the ice slab."""
        return _slab_mask(self.tomogram.shape, *self.ice_bounds)

    def truth_dict(self, tomo_id=None):
        """JSON-ready ground truth (see `save`)."""
        tomo_id = tomo_id or (str(self.particles.tomo_ids[0]) if len(self.particles)
                              else "phantom")
        n = len(self.particles)
        particles = []
        if n:
            tdrot, tilt, narot = matrix_to_dynamo_euler(self.particles.matrices)
            for i in range(n):
                x, y, z = (float(v) for v in self.particles.positions[i])
                particles.append(dict(
                    tsId=tomo_id, x=x, y=y, z=z,
                    class_id=int(self.particles.group_ids[i]),
                    class_name=str(self.particle_info["class_name"][i]),
                    kind=str(self.particle_info["kind"][i]),
                    vesicle=int(self.particle_info["vesicle"][i]),
                    diameter=float(self.particle_info["diameter"][i]),
                    offset=(None if np.isnan(self.particle_info["offset"][i])
                            else float(self.particle_info["offset"][i])),
                    tdrot=float(tdrot[i]), tilt=float(tilt[i]), narot=float(narot[i]),
                    rotation=self.particles.matrices[i, :3, :3].tolist()))
        return dict(
            tsId=tomo_id,
            voxel_size=float(self.voxel_size),
            shape=list(self.tomogram.shape),
            classes={str(k): dict(name=v["name"], kind=v["kind"])
                     for k, v in (self.classes or PARTICLE_CLASSES).items()},
            particles=particles,
            vesicles=[dict(center=list(map(float, v["center"])),
                           semi_axes=list(map(float, v["semi_axes"])),
                           rotation=np.asarray(v["rotation"]).tolist(),
                           thickness=float(v["thickness"])) for v in self.vesicles],
            filaments=[dict(points=np.asarray(f).tolist(), **info)
                       for f, info in zip(self.filaments, self.filament_info)],
            gold=[dict(center=list(map(float, g["center"])), radius=float(g["radius"]))
                  for g in self.gold],
            params={k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items()},
        )

    def save(self, directory, name, save_clean=False, save_templates=False):
        """Write ``name.mrc``, ``name_truth.json`` and ``name_particles.csv``.

        Parameters
        ----------
        directory : str
            Created when missing.
        name : str
            File stem and the particles' tsId. The in-memory ``particles``
            take this tsId too, so that they keep matching what the files
            say (a tomogram imported from ``name.mrc`` has tsId ``name``).
        save_clean : bool
            Also write the clean volume as ``name_clean.mrc``.
        save_templates : bool
            Also write each class template as ``name_template_<class id>.mrc``.

        Returns
        -------
        mrc_path, json_path, csv_path : str
            The CSV has the columns tomoId,x,y,z,groupId,tdrot,tilt,narot
            (voxels, bottom-left origin, Dynamo ZXZ degrees).
        """
        os.makedirs(directory, exist_ok=True)
        mrc_path = os.path.join(directory, f"{name}.mrc")
        write_mrc(mrc_path, self.tomogram, self.voxel_size)
        if save_clean:
            if self.clean is None:
                raise ValueError("this phantom was built with keep_clean=False: no clean volume")
            write_mrc(os.path.join(directory, f"{name}_clean.mrc"), self.clean,
                       self.voxel_size)
        if save_templates:
            for class_id, template in self.templates.items():
                write_mrc(os.path.join(directory, f"{name}_template_{class_id}.mrc"), template,
                           self.voxel_size)
        self.particles.tomo_ids = np.full(len(self.particles), str(name))
        truth = self.truth_dict(name)
        json_path = os.path.join(directory, f"{name}_truth.json")
        with open(json_path, "w") as fh:
            json.dump(truth, fh)
        csv_path = os.path.join(directory, f"{name}_particles.csv")
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["tomoId", "x", "y", "z", "groupId", "tdrot", "tilt", "narot"])
            for p in truth["particles"]:
                writer.writerow([name, f"{p['x']:.4f}", f"{p['y']:.4f}", f"{p['z']:.4f}",
                                 p["class_id"], f"{p['tdrot']:.4f}", f"{p['tilt']:.4f}",
                                 f"{p['narot']:.4f}"])
        return mrc_path, json_path, csv_path


def load_truth(path):
    """Read a ``*_truth.json`` written by `Phantom.save`.

    Parameters
    ----------
    path : str
        The JSON file.

    Returns
    -------
    picks : Picks
        Particles with positions (voxels), class ids, orientation matrices
        and the voxel size.
    info : dict
        'voxel_size', 'shape', 'tsId', 'classes', 'vesicles' and 'gold' (lists
        of dicts with array values), 'filaments' (list of (K, 3) arrays),
        'filament_info', 'particle_info' (dict of arrays) and 'params'.
    """
    try:
        with open(path) as fh:
            truth = json.load(fh)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read phantom truth file {path}: {err}") from err
    parts = truth["particles"]
    n = len(parts)
    positions = np.array([[p["x"], p["y"], p["z"]] for p in parts], dtype=float).reshape(n, 3)
    if n:
        rot = np.array([p["rotation"] for p in parts], dtype=float) if "rotation" in parts[0] \
            else dynamo_euler_to_matrix([p["tdrot"] for p in parts], [p["tilt"] for p in parts],
                                        [p["narot"] for p in parts])
        # shifts are relative to the position (SPEC.md): zero for exact truth
        matrices = homogeneous(rot)
    else:
        matrices = np.zeros((0, 4, 4))
    picks = Picks([p["tsId"] for p in parts] if n else np.zeros(0, str), positions,
                  [p["class_id"] for p in parts], matrices, None, truth["voxel_size"])
    info = dict(
        voxel_size=truth["voxel_size"], shape=tuple(truth["shape"]), tsId=truth["tsId"],
        classes={int(k): v for k, v in truth["classes"].items()},
        vesicles=[dict(center=np.array(v["center"]), semi_axes=np.array(v["semi_axes"]),
                       rotation=np.array(v["rotation"]), thickness=v["thickness"])
                  for v in truth["vesicles"]],
        filaments=[np.array(f["points"]).reshape(-1, 3) for f in truth["filaments"]],
        filament_info=[{k: v for k, v in f.items() if k != "points"} for f in truth["filaments"]],
        gold=[dict(center=np.array(g["center"]), radius=g["radius"]) for g in truth["gold"]],
        particle_info=dict(
            class_name=np.array([p["class_name"] for p in parts], dtype=str),
            kind=np.array([p["kind"] for p in parts], dtype=str),
            vesicle=np.array([p["vesicle"] for p in parts], dtype=int),
            diameter=np.array([p["diameter"] for p in parts], dtype=float),
            offset=np.array([np.nan if p["offset"] is None else p["offset"] for p in parts],
                            dtype=float)),
        params=truth.get("params", {}),
    )
    return picks, info


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


# ---------------------------------------------------------------------------
# simulate_tomogram
# ---------------------------------------------------------------------------

def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be (nz, ny, nx) with every size >= 16, got {shape}")
    return shape


def simulate_tomogram(shape=(64, 96, 96), voxel_size=10.0, n_particles=20, n_vesicles=1,
                      proteins_per_vesicle=10, n_filaments=0, n_gold=0,
                      tilt_range=(-60, 60), snr=None, ctf=True, thickness_gradient=True,
                      contrast="dark", seed=0, tomo_id="phantom", particle_classes=None,
                      ice_thickness=0.7, ice_density=0.4, background_amplitude=0.1,
                      defocus=3.0, bfactor=50.0, max_attempts=1000, keep_clean=True,
                      extra_classes=None, intensity_drift=0.0):
    """Build a synthetic tomogram with ground truth.

    Parameters
    ----------
    shape : (nz, ny, nx)
        Volume size, voxels; each >= 16.
    voxel_size : float
        Å per voxel; particle, membrane and filament sizes are physical (Å).
    n_particles : int
        Free macromolecules, classes drawn uniformly from ``particle_classes``.
    n_vesicles : int
        Vesicles (even indices spherical, odd ones ellipsoidal).
    proteins_per_vesicle : int
        Membrane proteins on each vesicle.
    n_filaments : int
        Curved helical filaments (alternately actin-like and microtubule-like).
    n_gold : int
        Gold beads (10 nm), near the lamella surfaces.
    tilt_range : (float, float) or None
        Tilt angles (degrees) of the simulated tilt series; None = no wedge.
    snr : float or None
        Variance of the filtered noise-free signal inside the ice slab
        divided by the noise variance; None = no noise. Noise is white
        inside the measured Fourier region (the wedge stays empty).
    ctf : bool
        Apply `ctf_band_pass` (phase-flipped CTF magnitude).
    thickness_gradient : bool
        Vary ice thickness (+-25 %), lamella height and ice grey level
        linearly across x/y.
    contrast : {'dark', 'bright'}
        'dark': particles darker than the background (cryo-ET); templates
        stay positive density either way.
    seed : int
        Seed of ``np.random.default_rng``; equal seeds give equal phantoms.
    tomo_id : str
        tsId of the particles.
    particle_classes : sequence of int, optional
        Free classes to draw from (default all of `FREE_CLASSES`).
    ice_thickness : float
        Mean slab thickness as a fraction of nz.
    ice_density : float
        Ice grey level relative to protein excess density 1.
    background_amplitude : float
        Standard deviation of the structured background inside the ice.
    defocus, bfactor : float
        CTF defocus (µm) and envelope B-factor (Å^2).
    max_attempts : int
        Rejection-sampling attempts per object before giving up.
    keep_clean : bool
        Keep the clean volume (False drops it after filtering to save memory).
    extra_classes : dict, optional
        More free particle classes, id -> ``dict(name=, kind="free", shape=)``
        with a shape object such as a density map
        (`tomopick.core.simulate_maps.map_particle_class`); drawn like the
        analytic ones (and by default along with them).
    intensity_drift : float
        Peak-to-peak amplitude of a slow linear grey-level ramp across x and z
        (a direction drawn in the x-z plane), in units of the standard
        deviation of the filtered signal inside the ice; added after the
        wedge and CTF, before the noise.  Real reconstructions keep such
        drifts (thickness-dependent absorption, uneven ice) although the
        CTF high-pass removes them from the simulated density, so
        segmentation must cope with particles whose grey level changes
        across the lamella.  0 = none.

    Returns
    -------
    Phantom

    Raises
    ------
    ValueError
        On bad arguments, or when the objects asked for do not fit in the ice
        slab (the message says which and how many were placed).
    """
    shape = _check_shape(shape)
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if contrast not in ("dark", "bright"):
        raise ValueError(f"contrast must be 'dark' or 'bright', got {contrast!r}")
    if snr is not None and snr <= 0:
        raise ValueError(f"snr must be positive or None, got {snr}")
    if not intensity_drift >= 0:
        raise ValueError(f"intensity_drift must be >= 0, got {intensity_drift}")
    if not 0 < ice_thickness <= 1:
        raise ValueError(f"ice_thickness must be a fraction of nz in (0, 1], got {ice_thickness}")
    for name, value in (("n_particles", n_particles), ("n_vesicles", n_vesicles),
                        ("proteins_per_vesicle", proteins_per_vesicle),
                        ("n_filaments", n_filaments), ("n_gold", n_gold)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value}")
    table = {**PARTICLE_CLASSES, **(extra_classes or {})}
    classes = tuple((FREE_CLASSES + tuple(extra_classes or ())) if particle_classes is None
                    else particle_classes)
    for c in classes:
        if c not in table or table[c]["kind"] != "free":
            raise ValueError(f"particle class {c} is not a free class; use "
                             f"{sorted(k for k, v in table.items() if v['kind'] == 'free')}")
    if tilt_range is not None:
        wedge_mask((2, 2, 2), tilt_range)         # validates the range
    params = dict(shape=shape, voxel_size=voxel_size, n_particles=n_particles,
                  n_vesicles=n_vesicles, proteins_per_vesicle=proteins_per_vesicle,
                  n_filaments=n_filaments, n_gold=n_gold,
                  tilt_range=None if tilt_range is None else tuple(tilt_range), snr=snr,
                  ctf=ctf, thickness_gradient=thickness_gradient, contrast=contrast, seed=seed,
                  ice_thickness=ice_thickness, ice_density=ice_density,
                  background_amplitude=background_amplitude, defocus=defocus, bfactor=bfactor,
                  particle_classes=[int(c) for c in classes], tomo_id=str(tomo_id),
                  extra_classes={int(k): v["name"] for k, v in (extra_classes or {}).items()},
                  intensity_drift=float(intensity_drift))

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z_bot, z_top, level = _ice_geometry(shape, ice_thickness, thickness_gradient, ice_density,
                                        rng)

    def slab_at(x, y):
        j = int(np.clip(round(y), 0, ny - 1))
        i = int(np.clip(round(x), 0, nx - 1))
        return z_bot[j, i], z_top[j, i]

    def random_point_in_slab(margin_xy, margin_z):
        for _ in range(50):
            x = rng.uniform(margin_xy, nx - 1 - margin_xy) if nx - 1 > 2 * margin_xy else None
            y = rng.uniform(margin_xy, ny - 1 - margin_xy) if ny - 1 > 2 * margin_xy else None
            if x is None or y is None:
                return None
            lo, hi = slab_at(x, y)
            if hi - lo > 2 * margin_z:
                return np.array([x, y, rng.uniform(lo + margin_z, hi - margin_z)])
        return None

    objects = np.zeros(shape, dtype=np.float32)
    occupancy = _Occupancy()
    edge_vox = 0.5

    shapes = {}
    templates = {}
    radii = {}
    for c in set(classes) | {MEMBRANE_CLASS}:
        shapes[c], templates[c], radii[c] = _centered_shape(
            table[c].get("shape") or table[c]["primitives"], voxel_size)

    positions, rotations, class_ids, kinds, vesicle_idx, offsets = [], [], [], [], [], []

    # --- vesicles and their membrane proteins --------------------------------
    vesicles = []
    leaflet_sep = LEAFLET_SEPARATION / voxel_size
    leaflet_sigma = max(6.0 / voxel_size, 0.5)
    mp_shape = shapes[MEMBRANE_CLASS]
    mp_radius = radii[MEMBRANE_CLASS]
    # distance of the membrane protein's centroid above its lowest point: the
    # base of the protein rests on the outer leaflet
    mp_zmin = _shape_min_z(mp_shape) / voxel_size
    mp_offset = leaflet_sep / 2 - mp_zmin
    for v in range(int(n_vesicles)):
        placed = False
        for _ in range(max_attempts):
            # the bilayer must lie inside the slab; membrane proteins may poke
            # out of it (a lamella cuts through whatever it contains)
            half_slab = np.median(z_top - z_bot) / 2
            r_max = min(450.0 / voxel_size, half_slab - leaflet_sep / 2 - 2,
                        min(nx, ny) / 4 - leaflet_sep / 2)
            r_min = min(200.0 / voxel_size, 0.7 * r_max)
            if r_max < 2 * leaflet_sep:
                break
            r = rng.uniform(r_min, r_max)
            if v % 2 == 0:
                axes = np.full(3, r)
                R = np.eye(3)
            else:
                axes = r * np.array([1.0, rng.uniform(0.65, 0.9), rng.uniform(0.55, 0.8)])
                # long axes roughly in the lamella plane (rotation about z, a
                # little tilt), so that the vesicle fits the slab
                R = euler_zxz_to_matrix(rng.uniform(0, 360), rng.uniform(-20, 20), 0.0)
            extent = np.sqrt(((R * axes) ** 2).sum(1))   # half-size of the bounding box
            margin_z = extent[2] + leaflet_sep / 2 + 2
            margin_xy = max(extent[0], extent[1]) + leaflet_sep / 2 + 2
            centre = random_point_in_slab(margin_xy, margin_z)
            if centre is None:
                continue
            lo, hi = slab_at(*centre[:2])
            if centre[2] - margin_z < lo or centre[2] + margin_z > hi:
                continue
            bound = axes.max() + leaflet_sep / 2 + 1
            if not occupancy.fits(centre, bound):
                continue
            ves = dict(center=centre, semi_axes=axes, rotation=R, thickness=leaflet_sep)
            # membrane proteins: uniform on the surface, mutually non-overlapping
            cand, normals = vesicle_surface_points(ves, 40 * proteins_per_vesicle + 40, rng,
                                                   offset=mp_offset)
            kept = []
            for p, nrm in zip(cand, normals):
                if len(kept) == proteins_per_vesicle:
                    break
                lo, hi = slab_at(*p[:2])
                if not (lo <= p[2] <= hi and mp_radius <= p[0] <= nx - 1 - mp_radius
                        and mp_radius <= p[1] <= ny - 1 - mp_radius):
                    continue
                if kept and np.min(np.linalg.norm(np.array([k[0] for k in kept]) - p,
                                                  axis=1)) < 2 * mp_radius:
                    continue
                kept.append((p, nrm))
            if len(kept) < proteins_per_vesicle or not all(
                    occupancy.fits(p, mp_radius) for p, _ in kept):
                continue
            occupancy.add(centre, bound)
            for p, _ in kept:
                occupancy.add(p, mp_radius)
            vesicles.append(ves)
            _paste_vesicle(objects, ves, leaflet_sigma)
            for p, nrm in kept:
                R_p = rotation_from_z_axis(nrm, in_plane=rng.uniform(0, 360))
                positions.append(p)
                rotations.append(R_p)
                class_ids.append(MEMBRANE_CLASS)
                kinds.append("membrane")
                vesicle_idx.append(len(vesicles) - 1)
                offsets.append(mp_offset)
                _paste_shape(objects, mp_shape, p, R_p, voxel_size, mp_radius)
            placed = True
            break
        if not placed:
            raise ValueError(f"could place only {len(vesicles)} of n_vesicles={n_vesicles} "
                             f"vesicles in a {shape} volume (slab too thin or too crowded)")

    # --- filaments -------------------------------------------------------------
    filaments, filament_info = [], []
    for f in range(int(n_filaments)):
        kind = "actin" if f % 2 == 0 else "microtubule"
        mt_outer = FILAMENT_TYPES["microtubule"]["outer_radius"] / voxel_size
        if min(nx, ny) < 12 * mt_outer or np.median(z_top - z_bot) < 4 * mt_outer:
            kind = "actin"          # a microtubule would not fit this volume
        spec = FILAMENT_TYPES[kind]
        outer = spec["outer_radius"] / voxel_size
        sub_r = spec["subunit_radius"] / voxel_size
        placed = False
        for _ in range(max_attempts):
            start = random_point_in_slab(outer, outer + 1)
            if start is None:
                break
            angle = rng.uniform(0, 2 * np.pi)
            direction = np.array([np.cos(angle), np.sin(angle), rng.normal(0, 0.05)])
            length = rng.uniform(0.5, 0.9) * max(nx, ny)
            axis = _filament_axis(start, direction, length, persistence=0.8 * max(nx, ny),
                                  rng=rng)
            # keep the part inside the volume and the slab, from the start on
            inside = ((axis[:, 0] >= outer) & (axis[:, 0] <= nx - 1 - outer)
                      & (axis[:, 1] >= outer) & (axis[:, 1] <= ny - 1 - outer))
            j = np.clip(np.round(axis[:, 1]).astype(int), 0, ny - 1)
            i = np.clip(np.round(axis[:, 0]).astype(int), 0, nx - 1)
            inside &= (axis[:, 2] >= z_bot[j, i] + outer) & (axis[:, 2] <= z_top[j, i] - outer)
            stop = np.argmin(inside) if not inside.all() else len(axis)
            axis = axis[:stop]
            if len(axis) < max(10, 4 * outer):
                continue
            samples = axis[::max(1, int(outer // 2))]
            if not all(occupancy.fits(p, outer) for p in samples):
                continue
            for p in samples:
                occupancy.add(p, outer)
            sub = _filament_subunits(axis, kind, voxel_size)
            _paste_spheres(objects, sub, sub_r, 1.0, edge_vox)
            filaments.append(axis)
            filament_info.append(dict(type=kind, radius=float(outer)))
            placed = True
            break
        if not placed:
            raise ValueError(f"could place only {len(filaments)} of n_filaments={n_filaments} "
                             f"filaments in a {shape} volume")

    # --- gold beads near the lamella surfaces ----------------------------------
    gold = []
    gold_r = 50.0 / voxel_size
    for g in range(int(n_gold)):
        placed = False
        for _ in range(max_attempts):
            c = random_point_in_slab(gold_r + 1, gold_r)
            if c is None:
                break
            lo, hi = slab_at(*c[:2])
            c[2] = (hi - gold_r - 0.5) if rng.random() < 0.5 else (lo + gold_r + 0.5)
            if not occupancy.fits(c, gold_r + 0.5):
                continue
            occupancy.add(c, gold_r + 0.5)
            _paste_spheres(objects, c, gold_r, GOLD_DENSITY, edge_vox)
            gold.append(dict(center=c, radius=float(gold_r)))
            placed = True
            break
        if not placed:
            raise ValueError(f"could place only {len(gold)} of n_gold={n_gold} gold beads")

    # --- free particles ----------------------------------------------------------
    free_classes = rng.choice(np.array(classes), size=int(n_particles)) if n_particles else []
    free_rot = random_rotations(int(n_particles), rng)
    for k, c in enumerate(free_classes):
        r = radii[c]
        core = 0.4 * r
        for _ in range(max_attempts):
            # cheap rejection by a core sphere (KD-tree), then the exact test on
            # the rendered density: no voxel may be > 0.5 in two objects, and
            # the particle must lie inside the ice slab (so elongated shapes
            # pack as tightly as their real outline allows)
            p = random_point_in_slab(r, core)
            if p is None or not occupancy.fits(p, core):
                continue
            box, dens = _render(shapes[c], p, free_rot[k], voxel_size, r, shape)
            solid = dens > 0.5
            if np.any(solid & (objects[box] > 0.5)):
                continue
            zz = np.arange(box[0].start, box[0].stop)[:, None, None]
            inside = ((zz >= z_bot[None, box[1], box[2]])
                      & (zz <= z_top[None, box[1], box[2]]))
            if np.any(solid & ~inside):
                continue
            break
        else:
            raise ValueError(
                f"could place only {k} of n_particles={n_particles} particles in a {shape} "
                f"volume (slab too thin or too crowded for class {table[c]['name']})")
        occupancy.add(p, core)
        sub = objects[box]
        np.maximum(sub, dens, out=sub)
        positions.append(p)
        rotations.append(free_rot[k])
        class_ids.append(int(c))
        kinds.append("free")
        vesicle_idx.append(-1)
        offsets.append(np.nan)

    # --- ice, background, polarity ----------------------------------------------
    clean = objects
    del objects
    bg = (_smooth_noise(shape, max(2.0, 40.0 / voxel_size), rng)
          if background_amplitude else None)
    z = np.arange(nz, dtype=np.float32)
    for z0 in range(0, nz, 16):
        zz = z[z0:z0 + 16, None, None]
        occ = (0.25 * (1 + np.tanh(zz - z_bot[None])) * (1 + np.tanh(z_top[None] - zz))
               ).astype(np.float32)
        chunk = clean[z0:z0 + 16]
        chunk += occ * level[None].astype(np.float32)
        if bg is not None:
            chunk += np.float32(background_amplitude) * occ * bg[z0:z0 + 16]
    del bg
    if contrast == "dark":
        np.negative(clean, out=clean)

    # --- missing wedge, CTF, noise ----------------------------------------------
    if tilt_range is None and not ctf:
        tomogram = clean.copy() if keep_clean else clean
        var_s = _add_drift(tomogram, intensity_drift, z_bot, z_top, rng)
        if snr is not None:
            var_s = var_s or _masked_var(tomogram, z_bot, z_top)
            noise = rng.standard_normal(shape, dtype=np.float32)
            noise *= np.float32(np.sqrt(var_s / snr / _masked_var(noise)))
            tomogram += noise
    else:
        spectrum = sfft.rfftn(clean, workers=_N_THREADS)
        if not keep_clean:
            clean = None            # one volume less at the memory peak below
        wedge = (np.ones((nz, 1, nx // 2 + 1), bool) if tilt_range is None
                 else wedge_mask(shape, tilt_range))
        kz = sfft.fftfreq(nz).astype(np.float32)[:, None, None]
        ky = sfft.fftfreq(ny).astype(np.float32)[None, :, None]
        kx = sfft.rfftfreq(nx).astype(np.float32)[None, None, :]
        for z0 in range(0, nz, 16):
            filt = wedge[z0:z0 + 16].astype(np.float32)
            if ctf:
                k = np.sqrt(kz[z0:z0 + 16] ** 2 + ky ** 2 + kx ** 2) / np.float32(voxel_size)
                filt = filt * ctf_band_pass(k, defocus=defocus, bfactor=bfactor).astype(np.float32)
            spectrum[z0:z0 + 16] *= filt
        # overwrite_x: the spectrum is not needed afterwards (its buffer is
        # reused for the noise), which saves pocketfft a volume-sized copy
        tomogram = sfft.irfftn(spectrum, s=shape, workers=_N_THREADS, overwrite_x=True)
        var_s = _add_drift(tomogram, intensity_drift, z_bot, z_top, rng)
        if snr is not None:
            var_s = var_s or _masked_var(tomogram, z_bot, z_top)
            # white noise restricted to the measured Fourier region, drawn
            # straight in Fourier space (one inverse FFT, no forward one)
            spectrum.real = rng.standard_normal(spectrum.shape, dtype=np.float32)
            spectrum.imag = rng.standard_normal(spectrum.shape, dtype=np.float32)
            spectrum *= wedge
            noise = sfft.irfftn(spectrum, s=shape, workers=_N_THREADS, overwrite_x=True)
            noise *= np.float32(np.sqrt(var_s / snr / _masked_var(noise)))
            tomogram += noise
            del noise
        del spectrum
    if not keep_clean:
        clean = None

    n = len(positions)
    positions = np.array(positions, dtype=float).reshape(n, 3)
    rotations = np.array(rotations, dtype=float).reshape(n, 3, 3)
    class_ids = np.array(class_ids, dtype=int)
    particles = Picks(np.repeat(np.array([tomo_id], dtype=str), n), positions, class_ids,
                      homogeneous(rotations, np.zeros((n, 3))), None, float(voxel_size))
    particle_info = dict(
        class_name=np.array([table[c]["name"] for c in class_ids], dtype=str),
        diameter=np.array([2 * radii[c] for c in class_ids], dtype=float),
        kind=np.array(kinds, dtype=str),
        vesicle=np.array(vesicle_idx, dtype=int),
        offset=np.array(offsets, dtype=float))
    return Phantom(tomogram=tomogram, clean=clean, particles=particles,
                   particle_info=particle_info, vesicles=vesicles, filaments=filaments,
                   filament_info=filament_info, gold=gold, templates=templates,
                   voxel_size=float(voxel_size), ice_bounds=(z_bot, z_top), params=params,
                   classes={k: dict(name=v["name"], kind=v["kind"]) for k, v in table.items()})


def _add_drift(tomogram, amplitude, z_bot, z_top, rng):
    """Add a linear grey-level ramp across x and z in place (`simulate_tomogram`).

    Returns the signal variance inside the ice measured BEFORE the ramp (the
    SNR's reference, so the drift does not change the noise level), or None
    when there is no drift (no rng draw either: seeds keep their phantoms).
    """
    if not amplitude:
        return None
    var_s = _masked_var(tomogram, z_bot, z_top)
    angle = rng.uniform(0, 2 * np.pi)
    nz, _, nx = tomogram.shape
    ramp_x = (np.cos(angle) * (np.arange(nx) / max(nx - 1, 1) - 0.5)).astype(np.float32)
    ramp_z = (np.sin(angle) * (np.arange(nz) / max(nz - 1, 1) - 0.5)).astype(np.float32)
    # peak-to-peak |cos| + |sin| of the unit ramp, normalised to the amplitude
    scale = np.float32(amplitude * np.sqrt(var_s) / (abs(np.cos(angle)) + abs(np.sin(angle))))
    for z in range(nz):
        tomogram[z] += scale * (ramp_z[z] + ramp_x)[None, :]
    return var_s


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


def _slab_mask(shape, z_bot, z_top):
    z = np.arange(shape[0])[:, None, None]
    return (z >= z_bot[None]) & (z <= z_top[None])


def _masked_var(volume, z_bot=None, z_top=None):
    """Variance of a volume inside the ice slab (everywhere without bounds).

    Accumulated per z-chunk in float64, so no volume-sized temporary is made.
    """
    n = total = total2 = 0.0
    z = np.arange(volume.shape[0])
    for z0 in range(0, volume.shape[0], 16):
        zz = z[z0:z0 + 16, None, None]
        if z_bot is None:
            mask = np.ones((len(zz),) + volume.shape[1:], bool)
        else:
            mask = (zz >= z_bot[None]) & (zz <= z_top[None])
        chunk = volume[z0:z0 + 16]
        n += mask.sum()
        total += np.sum(chunk, where=mask, dtype=np.float64)
        total2 += np.sum(np.square(chunk, dtype=np.float64), where=mask)
    if n < 2:
        raise ValueError("the ice slab is empty: cannot compute the signal variance for snr")
    mean = total / n
    return float(total2 / n - mean * mean)
