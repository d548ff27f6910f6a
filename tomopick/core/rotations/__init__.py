"""Rotation sets, point-group symmetry and angular distances (core's convention: ``R @ z`` is the particle z-axis)."""
from .sampling import (angular_distance, angular_step_for, asymmetric_unit,
                       axis_angle_to_matrix, canonical_rotations, local_rotations,
                       matrix_to_quaternion, nearest_neighbour_angles, quaternion_to_matrix,
                       rotation_angle, rotation_count, super_fibonacci_quaternions,
                       symmetry_matrices, symmetry_order, uniform_rotations)
# 4x4 transforms beside the rotation sets (main has them in rotations/transforms.py)
from ..transforms import angle_between, homogeneous

__all__ = ["angle_between", "homogeneous", "angular_distance", "angular_step_for", "asymmetric_unit", "axis_angle_to_matrix",
           "canonical_rotations", "local_rotations", "matrix_to_quaternion",
           "nearest_neighbour_angles", "quaternion_to_matrix", "rotation_angle",
           "rotation_count", "super_fibonacci_quaternions", "symmetry_matrices",
           "symmetry_order", "uniform_rotations"]
