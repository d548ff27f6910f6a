"""Placing the phantom's objects in the ice slab, without overlaps.

The lamella is an ice slab bounded in z by two surfaces (`_ice_geometry`);
every object is drawn by rejection sampling inside it: vesicles with their
membrane proteins first, then filaments, gold beads and free particles, each
kept only where its bounding sphere (or, for free particles, its rendered
density) overlaps nothing placed before. The order of the random draws is
part of the contract: equal seeds give equal phantoms.

Conventions: arrays are [z, y, x]; positions (x, y, z) in voxels; rotations
map the particle's canonical frame to the tomogram (``R @ (0, 0, 1)`` is the
particle axis).
"""
import numpy as np
from scipy.spatial import cKDTree

from ..rotations import euler_zxz_to_matrix, rotation_from_z_axis
from .shapes import (FILAMENT_TYPES, GOLD_DENSITY, LEAFLET_SEPARATION, MEMBRANE_CLASS,
                     _filament_axis, _filament_subunits, _paste_shape, _paste_spheres,
                     _paste_vesicle, _render, _shape_min_z, vesicle_surface_points)

#: Soft edge of spheres (filament subunits, gold), voxels.
_EDGE_VOX = 0.5


def random_rotations(n, rng):
    """``n`` rotations drawn uniformly from SO(3) (via random unit quaternions).

    Parameters
    ----------
    n : int
    rng : numpy.random.Generator

    Returns
    -------
    (n, 3, 3) ndarray of float
        Proper rotation matrices.

    Examples
    --------
    >>> R = random_rotations(500, np.random.default_rng(0))
    >>> bool(np.allclose(R @ R.transpose(0, 2, 1), np.eye(3)))
    True
    >>> bool(np.allclose(np.linalg.det(R), 1))
    True
    >>> bool(np.abs(R[:, :, 2].mean(0)).max() < 0.1)      # z-axes spread over the sphere
    True
    """
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



# ---------------------------------------------------------------------------
# The scene: slab, volume, occupancy and the particles placed so far
# ---------------------------------------------------------------------------

class _Scene:
    """What placement builds: the object density and the particle records.

    Parameters
    ----------
    shape : (nz, ny, nx)
    z_bot, z_top : (ny, nx) ndarray
        The lamella's bottom and top surfaces (z, voxels).
    rng : numpy.random.Generator
        Every draw of the placement comes from it, in a fixed order.
    """

    def __init__(self, shape, z_bot, z_top, rng):
        self.shape = shape
        self.z_bot, self.z_top = z_bot, z_top
        self.rng = rng
        self.objects = np.zeros(shape, dtype=np.float32)
        self.occupancy = _Occupancy()
        self.positions, self.rotations, self.class_ids = [], [], []
        self.kinds, self.vesicle_idx, self.offsets = [], [], []

    def slab_at(self, x, y):
        """Bottom and top z of the ice at the voxel nearest (x, y)."""
        ny, nx = self.z_bot.shape
        j = int(np.clip(round(y), 0, ny - 1))
        i = int(np.clip(round(x), 0, nx - 1))
        return self.z_bot[j, i], self.z_top[j, i]

    def random_point_in_slab(self, margin_xy, margin_z):
        """A uniform point (x, y, z) at least the margins inside the volume and the slab.

        None when 50 draws find none (or the volume is narrower than the margin).
        """
        _, ny, nx = self.shape
        rng = self.rng
        for _ in range(50):
            x = rng.uniform(margin_xy, nx - 1 - margin_xy) if nx - 1 > 2 * margin_xy else None
            y = rng.uniform(margin_xy, ny - 1 - margin_xy) if ny - 1 > 2 * margin_xy else None
            if x is None or y is None:
                return None
            lo, hi = self.slab_at(x, y)
            if hi - lo > 2 * margin_z:
                return np.array([x, y, rng.uniform(lo + margin_z, hi - margin_z)])
        return None

    def add_particle(self, position, rotation, class_id, kind, vesicle=-1, offset=np.nan):
        self.positions.append(position)
        self.rotations.append(rotation)
        self.class_ids.append(int(class_id))
        self.kinds.append(kind)
        self.vesicle_idx.append(vesicle)
        self.offsets.append(offset)


# ---------------------------------------------------------------------------
# Placement steps (called in this order by `simulate_tomogram`)
# ---------------------------------------------------------------------------

