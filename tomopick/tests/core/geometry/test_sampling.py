"""Even spacing of cropping points (tomopick.core.geometry.sampling)."""
import pytest

from tomopick.core import geometry as g
from tomopick.tests.core.geometry.clicks import (ELL_CENTER, ELL_ROT, ELL_SEMI, ellipsoid_clicks,
                                                 membrane_clicks, nn_median)


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
