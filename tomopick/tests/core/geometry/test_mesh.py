"""Meshes through clicks on slices (tomopick.core.geometry.mesh)."""
import numpy as np
import pytest

from tomopick.core import geometry as g
from tomopick.tests.core.geometry.clicks import membrane_clicks


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
