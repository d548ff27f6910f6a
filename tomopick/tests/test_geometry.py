"""Accuracy of the geometric models of directional picking (tomopick.core.geometry).

Ground truth is analytic (spheres, ellipsoids, helices). Noise model of a
user click: the user clicks on a z-slice, so z is exact and the in-slice
position is off by 1 voxel rms (Gaussian, sigma = 1/sqrt(2) voxel on x and
on y) -- what a careful user achieves on a 10 A/voxel tomogram.
"""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from tomopick.core import geometry as g
from tomopick.core.rotations import angle_between, euler_zxz_to_matrix

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


# ----------------------------------------------------------------- vesicle

@pytest.mark.parametrize("n_points,seed", [(15, 0), (25, 1), (40, 2)])
def test_vesicle_fit_recovers_centre_within_one_voxel_and_radius_within_2_percent(n_points, seed):
    rng = np.random.default_rng(seed)
    center, radius = np.array([40.0, 45.0, 30.0]), 24.0
    clicks = center + radius * random_directions(n_points, rng) + click_noise(n_points, rng)
    c, r = g.fit_sphere(clicks)
    assert np.linalg.norm(c - center) < 1.0
    assert abs(r - radius) / radius < 0.02


@pytest.mark.parametrize("seed", [3, 4])
def test_vesicle_cropping_points_lie_on_true_sphere_with_outward_normals(seed):
    rng = np.random.default_rng(seed)
    center, radius = np.array([40.0, 45.0, 30.0]), 24.0
    clicks = center + radius * random_directions(20, rng) + click_noise(20, rng)
    crop = g.crop_vesicle(clicks, spacing=6.0)
    dist = np.abs(np.linalg.norm(crop.positions - center, axis=1) - radius)
    assert dist.max() < 1.0
    radial = crop.positions - center
    true_normals = radial / np.linalg.norm(radial, axis=1)[:, None]
    err = angle_between(crop.normals, true_normals)
    assert np.median(err) < 3.0
    assert err.max() < 10.0
    # a proper rotation whose z column is the normal
    assert np.allclose(np.linalg.det(crop.rotations), 1.0)
    assert np.allclose(crop.rotations @ np.array([0, 0, 1.0]), crop.normals)


def test_sphere_fit_rejects_coplanar_points():
    pts = np.column_stack([np.cos(np.arange(8)), np.sin(np.arange(8)), np.zeros(8)]) * 10
    with pytest.raises(ValueError, match="coplanar"):
        g.fit_sphere(pts)
    with pytest.raises(ValueError, match="at least 4"):
        g.fit_sphere(pts[:3])


# --------------------------------------------------------------- ellipsoid

def ellipsoid_clicks(n, seed):
    rng = np.random.default_rng(seed)
    u = random_directions(n, rng, max_abs_z=0.9)
    return ELL_CENTER + (u * ELL_SEMI) @ ELL_ROT.T + click_noise(n, rng)


def test_ellipsoid_fit_recovers_axes_and_centre():
    c, semi, rot = g.fit_ellipsoid(ellipsoid_clicks(40, 5))
    assert np.linalg.norm(c - ELL_CENTER) < 1.0
    assert np.all(np.abs(semi - ELL_SEMI) < 1.5)
    # each fitted axis parallel to the true one (sign free)
    cos = np.abs(np.sum(rot * ELL_ROT, axis=0))
    assert np.all(cos > np.cos(np.radians(8)))
    assert np.isclose(np.linalg.det(rot), 1.0)


@pytest.mark.parametrize("seed", [6, 7])
def test_ellipsoidal_vesicle_points_within_1p5_voxels_and_normals_within_5_degrees(seed):
    crop = g.crop_ellipsoid(ellipsoid_clicks(35, seed), spacing=6.0, edge=6.0, subdivisions=1)
    dist, true_normals = true_ellipsoid_distance(crop.positions)
    assert dist.max() < 1.5
    err = angle_between(crop.normals, true_normals)
    assert np.median(err) < 5.0
    assert len(crop) > 100