def _place_vesicles(scene, n_vesicles, proteins_per_vesicle, mp_shape, mp_radius, voxel_size,
                    max_attempts):
    """Vesicles and their membrane proteins, pasted into ``scene``; returns the vesicles."""
    rng = scene.rng
    _, ny, nx = scene.shape
    vesicles = []
    leaflet_sep = LEAFLET_SEPARATION / voxel_size
    leaflet_sigma = max(6.0 / voxel_size, 0.5)
    # distance of the membrane protein's centroid above its lowest point: the
    # base of the protein rests on the outer leaflet
    mp_zmin = _shape_min_z(mp_shape) / voxel_size
    mp_offset = leaflet_sep / 2 - mp_zmin
    for v in range(int(n_vesicles)):
        placed = False
        for _ in range(max_attempts):
            # the bilayer must lie inside the slab; membrane proteins may poke
            # out of it (a lamella cuts through whatever it contains)
            half_slab = np.median(scene.z_top - scene.z_bot) / 2
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
            centre = scene.random_point_in_slab(margin_xy, margin_z)
            if centre is None:
                continue
            lo, hi = scene.slab_at(*centre[:2])
            if centre[2] - margin_z < lo or centre[2] + margin_z > hi:
                continue
            bound = axes.max() + leaflet_sep / 2 + 1
            if not scene.occupancy.fits(centre, bound):
                continue
            ves = dict(center=centre, semi_axes=axes, rotation=R, thickness=leaflet_sep)
            kept = _membrane_protein_sites(scene, ves, proteins_per_vesicle, mp_radius,
                                           mp_offset)
            if kept is None:
                continue
            scene.occupancy.add(centre, bound)
            for p, _ in kept:
                scene.occupancy.add(p, mp_radius)
            vesicles.append(ves)
            _paste_vesicle(scene.objects, ves, leaflet_sigma)
            for p, nrm in kept:
                R_p = rotation_from_z_axis(nrm, in_plane=rng.uniform(0, 360))
                scene.add_particle(p, R_p, MEMBRANE_CLASS, "membrane", len(vesicles) - 1,
                                   mp_offset)
                _paste_shape(scene.objects, mp_shape, p, R_p, voxel_size, mp_radius)
            placed = True
            break
        if not placed:
            raise ValueError(f"could place only {len(vesicles)} of n_vesicles={n_vesicles} "
                             f"vesicles in a {scene.shape} volume (slab too thin or too crowded)")
    return vesicles


def _membrane_protein_sites(scene, ves, n, mp_radius, mp_offset):
    """``n`` (position, outward normal) pairs on a vesicle, or None when they do not fit.

    Uniform on the surface, inside the volume and the slab, mutually
    non-overlapping and free in the scene's occupancy.
    """
    _, ny, nx = scene.shape
    cand, normals = vesicle_surface_points(ves, 40 * n + 40, scene.rng, offset=mp_offset)
    kept = []
    for p, nrm in zip(cand, normals):
        if len(kept) == n:
            break
        lo, hi = scene.slab_at(*p[:2])
        if not (lo <= p[2] <= hi and mp_radius <= p[0] <= nx - 1 - mp_radius
                and mp_radius <= p[1] <= ny - 1 - mp_radius):
            continue
        if kept and np.min(np.linalg.norm(np.array([k[0] for k in kept]) - p,
                                          axis=1)) < 2 * mp_radius:
            continue
        kept.append((p, nrm))
    if len(kept) < n or not all(scene.occupancy.fits(p, mp_radius) for p, _ in kept):
        return None
    return kept


def _place_filaments(scene, n_filaments, voxel_size, max_attempts):
    """Curved helical filaments pasted into ``scene``: (axis polylines, info dicts)."""
    rng = scene.rng
    _, ny, nx = scene.shape
    z_bot, z_top = scene.z_bot, scene.z_top
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
            start = scene.random_point_in_slab(outer, outer + 1)
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
            if not all(scene.occupancy.fits(p, outer) for p in samples):
                continue
            for p in samples:
                scene.occupancy.add(p, outer)
            sub = _filament_subunits(axis, kind, voxel_size)
            _paste_spheres(scene.objects, sub, sub_r, 1.0, _EDGE_VOX)
            filaments.append(axis)
            filament_info.append(dict(type=kind, radius=float(outer)))
            placed = True
            break
        if not placed:
            raise ValueError(f"could place only {len(filaments)} of n_filaments={n_filaments} "
                             f"filaments in a {scene.shape} volume")
    return filaments, filament_info


def _place_gold(scene, n_gold, voxel_size, max_attempts):
    """10 nm gold beads near the lamella surfaces, pasted into ``scene``."""
    rng = scene.rng
    gold = []
    gold_r = 50.0 / voxel_size
    for _g in range(int(n_gold)):
        placed = False
        for _ in range(max_attempts):
            c = scene.random_point_in_slab(gold_r + 1, gold_r)
            if c is None:
                break
            lo, hi = scene.slab_at(*c[:2])
            c[2] = (hi - gold_r - 0.5) if rng.random() < 0.5 else (lo + gold_r + 0.5)
            if not scene.occupancy.fits(c, gold_r + 0.5):
                continue
            scene.occupancy.add(c, gold_r + 0.5)
            _paste_spheres(scene.objects, c, gold_r, GOLD_DENSITY, _EDGE_VOX)
            gold.append(dict(center=c, radius=float(gold_r)))
            placed = True
            break
        if not placed:
            raise ValueError(f"could place only {len(gold)} of n_gold={n_gold} gold beads")
    return gold


def _place_free_particles(scene, classes, n_particles, shapes, radii, names, voxel_size,
                          max_attempts):
    """Free particles of ``classes`` (drawn uniformly) at random orientations."""
    rng = scene.rng
    z_bot, z_top = scene.z_bot, scene.z_top
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
            p = scene.random_point_in_slab(r, core)
            if p is None or not scene.occupancy.fits(p, core):
                continue
            box, dens = _render(shapes[c], p, free_rot[k], voxel_size, r, scene.shape)
            solid = dens > 0.5
            if np.any(solid & (scene.objects[box] > 0.5)):
                continue
            zz = np.arange(box[0].start, box[0].stop)[:, None, None]
            inside = ((zz >= z_bot[None, box[1], box[2]])
                      & (zz <= z_top[None, box[1], box[2]]))
            if np.any(solid & ~inside):
                continue
            break
        else:
            raise ValueError(
                f"could place only {k} of n_particles={n_particles} particles in a "
                f"{scene.shape} volume (slab too thin or too crowded for class {names[c]})")
        scene.occupancy.add(p, core)
        sub = scene.objects[box]
        np.maximum(sub, dens, out=sub)
        scene.add_particle(p, free_rot[k], c, "free")
