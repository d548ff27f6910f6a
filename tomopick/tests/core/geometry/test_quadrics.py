"""Sphere and ellipsoid fits to noisy clicks (tomopick.core.geometry.quadrics)."""
import numpy as np
import pytest

from tomopick.core import geometry as g
from tomopick.tests.core.geometry.clicks import (ELL_CENTER, ELL_ROT, ELL_SEMI, click_noise,
                                                 ellipsoid_clicks, random_directions)


@pytest.mark.parametrize("n_points,seed", [(15, 0), (25, 1), (40, 2)])
def test_vesicle_fit_recovers_centre_within_one_voxel_and_radius_within_2_percent(n_points, seed):
    rng = np.random.default_rng(seed)
    center, radius = np.array([40.0, 45.0, 30.0]), 24.0
    clicks = center + radius * random_directions(n_points, rng) + click_noise(n_points, rng)
    c, r = g.fit_sphere(clicks)
    assert np.linalg.norm(c - center) < 1.0
    assert abs(r - radius) / radius < 0.02


def test_sphere_fit_rejects_coplanar_points():
    pts = np.column_stack([np.cos(np.arange(8)), np.sin(np.arange(8)), np.zeros(8)]) * 10
    with pytest.raises(ValueError, match="coplanar"):
        g.fit_sphere(pts)
    with pytest.raises(ValueError, match="at least 4"):
        g.fit_sphere(pts[:3])


def test_ellipsoid_fit_recovers_axes_and_centre():
    c, semi, rot = g.fit_ellipsoid(ellipsoid_clicks(40, 5))
    assert np.linalg.norm(c - ELL_CENTER) < 1.0
    assert np.all(np.abs(semi - ELL_SEMI) < 1.5)
    # each fitted axis parallel to the true one (sign free)
    cos = np.abs(np.sum(rot * ELL_ROT, axis=0))
    assert np.all(cos > np.cos(np.radians(8)))
    assert np.isclose(np.linalg.det(rot), 1.0)


def test_ellipsoid_fit_rejects_one_sided_patch_and_too_few_points():
    rng = np.random.default_rng(8)
    # a saddle x = (y^2 - z^2) / 40 is no ellipsoid
    y, z = rng.uniform(-20, 20, (2, 40))
    saddle = np.column_stack([(y ** 2 - z ** 2) / 40, y, z])
    with pytest.raises(ValueError, match="not an ellipsoid"):
        g.fit_ellipsoid(saddle)
    with pytest.raises(ValueError, match="at least 9"):
        g.fit_ellipsoid(ellipsoid_clicks(6, 0))