def test_ellipsoid_fit_rejects_one_sided_patch_and_too_few_points():
    rng = np.random.default_rng(8)
    # a saddle x = (y^2 - z^2) / 40 is no ellipsoid
    y, z = rng.uniform(-20, 20, (2, 40))
    saddle = np.column_stack([(y ** 2 - z ** 2) / 40, y, z])
    with pytest.raises(ValueError, match="not an ellipsoid"):
        g.fit_ellipsoid(saddle)
    with pytest.raises(ValueError, match="at least 9"):
        g.fit_ellipsoid(ellipsoid_clicks(6, 0))


# ------------------------------------------------------------------ surface

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


@pytest.mark.parametrize("n_levels,seed", [(5, 9), (10, 10)])
def test_surface_by_levels_points_within_1p5_voxels_and_normals_within_5_degrees(n_levels, seed):
    clicks = membrane_clicks(n_levels, 8, seed)
    crop = g.crop_surface(clicks, spacing=5.0, edge=4.0, subdivisions=2)
    radial = crop.positions - MEM_CENTER
    dist = np.abs(np.linalg.norm(radial, axis=1) - MEM_RADIUS)
    assert np.max(dist) < 1.5
    err = angle_between(crop.normals, radial)
    assert np.median(err) < 5.0
    # outward = away from the centre of curvature, found without a marker
    assert np.all(err < 30.0)


def test_surface_smoothing_iterations_reduce_click_noise():
    clicks = membrane_clicks(6, 10, 11)
    errors = []
    for sub in (0, 2):
        v, f = g.surface_from_levels(clicks, 4.0, smoothing=0.0)
        v, f = g.refine_mesh(v, f, sub)
        errors.append(np.sqrt(np.mean((np.linalg.norm(v - MEM_CENTER, axis=1) - MEM_RADIUS) ** 2)))
    assert errors[1] < errors[0]


def test_surface_needs_two_levels():
    with pytest.raises(ValueError, match="two z-levels"):
        g.surface_from_levels(membrane_clicks(1, 8, 0), 4.0)


def test_surface_mesh_edge_and_triangle_cap_act():
    clicks = membrane_clicks(6, 8, 12)
    v1, f1 = g.surface_from_levels(clicks, 3.0)
    v2, f2 = g.surface_from_levels(clicks, 6.0)
    assert abs(np.median(g.mesh_edge_lengths(v1, f1)) / 3.0 - 1) < 0.25
    assert abs(np.median(g.mesh_edge_lengths(v2, f2)) / 6.0 - 1) < 0.25
    v3, f3 = g.surface_from_levels(clicks, 1.0, max_triangles=500)
    assert len(f3) <= 500
    v4, f4 = g.refine_mesh(v3, f3, 3, max_triangles=5000)
    assert len(f4) == 4 * len(f3) and len(f4) <= 5000   # second split would exceed the cap


# ----------------------------------------------------------------- spacing

@pytest.mark.parametrize("spacing", [4.0, 6.0, 9.0])
def test_cropping_neighbour_distance_matches_spacing(spacing):
    p, _ = g.crop_sphere([0, 0, 0], 25.0, spacing)
    assert abs(nn_median(p) / spacing - 1) < 0.15
    v, f = g.ellipsoid_mesh(ELL_CENTER, ELL_SEMI, ELL_ROT, 3.0)
    q, _, _ = g.crop_mesh(v, f, spacing)
    assert abs(nn_median(q) / spacing - 1) < 0.15
    s = g.crop_surface(membrane_clicks(6, 8, 13), spacing, edge=3.0)
    assert abs(nn_median(s.positions) / spacing - 1) < 0.15


def test_doubling_spacing_gives_a_quarter_of_the_points():
    n1 = len(g.crop_sphere([0, 0, 0], 30.0, 4.0)[0])
    n2 = len(g.crop_sphere([0, 0, 0], 30.0, 8.0)[0])
    assert 0.22 < n2 / n1 < 0.28
    clicks = ellipsoid_clicks(30, 14)
    m1 = len(g.crop_ellipsoid(clicks, 4.0, edge=4.0))
    m2 = len(g.crop_ellipsoid(clicks, 8.0, edge=4.0))
    assert 0.2 < m2 / m1 < 0.3


