"""Rotations: Euler angles, 4x4 transforms, mean rotations, rotation sets and symmetry.

A particle's orientation is a proper rotation ``R`` (3x3) or a homogeneous
matrix ``M`` (4x4) whose upper-left block is ``R`` and whose last column holds
the shift (x, y, z) in voxels. ``R @ (0, 0, 1)`` is the particle's z-axis in
the tomogram; for membrane and vesicle models it is the outward normal. Scipion
objects store the inverse, M = inv([[R, t]]) with f'(r) = f(M r); only
`tomopick.convert` converts between the two.

- `euler`: Euler angles <-> matrices (plain ZXZ, Dynamo's), and rotations
  that point the z-axis along given directions.
- `transforms`: 4x4 transforms from rotations and shifts; angles between
  vectors.
- `mean`: the chordal L2 mean of rotations and the projection of 3x3
  matrices onto the nearest rotation.
- `sampling`: uniform (super-Fibonacci) and local rotation sets, the
  Crowther angular step, point groups (c1, cN, dN, t, o, i) and their
  asymmetric unit, symmetry-aware angular distances.
"""
from .euler import (dynamo_euler_to_matrix, euler_zxz_to_matrix, matrix_to_dynamo_euler,
                    matrix_to_euler_zxz, rotation_from_z_axis)
from .mean import average_rotations, project_to_rotation, project_to_rotation_rows
from .sampling import (angular_distance, angular_step_for, asymmetric_unit,
                       axis_angle_to_matrix, canonical_rotations, local_rotations,
                       matrix_to_quaternion, nearest_neighbour_angles, quaternion_to_matrix,
                       rotation_angle, rotation_count, super_fibonacci_quaternions,
                       symmetry_matrices, symmetry_order, uniform_rotations)
from .transforms import angle_between, homogeneous

__all__ = ["angle_between", "angular_distance", "angular_step_for", "asymmetric_unit",
           "average_rotations", "axis_angle_to_matrix", "canonical_rotations",
           "dynamo_euler_to_matrix", "euler_zxz_to_matrix", "homogeneous", "local_rotations",
           "matrix_to_dynamo_euler", "matrix_to_euler_zxz", "matrix_to_quaternion",
           "nearest_neighbour_angles", "project_to_rotation", "project_to_rotation_rows",
           "quaternion_to_matrix", "rotation_angle", "rotation_count", "rotation_from_z_axis",
           "super_fibonacci_quaternions", "symmetry_matrices", "symmetry_order",
           "uniform_rotations"]
