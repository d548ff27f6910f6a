"""Synthetic cryo-ET tomograms ("phantoms") with exact ground truth.

`simulate_tomogram` builds a lamella-like volume for tests, demos and
benchmarks: an ice slab (thickness and grey level varying across x/y),
structured background, free macromolecules of several asymmetric classes at
random sub-voxel positions and orientations without overlap, vesicles with a
lipid bilayer carrying oriented membrane proteins, curved helical filaments,
gold beads; then a missing wedge (tilt axis y, beam z), a phase-flipped CTF
band-pass, an optional grey-level drift and Gaussian noise at a requested SNR.

Modules: `shapes` (particle classes, vesicle and filament geometry,
rendering), `placement` (rejection sampling in the slab), `imaging` (ice,
wedge, CTF, drift, noise), `phantom` (`simulate_tomogram`, `Phantom`, truth
files), `maps` (particle classes from density maps and PDB models).

Conventions: arrays are [z, y, x]; positions and vectors are (x, y, z) in
voxels with the centre of element [k, j, i] at (i, j, k). A particle with
rotation ``R`` has its canonical z-axis along ``R @ (0, 0, 1)`` in the
tomogram. Equal seeds give equal phantoms.
"""
from .imaging import ctf_band_pass
from .maps import MapShape, map_particle_class, pdb_density, read_pdb_atoms, splat_atoms
from .phantom import Phantom, load_truth, simulate_tomogram
from .placement import random_rotations
from .shapes import (FILAMENT_TYPES, FREE_CLASSES, GOLD_DENSITY, LEAFLET_SEPARATION,
                     MEMBRANE_CLASS, PARTICLE_CLASSES, particle_template, vesicle_normals,
                     vesicle_surface_points)

__all__ = [
    "simulate_tomogram", "Phantom", "load_truth",
    "PARTICLE_CLASSES", "FREE_CLASSES", "MEMBRANE_CLASS", "FILAMENT_TYPES",
    "LEAFLET_SEPARATION", "GOLD_DENSITY", "particle_template",
    "vesicle_normals", "vesicle_surface_points", "random_rotations", "ctf_band_pass",
    "MapShape", "map_particle_class", "pdb_density", "read_pdb_atoms", "splat_atoms",
]
