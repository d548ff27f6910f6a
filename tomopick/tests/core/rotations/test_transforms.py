"""4x4 transforms and angles between vectors (tomopick.core.rotations.transforms)."""
import numpy as np

from tomopick.core.rotations import angle_between, euler_zxz_to_matrix, homogeneous


def test_homogeneous_holds_rotation_and_shift_and_acts_on_points():
    R = euler_zxz_to_matrix(30, 60, 90)
    t = np.array([1.0, -2.0, 3.5])
    M = homogeneous(R, t)
    np.testing.assert_array_equal(M[:3, :3], R)
    np.testing.assert_array_equal(M[:3, 3], t)
    np.testing.assert_array_equal(M[3], [0, 0, 0, 1])
    p = np.array([4.0, 5.0, 6.0])
    np.testing.assert_allclose((M @ np.r_[p, 1])[:3], R @ p + t, atol=1e-14)


def test_homogeneous_batches_and_defaults():
    shifts = np.arange(12.0).reshape(4, 3)
    M = homogeneous(shift=shifts)
    assert M.shape == (4, 4, 4)
    np.testing.assert_array_equal(M[:, :3, :3], np.broadcast_to(np.eye(3), (4, 3, 3)))
    np.testing.assert_array_equal(M[:, :3, 3], shifts)
    np.testing.assert_array_equal(homogeneous(), np.eye(4))
    R = euler_zxz_to_matrix([0, 10, 20], [5, 6, 7], [1, 2, 3])
    np.testing.assert_array_equal(homogeneous(R)[:, :3, 3], 0)


def test_angle_between_known_angles_row_by_row_and_scale_free():
    u = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 3]], float)
    v = np.array([[5, 0, 0], [0, 2, 0], [-1, 0, 0], [0, 1, 1]], float)
    np.testing.assert_allclose(angle_between(u, v), [0, 90, 180, 45], atol=1e-6)
    assert angle_between(u[3], v[3]) == angle_between(u, v)[3]