# ------------------------------------------------------------ interior marker

def test_interior_marker_outside_flips_every_normal():
    rng = np.random.default_rng(15)
    center = np.array([40.0, 45.0, 30.0])
    sphere_clicks = center + 24 * random_directions(20, rng) + click_noise(20, rng)
    cases = [
        (lambda m: g.crop_vesicle(sphere_clicks, 6.0, interior=m), center, center + [40, 0, 0]),
        (lambda m: g.crop_ellipsoid(ellipsoid_clicks(30, 16), 6.0, 6.0, interior=m),
         ELL_CENTER, ELL_CENTER + [0, 0, 50]),
        (lambda m: g.crop_surface(membrane_clicks(5, 8, 17), 5.0, 4.0, interior=m),
         MEM_CENTER, MEM_CENTER + [2 * MEM_RADIUS, 0, 0]),
        (lambda m: g.crop_general(sphere_clicks, interior=m), center, center + [60, 0, 0]),
    ]
    for crop, inside, outside in cases:
        a, b = crop(inside), crop(outside)
        assert np.allclose(a.positions, b.positions)
        assert np.allclose(np.einsum("ni,ni->n", a.normals, b.normals), -1.0)


# ------------------------------------------------------------------ general

def test_general_model_keeps_points_and_orients_them_outward():
    rng = np.random.default_rng(18)
    center = np.array([40.0, 45.0, 30.0])
    dirs = random_directions(30, rng)
    clicks = center + 24 * dirs + rng.normal(0, 0.5, (30, 3))
    crop = g.crop_general(clicks)
    assert np.allclose(crop.positions, clicks)
    assert crop.oriented.all()
    err = angle_between(crop.normals, dirs)
    assert np.median(err) < 15.0 and err.max() < 60.0


def test_general_model_on_a_line_has_no_orientation():
    line = np.column_stack([np.arange(6.0), 2 * np.arange(6.0), np.full(6, 5.0)])
    crop = g.crop_general(line)
    assert not crop.oriented.any()
    assert np.allclose(crop.rotations, np.eye(3))


# ----------------------------------------------------------------- filament

def helix(t, r=12.0, pitch=30.0):
    return np.column_stack([40 + r * np.cos(t), 40 + r * np.sin(t), 10 + pitch * t / (2 * np.pi)])


@pytest.mark.parametrize("dz", [3.0, 5.0, 8.0])
def test_filament_points_every_dz_along_a_helix(dz):
    clicks = helix(np.linspace(0, 3 * np.pi, 14))
    crop = g.crop_filament(clicks, dz=dz)
    steps = np.linalg.norm(np.diff(crop.positions, axis=0), axis=1)
    assert np.all(np.abs(steps / dz - 1) < 0.05)
    dense = helix(np.linspace(0, 3 * np.pi, 20000))
    d, idx = cKDTree(dense).query(crop.positions)
    assert d.max() < 0.3
    tangent = np.gradient(dense, axis=0)[idx]
    assert np.max(angle_between(crop.normals, tangent)) < 3.0
    assert crop.description["length"] / dz - 1 <= len(crop) <= crop.description["length"] / dz + 1


def test_filament_points_turn_by_dphi_at_radius():
    clicks = np.column_stack([np.full(5, 30.0), np.full(5, 30.0), np.linspace(5, 45, 5)])
    crop = g.crop_filament(clicks, dz=4.0, dphi=30.0, radius=6.0)
    axis_dist = np.linalg.norm(crop.positions[:, :2] - 30.0, axis=1)
    assert np.allclose(axis_dist, 6.0)
    x_axes = crop.rotations[:, :, 0]
    turn = angle_between(x_axes[:-1], x_axes[1:])
    assert np.allclose(turn, 30.0, atol=0.1)
    assert np.allclose(crop.normals, [0, 0, 1], atol=1e-6)
    assert np.allclose(np.linalg.det(crop.rotations), 1.0)


def test_crop_model_names_unknown_type():
    with pytest.raises(ValueError, match="Tube"):
        g.crop_model("Tube", np.zeros((5, 3)))


# ------------------------------------------------------------ phantom vesicles

