"""Euler angles and axis-pointing rotations (tomopick.core.rotations.euler).

scipy's Rotation is the independent reference: ``from_euler("ZXZ", ...)`` with
capital letters is the intrinsic composition Rz(a) Rx(b) Rz(c).
"""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tomopick.core.rotations import (dynamo_euler_to_matrix, euler_zxz_to_matrix,
                                     matrix_to_dynamo_euler, matrix_to_euler_zxz,
                                     rotation_from_z_axis)

RNG = np.random.default_rng(11)
ANGLES = np.column_stack([RNG.uniform(-180, 180, 40), RNG.uniform(0.5, 179.5, 40),
                          RNG.uniform(-180, 180, 40)])


def _wrap(degrees):
    return (np.asarray(degrees) + 180.0) % 360.0 - 180.0


def test_zxz_matrices_are_scipys_intrinsic_zxz_one_by_one_and_batched():
    batched = euler_zxz_to_matrix(*ANGLES.T)
    for (a, b, c), R in zip(ANGLES, batched):
        expected = Rotation.from_euler("ZXZ", [a, b, c], degrees=True).as_matrix()
        np.testing.assert_allclose(euler_zxz_to_matrix(a, b, c), expected, atol=1e-14)
        np.testing.assert_array_equal(R, euler_zxz_to_matrix(a, b, c))


def test_zxz_angles_round_trip_with_tilt_in_0_180():
    tdrot, tilt, narot = matrix_to_euler_zxz(euler_zxz_to_matrix(*ANGLES.T))
    np.testing.assert_allclose(_wrap(tdrot - ANGLES[:, 0]), 0, atol=1e-9)
    np.testing.assert_allclose(tilt, ANGLES[:, 1], atol=1e-9)
    np.testing.assert_allclose(_wrap(narot - ANGLES[:, 2]), 0, atol=1e-9)


@pytest.mark.parametrize("tilt", [0.0, 180.0])
def test_zxz_at_a_pole_puts_the_whole_turn_in_tdrot(tilt):
    R = euler_zxz_to_matrix(30.0, tilt, 25.0)
    tdrot, got_tilt, narot = matrix_to_euler_zxz(R)
    assert got_tilt == pytest.approx(tilt) and narot == 0.0
    np.testing.assert_allclose(euler_zxz_to_matrix(tdrot, got_tilt, narot), R, atol=1e-12)


def test_matrix_to_euler_ignores_the_shift_of_a_4x4_transform():
    M = np.eye(4)
    M[:3, :3] = euler_zxz_to_matrix(10, 20, 30)
    M[:3, 3] = (5, -6, 7)
    np.testing.assert_allclose(matrix_to_euler_zxz(M), (10, 20, 30), atol=1e-9)


def test_dynamo_rotation_is_the_transpose_of_dynamos_matrix():
    # Dynamo's dynamo_euler2matrix: m = Rz(narot) Rx(tilt) Rz(tdrot); particle R = m.T
    for tdrot, tilt, narot in ANGLES[:10]:
        m = Rotation.from_euler("ZXZ", [narot, tilt, tdrot], degrees=True).as_matrix()
        np.testing.assert_allclose(dynamo_euler_to_matrix(tdrot, tilt, narot), m.T, atol=1e-14)


def test_dynamo_tilt_is_the_polar_angle_and_90_minus_tdrot_the_azimuth():
    tdrot, tilt, narot = ANGLES.T
    z_axes = dynamo_euler_to_matrix(tdrot, tilt, narot)[:, :, 2]
    np.testing.assert_allclose(np.degrees(np.arccos(z_axes[:, 2])), tilt, atol=1e-9)
    azimuth = np.degrees(np.arctan2(z_axes[:, 1], z_axes[:, 0]))
    np.testing.assert_allclose(_wrap(azimuth - (90 - tdrot)), 0, atol=1e-9)


def test_dynamo_angles_round_trip():
    got = np.array(matrix_to_dynamo_euler(dynamo_euler_to_matrix(*ANGLES.T))).T
    np.testing.assert_allclose(_wrap(got - ANGLES), 0, atol=1e-9)


def test_rotation_from_z_axis_points_z_keeps_x_horizontal_and_is_proper():
    axes = RNG.normal(size=(50, 3)) * RNG.uniform(0.1, 10, (50, 1))
    R = rotation_from_z_axis(axes)
    np.testing.assert_allclose(R[:, :, 2], axes / np.linalg.norm(axes, axis=1, keepdims=True),
                               atol=1e-14)
    np.testing.assert_allclose(R[:, 2, 0], 0, atol=1e-14)         # x-axis in the x-y plane
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(R), 1, atol=1e-14)
    np.testing.assert_array_equal(rotation_from_z_axis(axes[7]), R[7])


def test_in_plane_angle_turns_the_particle_about_its_own_z_axis():
    axis = np.array([1.0, -2.0, 0.5])
    turned = rotation_from_z_axis(axis, in_plane=35.0)
    about_z = Rotation.from_euler("z", 35.0, degrees=True).as_matrix()
    np.testing.assert_allclose(turned, rotation_from_z_axis(axis) @ about_z, atol=1e-14)


def test_rotation_from_a_zero_axis_is_an_error():
    with pytest.raises(ValueError, match="zero-length"):
        rotation_from_z_axis([[0, 0, 1], [0, 0, 0]])
