"""Rotations: Euler angles, 4x4 transforms, mean rotations.

A particle's orientation is a proper rotation ``R`` (3x3) or a homogeneous
matrix ``M`` (4x4) whose upper-left block is ``R`` and whose last column holds
the shift (x, y, z) in voxels. ``R @ (0, 0, 1)`` is the particle's z-axis in
the tomogram; for membrane and vesicle models it is the outward normal.

- `euler`: Euler angles <-> matrices (plain ZXZ, Dynamo's), and rotations
  that point the z-axis along given directions.
- `transforms`: 4x4 transforms from rotations and shifts; angles between
  vectors.
- `mean`: the chordal L2 mean of rotations and the projection of 3x3
  matrices onto the nearest rotation.
"""
from .euler import (dynamo_euler_to_matrix, euler_zxz_to_matrix, matrix_to_dynamo_euler,
                    matrix_to_euler_zxz, rotation_from_z_axis)
from .mean import average_rotations, project_to_rotation, project_to_rotation_rows
from .transforms import angle_between, homogeneous

__all__ = ["angle_between", "average_rotations", "dynamo_euler_to_matrix",
           "euler_zxz_to_matrix", "homogeneous", "matrix_to_dynamo_euler",
           "matrix_to_euler_zxz", "project_to_rotation", "project_to_rotation_rows",
           "rotation_from_z_axis"]
