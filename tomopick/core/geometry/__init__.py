"""Geometric models of membranes, vesicles and filaments from user-picked points.

This is the numerical side of directional ("vectorial") picking and of the
model workflow: a user clicks a few points on a vesicle, a membrane or a
filament; these functions fit the geometry, spread cropping points evenly over
it and orient each one.

Conventions
-----------
- Positions and vectors are (x, y, z) in voxels.
- A normal is a unit vector. For vesicles and membranes the particle's z-axis
  is the OUTWARD normal: away from the fitted centre (sphere / ellipsoid
  centre; for an open surface the centre of the least-squares sphere through
  the user points, i.e. the centre of curvature). The user's interior marker
  overrides this: normals point away from the side it is on. For a closed
  model (vesicle) a marker inside keeps the normals outward and a marker
  outside flips every one of them (they then point into the vesicle).
- The in-plane angle is not defined by a surface; rotations are built with
  `tomopick.core.rotations.rotation_from_z_axis` with ``narot = 0``.
- Filaments: the particle's z-axis runs along the filament (direction of the
  user's clicks) and its x-axis points radially outward from the axis; it
  turns by ``dphi`` degrees from one point to the next.
- Triangle meshes are ``(vertices (V, 3) float, faces (F, 3) int)``; faces are
  wound consistently so that cross-product normals agree across the mesh.

Every fitting function raises ``ValueError`` with the reason when the points
cannot support the model (too few, degenerate); callers report the reason
and carry on with the next model.

Modules: `quadrics` (sphere and ellipsoid fits, their normals), `mesh`
(triangle meshes: icosphere, ellipsoid mesh, surface through slices,
subdivision, smoothing), `sampling` (points spread evenly over spheres and
meshes), `models` (the five models: fit, crop, orient).
"""
from .mesh import (boundary_vertices, ellipsoid_mesh, icosphere, interpolate_normals, mesh_area,
                   mesh_edge_lengths, refine_mesh, smooth_mesh, subdivide_mesh,
                   surface_from_levels, vertex_normals)
from .models import (MIN_POINTS, MODEL_TYPES, ModelCrop, crop_ellipsoid, crop_filament,
                     crop_general, crop_model, crop_surface, crop_vesicle)
from .quadrics import (ellipsoid_normals, fit_ellipsoid, fit_sphere, inside_ellipsoid,
                       outward_normals, project_to_ellipsoid)
from .sampling import (MAX_CROPPING_POINTS, crop_mesh, crop_sphere, fibonacci_sphere,
                       poisson_disk, sample_mesh)

__all__ = ["MAX_CROPPING_POINTS", "MIN_POINTS", "MODEL_TYPES", "ModelCrop", "boundary_vertices",
           "crop_ellipsoid", "crop_filament", "crop_general", "crop_mesh", "crop_model",
           "crop_sphere", "crop_surface", "crop_vesicle", "ellipsoid_mesh", "ellipsoid_normals",
           "fibonacci_sphere", "fit_ellipsoid", "fit_sphere", "icosphere", "inside_ellipsoid",
           "interpolate_normals", "mesh_area", "mesh_edge_lengths", "outward_normals",
           "poisson_disk", "project_to_ellipsoid", "refine_mesh", "sample_mesh", "smooth_mesh",
           "subdivide_mesh", "surface_from_levels", "vertex_normals"]
