"""Clicks on known surfaces for the geometry tests, and the truth they came from.

Noise model of a user click: the user clicks on a z-slice, so z is exact and
the in-slice position is off by 1 voxel rms (Gaussian, sigma = 1/sqrt(2) voxel
on x and on y) -- what a careful user achieves on a 10 A/voxel tomogram.
"""
import numpy as np
from scipy.spatial import cKDTree

from tomopick.core import geometry as g
from tomopick.core.rotations import euler_zxz_to_matrix

NOISE = 1.0  # voxels rms of a click, in the slice plane


def random_directions(n, rng, max_abs_z=0.85):
    """Click directions on a vesicle; the missing wedge hides the poles."""
    out = []
    while len(out) < n:
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        if abs(v[2]) <= max_abs_z:
            out.append(v)
    return np.array(out)


def click_noise(n, rng):
    """(n, 3) click errors: 1 voxel rms in x-y, none in z (the slice)."""
    return np.column_stack([rng.normal(0, NOISE / np.sqrt(2), (n, 2)), np.zeros(n)])


def nn_median(points):
    d, _ = cKDTree(points).query(points, k=2)
    return float(np.median(d[:, 1]))


# Truth: an ellipsoid (30, 22, 16) voxels, arbitrarily rotated.
ELL_CENTER = np.array([48.0, 50.0, 32.0])


ELL_SEMI = np.array([30.0, 22.0, 16.0])
ELL_ROT = euler_zxz_to_matrix(30.0, 50.0, 20.0)


def true_ellipsoid_distance(points):
    """Distance (voxels) of points to the true ellipsoid and its normal at the nearest point."""
    v, f = g.icosphere(6)
    surface = ELL_CENTER + (v * ELL_SEMI) @ ELL_ROT.T
    normals = g.ellipsoid_normals(surface, ELL_CENTER, ELL_SEMI, ELL_ROT)
    _, idx = cKDTree(surface).query(points)
    # point-to-tangent-plane distance removes the sampling error of the dense mesh
    dist = np.abs(np.einsum("ni,ni->n", points - surface[idx], normals[idx]))
    return dist, normals[idx]


def ellipsoid_clicks(n, seed):
    rng = np.random.default_rng(seed)
    u = random_directions(n, rng, max_abs_z=0.9)
    return ELL_CENTER + (u * ELL_SEMI) @ ELL_ROT.T + click_noise(n, rng)


MEM_CENTER = np.array([-20.0, 48.0, 32.0])   # centre of curvature, outside the box
MEM_RADIUS = 60.0


def membrane_clicks(n_levels, per_level, seed, z_half=20.0, half_angle=40.0):
    """Clicks on z-slices of a spherical membrane cap (radius 60)."""
    rng = np.random.default_rng(seed)
    clicks = []
    for z in np.round(np.linspace(MEM_CENTER[2] - z_half, MEM_CENTER[2] + z_half, n_levels)):
        rho = np.sqrt(MEM_RADIUS ** 2 - (z - MEM_CENTER[2]) ** 2)
        ang = np.radians(np.sort(rng.uniform(-half_angle, half_angle, per_level)))
        ang = rng.permutation(ang)  # users do not click in order
        xy = MEM_CENTER[:2] + rho * np.column_stack([np.cos(ang), np.sin(ang)])
        xy += click_noise(per_level, rng)[:, :2]
        clicks.append(np.column_stack([xy, np.full(per_level, z)]))
    return np.concatenate(clicks)