@pytest.fixture(scope="module")
def phantom_vesicles():
    """The truth vesicles of a simulated phantom: a sphere and an ellipsoid (radius ~13)."""
    from tomopick.core import simulate
    phantom = simulate.simulate_tomogram(shape=(64, 96, 96), n_particles=0, n_vesicles=2,
                                         proteins_per_vesicle=0, tilt_range=None, ctf=False, seed=0)
    return phantom.vesicles


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phantom_sphere_vesicle_fit_crop_and_normals(phantom_vesicles, seed):
    from tomopick.core.simulate import vesicle_normals, vesicle_surface_points
    truth = phantom_vesicles[0]
    radius = truth["semi_axes"][0]
    assert np.allclose(truth["semi_axes"], radius)
    rng = np.random.default_rng(seed)
    clicks, _ = vesicle_surface_points(truth, 40, rng)
    clicks += click_noise(40, rng)
    center, r = g.fit_sphere(clicks)
    assert np.linalg.norm(center - truth["center"]) < 1.0
    assert abs(r / radius - 1) < 0.02
    crop = g.crop_vesicle(clicks, spacing=4.0)
    assert np.abs(np.linalg.norm(crop.positions - truth["center"], axis=1) - radius).max() < 1.0
    err = angle_between(crop.normals, vesicle_normals(truth, crop.positions))
    assert np.median(err) < 3.0 and err.max() < 10.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phantom_ellipsoidal_vesicle_within_1p5_voxels_and_5_degrees(phantom_vesicles, seed):
    from tomopick.core.simulate import vesicle_normals, vesicle_surface_points
    truth = phantom_vesicles[1]
    rng = np.random.default_rng(seed)
    clicks, _ = vesicle_surface_points(truth, 40, rng)
    clicks += click_noise(40, rng)
    crop = g.crop_ellipsoid(clicks, spacing=4.0, edge=3.0)
    c, a, R = (np.asarray(truth[k]) for k in ("center", "semi_axes", "rotation"))
    q = (crop.positions - c) @ R
    f = np.sqrt(((q / a) ** 2).sum(1))
    distance = np.abs((f - 1) * f / np.sqrt(((q / a ** 2) ** 2).sum(1)))  # first order
    assert distance.max() < 1.5
    err = angle_between(crop.normals, vesicle_normals(truth, crop.positions))
    assert np.median(err) < 5.0


def test_vesicle_from_a_nearly_flat_patch_is_rejected_not_extrapolated():
    rng = np.random.default_rng(19)
    xy = rng.uniform(0, 20, (20, 2))
    patch = np.column_stack([xy, 0.002 * ((xy - 10) ** 2).sum(1)])  # radius ~250 cap
    with pytest.raises(ValueError, match="nearly flat"):
        g.crop_vesicle(patch, 5.0)
    with pytest.raises(ValueError, match="increase the spacing"):
        g.crop_sphere([0, 0, 0], 5000.0, 1.0)


def test_flat_patch_normals_follow_the_marker_side_or_plus_z():
    rng = np.random.default_rng(20)
    xy = rng.uniform(0, 30, (25, 2))
    patch = np.column_stack([xy, 10 + rng.normal(0, 0.3, 25)])
    for interior, expected in [(None, 1.0), ((15, 15, 0), 1.0), ((15, 15, 20), -1.0)]:
        crop = g.crop_general(patch, interior=interior)
        assert crop.oriented.all()
        assert np.median(crop.normals[:, 2] * expected) > np.cos(np.radians(10))
    levels = np.concatenate([np.column_stack([np.linspace(0, 30, 6) + rng.normal(0, 0.5, 6),
                                              np.full(6, 20.0) + rng.normal(0, 0.5, 6),
                                              np.full(6, z)]) for z in (0, 8, 16, 24)])
    sheet = g.crop_surface(levels, 4.0, 3.0)           # the plane y = 20
    assert np.median(np.abs(sheet.normals[:, 1])) > np.cos(np.radians(10))
    below = g.crop_surface(levels, 4.0, 3.0, interior=(15, 0, 12))
    assert np.all(below.normals[:, 1] > 0)
