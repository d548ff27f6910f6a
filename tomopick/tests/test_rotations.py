"""Rotation sets, symmetry groups and angular distances (tomopick.core.rotations)."""
import numpy as np
import pytest

from tomopick.core.rotations import (angular_distance, asymmetric_unit, canonical_rotations,
                                     local_rotations, matrix_to_quaternion,
                                     nearest_neighbour_angles, quaternion_to_matrix,
                                     rotation_angle, symmetry_matrices, uniform_rotations)
from tomopick.core.simulate import random_rotations


def _covering_radius(rotations, probes):
    """Largest angle from a probe rotation to its nearest member of the set."""
    return max(float(angular_distance(p, rotations).min()) for p in probes)


def test_uniform_set_covers_so3_at_its_step():
    rots = uniform_rotations(20.0)
    probes = random_rotations(300, np.random.default_rng(0))
    # the constant of rotation_count is chosen for covering radius ~ step
    assert _covering_radius(rots, probes) < 1.15 * 20.0
    nn = nearest_neighbour_angles(rots)
    assert 0.8 * 20 < np.median(nn) < 1.3 * 20


def test_rotations_are_proper():
    rots = uniform_rotations(25.0)
    assert np.allclose(rots @ np.swapaxes(rots, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rots), 1)


@pytest.mark.parametrize("sym,order", [("c3", 3), ("c6", 6), ("d2", 4), ("d7", 14), ("t", 12),
                                       ("o", 24), ("i", 60)])
def test_symmetry_reduces_rotations_by_its_order(sym, order):
    assert len(symmetry_matrices(sym)) == order
    full = uniform_rotations(10.0)
    reduced = asymmetric_unit(full, sym)
    # a Dirichlet domain of a quasi-uniform set: the count is N / order up
    # to the points on its boundary (a few % at this density)
    assert abs(len(reduced) * order / len(full) - 1) < 0.05
    # and the reduced set still covers SO(3) modulo the symmetry
    probes = random_rotations(100, np.random.default_rng(1))
    cover = max(float(angular_distance(reduced, p, sym).min()) for p in probes)
    assert cover < 1.2 * 10.0


def test_symmetry_groups_are_groups():
    for sym in ("d5", "t", "o", "i"):
        g = symmetry_matrices(sym)
        products = (g[:, None] @ g[None]).reshape(-1, 3, 3)
        # every product is a member
        d = np.abs(products[:, None] - g[None]).max(axis=(2, 3)).min(axis=1)
        assert d.max() < 1e-9


def test_symmetry_parse_error_names_the_string():
    with pytest.raises(ValueError, match="'c0'"):
        symmetry_matrices("c0")
    with pytest.raises(ValueError, match="'helical'"):
        symmetry_matrices("helical")


def test_angular_distance_with_symmetry():
    rng = np.random.default_rng(2)
    R = random_rotations(50, rng)
    g = symmetry_matrices("d3")
    S = g[rng.integers(0, len(g), 50)]
    assert np.allclose(angular_distance(R, R @ S, "d3"), 0, atol=1e-5)
    assert np.all(angular_distance(R, R @ S) >= 0)
    canon = canonical_rotations(R, "d3")
    assert np.allclose(angular_distance(R, canon, "d3"), 0, atol=1e-5)


def test_local_rotations_stay_within_radius_and_fill_it():
    center = random_rotations(1, np.random.default_rng(3))[0]
    local = local_rotations(center, 12.0, 3.0)
    d = angular_distance(center, local)
    assert d.max() <= 12.0 + 1e-6 and d[0] < 1e-6
    probes = local_rotations(center, 10.0, 1.7)
    # every rotation within the radius has a member within half the grid diagonal
    cover = max(float(angular_distance(p, local).min()) for p in probes)
    assert cover <= 3.0 * np.sqrt(3) / 2 + 0.1


def test_quaternion_round_trip():
    R = random_rotations(200, np.random.default_rng(4))
    assert np.allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-10)
    assert np.allclose(rotation_angle(np.eye(3)), 0)
