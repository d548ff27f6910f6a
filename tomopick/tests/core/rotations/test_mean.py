"""The mean of rotations and the projection onto rotations (tomopick.core.rotations.mean)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tomopick.core.rotations import (average_rotations, euler_zxz_to_matrix, homogeneous,
                                     matrix_to_euler_zxz, project_to_rotation,
                                     project_to_rotation_rows)


def _turn(axis, degrees):
    """Rotation by ``degrees`` about ``axis`` (scipy: an independent reference)."""
    axis = np.asarray(axis, float)
    return Rotation.from_rotvec(np.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()


def _angle(A, B):
    """Angle (degrees) of the rotation taking A to B."""
    return np.degrees(Rotation.from_matrix(A.T @ B).magnitude())


def _svd_projection(M):
    """Nearest proper rotation by SVD with a determinant correction (Kabsch)."""
    U, _, Vt = np.linalg.svd(M)
    if np.linalg.det(U @ Vt) < 0:
        U[:, 2] *= -1
    return U @ Vt


def test_rotation_average_of_symmetric_perturbations_is_the_centre():
    R0 = euler_zxz_to_matrix(30, 70, -110)
    Rs = [R0 @ _turn(ax, s * 8) for ax in ([1, 0, 0], [0, 1, 0]) for s in (1, -1)]
    mean = average_rotations(Rs)
    assert _angle(mean, R0) < 0.1
    np.testing.assert_allclose(mean.T @ mean, np.eye(3), atol=1e-14)
    assert np.linalg.det(mean) == pytest.approx(1.0, abs=1e-14)


def test_rotation_average_about_one_axis_is_the_circular_mean_angle():
    # For rotations about one axis the chordal mean is the rotation by
    # atan2(sum sin, sum cos): a known answer independent of the method.
    axis = np.array([1., 2, 2]) / 3
    angles = np.array([10., 25., 70.])
    w = np.array([1., 2., 0.5])
    expected = np.degrees(np.arctan2((w * np.sin(np.radians(angles))).sum(),
                                     (w * np.cos(np.radians(angles))).sum()))
    mean = average_rotations([_turn(axis, t) for t in angles], weights=w)
    assert _angle(mean, _turn(axis, expected)) < 0.1
    assert _angle(mean, _turn(axis, expected)) < 1e-6


def test_rotation_average_is_the_chordal_l2_minimiser():
    rng = np.random.default_rng(5)
    R0 = euler_zxz_to_matrix(*rng.uniform(0, 360, 3))
    Rs = np.array([R0 @ euler_zxz_to_matrix(*rng.normal(0, 10, 3)) for _ in range(7)])
    mean = average_rotations(Rs)

    def cost(R):
        return ((Rs - R) ** 2).sum()
    for _ in range(50):      # no nearby rotation does better
        assert cost(mean) <= cost(mean @ _turn(rng.normal(size=3), 0.5))
    # a 4x4 input gives the same rotation; the Euler angles are far from tomoviz's
    # two-decimal rounding
    assert np.allclose(average_rotations(homogeneous(Rs)), mean, atol=1e-15)
    assert np.abs(np.array(matrix_to_euler_zxz(mean))).max() < 360


def test_rotation_average_equals_the_svd_projection_even_for_spread_rotations():
    # Widely spread sets (sums with det <= 0 or near-singular) must give the
    # Kabsch/SVD answer too: the Newton iteration hands them over to the SVD.
    rng = np.random.default_rng(9)
    for spread in (5, 60, 180):
        for _ in range(20):
            R0 = euler_zxz_to_matrix(*rng.uniform(0, 360, 3))
            Rs = np.array([R0 @ _turn(rng.normal(size=3), rng.uniform(0, spread))
                           for _ in range(rng.integers(2, 6))])
            U, _, Vt = np.linalg.svd(Rs.sum(axis=0))
            if np.linalg.det(U @ Vt) < 0:
                U[:, 2] *= -1
            mean = average_rotations(Rs)
            np.testing.assert_allclose(mean, U @ Vt, atol=1e-9)
            np.testing.assert_allclose(mean.T @ mean, np.eye(3), atol=1e-14)
            assert np.linalg.det(mean) == pytest.approx(1.0, abs=1e-14)


def test_rotation_average_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        average_rotations(np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="shape"):
        average_rotations(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="weights"):
        average_rotations([np.eye(3)], weights=[0.0])


def test_projection_of_a_stack_equals_the_svd_projection_of_each_matrix():
    # well-conditioned sums (Newton path), reflections and singular matrices
    # (SVD path) mixed in one stack: each comes out as its own Kabsch answer
    rng = np.random.default_rng(3)
    stack = [Rotation.random(random_state=rng).as_matrix() @ np.diag(rng.uniform(0.2, 3, 3))
             for _ in range(30)]
    stack += [np.diag([1., 1, -1]), np.diag([2., 1, 0]) @ _turn([1, 1, 0], 40),
              -_turn([0, 1, 2], 75)]
    stack = np.array(stack)
    projected = project_to_rotation(stack)
    for M, R in zip(stack, projected):
        np.testing.assert_allclose(R, _svd_projection(M), atol=1e-9)
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-14)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-14)


def test_projection_of_rows_is_the_projection_of_the_stack_bit_for_bit():
    rng = np.random.default_rng(4)
    stack = np.array([Rotation.random(random_state=rng).as_matrix() + rng.normal(0, 0.3, (3, 3))
                      for _ in range(17)])
    rows = project_to_rotation_rows(stack.reshape(17, 9).T.copy())
    np.testing.assert_array_equal(rows.T.reshape(17, 3, 3), project_to_rotation(stack))


def test_projection_leaves_a_rotation_unchanged():
    R = euler_zxz_to_matrix(20, 130, -70)
    np.testing.assert_allclose(project_to_rotation(R[None])[0], R, atol=1e-15)
