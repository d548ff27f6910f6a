"""Accuracy of the five models of directional picking (tomopick.core.geometry.models).

Ground truth is analytic (spheres, ellipsoids, helices); the click noise is
described in `clicks`.
"""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from tomopick.core import geometry as g
from tomopick.core.rotations import angle_between
from tomopick.tests.core.geometry.clicks import (ELL_CENTER, MEM_CENTER, MEM_RADIUS, click_noise,
                                                 ellipsoid_clicks, membrane_clicks,
                                                 random_directions, true_ellipsoid_distance)


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


@pytest.mark.parametrize("seed", [6, 7])
def test_ellipsoidal_vesicle_points_within_1p5_voxels_and_normals_within_5_degrees(seed):
    crop = g.crop_ellipsoid(ellipsoid_clicks(35, seed), spacing=6.0, edge=6.0, subdivisions=1)
    dist, true_normals = true_ellipsoid_distance(crop.positions)
    assert dist.max() < 1.5
    err = angle_between(crop.normals, true_normals)
    assert np.median(err) < 5.0
    assert len(crop) > 100


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


@pytest.mark.parametrize("model_type", g.MODEL_TYPES)
def test_min_points_covers_every_model_and_fewer_points_cannot_be_fitted(model_type):
    """MIN_POINTS (the picker's "incomplete" rule) is never below what the fit needs."""
    assert set(g.MIN_POINTS) == set(g.MODEL_TYPES)
    rng = np.random.default_rng(4)
    # generic points: two z-levels (a surface's minimum shape), spread in x and y
    points = np.column_stack([rng.uniform(0, 40, 12), rng.uniform(0, 40, 12),
                              np.repeat([10.0, 20.0], 6)])
    too_few = points[:g.MIN_POINTS[model_type] - 1]
    with pytest.raises(ValueError):
        g.crop_model(model_type, too_few)


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
