"""A table of picked particles: the plain-array form of a SetOfCoordinates3D.

`Picks` is what core functions take and return wherever a set of coordinates
travels (file formats, the evaluator, the consensus, the simulator's ground
truth); protocols convert it to and from Scipion objects.
"""
from dataclasses import dataclass, field

import numpy as np


def outside_volume(positions, size_xyz, tolerance=0.5):
    """Which positions lie outside a volume.

    Parameters
    ----------
    positions : (N, 3) array of float
        (x, y, z) in voxels, bottom-left origin.
    size_xyz : (3,) array of int
        (nx, ny, nz) of the volume.
    tolerance : float, optional
        Voxels a position may lie beyond the outermost voxel centre: voxel
        centres run 0 .. n-1, so with 0.5 the volume spans -0.5 .. n-0.5.

    Returns
    -------
    (N,) ndarray of bool
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    size = np.asarray(size_xyz, dtype=float)
    return np.any((pos < -tolerance) | (pos > size - 1 + tolerance), axis=1)


@dataclass
class Picks:
    """Particle positions with optional orientations and scores.

    Attributes
    ----------
    tomo_ids : (N,) ndarray of str
        tsId of the tomogram each particle lies in.
    positions : (N, 3) ndarray of float
        (x, y, z) in voxels of ``voxel_size``, bottom-left-corner origin: the
        centre of array element ``[k, j, i]`` is at (i, j, k).
    group_ids : (N,) ndarray of int
        Model / vesicle / class id (0 when unknown).
    matrices : (N, 4, 4) ndarray of float or None
        Core transforms [[R, t], [0, 1]]: ``R @ (0, 0, 1)`` is the particle's
        z-axis in the tomogram, t a shift in voxels (see
        `tomopick.core.transforms`). Scipion objects store the inverse;
        `tomopick.convert` converts. None when the picks carry no orientation.
    scores : (N,) ndarray of float or None
    voxel_size : float or None
        Å per voxel of ``positions``.
    """
    tomo_ids: np.ndarray
    positions: np.ndarray
    group_ids: np.ndarray = None
    matrices: np.ndarray = None
    scores: np.ndarray = None
    voxel_size: float = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=float).reshape(-1, 3)
        n = len(self.positions)
        self.tomo_ids = np.asarray(self.tomo_ids, dtype=str).reshape(-1)
        if self.tomo_ids.size == 1 and n != 1:
            self.tomo_ids = np.repeat(self.tomo_ids, n)
        if len(self.tomo_ids) != n:
            raise ValueError(f"{len(self.tomo_ids)} tomo ids for {n} positions")
        self.group_ids = (np.zeros(n, dtype=int) if self.group_ids is None
                          else np.asarray(self.group_ids, dtype=int).reshape(-1))
        if self.matrices is not None:
            self.matrices = np.asarray(self.matrices, dtype=float).reshape(n, 4, 4)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=float).reshape(-1)
        for name in ("group_ids", "scores"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{len(value)} {name} for {n} positions")

    def __len__(self):
        return len(self.positions)

    @property
    def has_orientations(self):
        return self.matrices is not None

    def subset(self, index):
        """The picks selected by a boolean mask or integer index array."""
        index = np.asarray(index)
        pick = (lambda a: None if a is None else a[index])
        return Picks(self.tomo_ids[index], self.positions[index], self.group_ids[index],
                     pick(self.matrices), pick(self.scores), self.voxel_size,
                     {k: v[index] for k, v in self.extra.items()})

    def for_tomogram(self, tomo_id):
        """The picks of one tomogram."""
        return self.subset(self.tomo_ids == tomo_id)

    def rescaled(self, voxel_size):
        """The same picks expressed in voxels of another size (Å/voxel).

        Positions and matrix shifts scale by ``self.voxel_size / voxel_size``.
        """
        if self.voxel_size is None:
            raise ValueError("picks without a voxel size cannot be rescaled")
        factor = self.voxel_size / voxel_size
        matrices = None
        if self.matrices is not None:
            matrices = self.matrices.copy()
            matrices[:, :3, 3] *= factor
        return Picks(self.tomo_ids.copy(), self.positions * factor, self.group_ids.copy(),
                     matrices, None if self.scores is None else self.scores.copy(),
                     voxel_size, dict(self.extra))

    @staticmethod
    def concatenate(parts):
        """One table from several (all with or all without orientations/scores)."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        def cat(name):
            values = [getattr(p, name) for p in parts]
            if any(v is None for v in values):
                return None
            return np.concatenate(values)
        return Picks(cat("tomo_ids"), cat("positions"), cat("group_ids"), cat("matrices"),
                     cat("scores"), parts[0].voxel_size)
