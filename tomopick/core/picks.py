"""A table of picked particles: the plain-array form of a SetOfCoordinates3D.

`Picks` is what core functions take and return wherever a set of coordinates
travels (file formats, the evaluator, the consensus, the simulator's ground
truth); protocols convert it to and from Scipion objects.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from .atomic import save_npz

_EXTRA = "extra_"


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

    Examples
    --------
    >>> outside_volume([[0, 0, 0], [-0.6, 0, 0], [7.5, 3, 3], [7.6, 3, 3]], (8, 8, 8)).tolist()
    [False, True, False, True]
    >>> outside_volume([[-0.6, 0, 0]], (8, 8, 8), tolerance=1.0).tolist()
    [False]
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
        `tomopick.core.rotations`). Scipion objects store the inverse;
        `tomopick.convert` converts. None when the picks carry no orientation.
    scores : (N,) ndarray of float or None
    voxel_size : float or None
        Å per voxel of ``positions``.

    Examples
    --------
    >>> picks = Picks("TS_1", [[10, 20, 5], [30, 40, 6]], scores=[0.9, 0.4], voxel_size=10.0)
    >>> len(picks), picks.tomo_ids.tolist(), picks.group_ids.tolist(), picks.has_orientations
    (2, ['TS_1', 'TS_1'], [0, 0], False)
    >>> picks.subset(picks.scores > 0.5).positions.tolist()
    [[10.0, 20.0, 5.0]]
    >>> picks.rescaled(20.0).positions.tolist()
    [[5.0, 10.0, 2.5], [15.0, 20.0, 3.0]]
    """
    tomo_ids: np.ndarray
    positions: np.ndarray
    group_ids: np.ndarray = None
    matrices: np.ndarray = None
    scores: np.ndarray = None
    voxel_size: float = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        positions = np.asarray(self.positions, dtype=float)
        if positions.size and positions.shape[-1] != 3:
            # reshape(-1, 3) alone would turn 3 (x, y) rows into 2 picks
            raise ValueError(f"positions of shape {positions.shape}: expected (N, 3) (x, y, z)")
        self.positions = positions.reshape(-1, 3)
        n = len(self.positions)
        self.tomo_ids = np.asarray(self.tomo_ids, dtype=str).reshape(-1)
        if self.tomo_ids.size == 1 and n != 1:
            self.tomo_ids = np.repeat(self.tomo_ids, n)
        if len(self.tomo_ids) != n:
            raise ValueError(f"{len(self.tomo_ids)} tomo ids for {n} positions")
        self.group_ids = (np.zeros(n, dtype=int) if self.group_ids is None
                          else np.asarray(self.group_ids, dtype=int).reshape(-1))
        if self.matrices is not None:
            matrices = np.asarray(self.matrices, dtype=float)
            if matrices.shape[-2:] != (4, 4) or matrices.size != 16 * n:
                raise ValueError(f"matrices of shape {matrices.shape} for {n} positions: "
                                 f"expected ({n}, 4, 4)")
            self.matrices = matrices.reshape(n, 4, 4)
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

    def outside(self, shapes_xyz, tolerance=0.5):
        """Which picks lie outside the volume of their tomogram (`outside_volume`).

        Parameters
        ----------
        shapes_xyz : dict of str -> (nx, ny, nz)
            Tomogram sizes in voxels of the picks, for every tsId of the picks.
        tolerance : float, optional

        Returns
        -------
        (N,) ndarray of bool

        Examples
        --------
        >>> Picks(["a", "a", "b"], [[0, 0, 0], [10, 0, 0], [10, 0, 0]]).outside(
        ...     {"a": (8, 8, 8), "b": (16, 8, 8)}).tolist()
        [False, True, False]
        """
        out = np.zeros(len(self), dtype=bool)
        for ts_id in np.unique(self.tomo_ids):
            rows = self.tomo_ids == ts_id
            out[rows] = outside_volume(self.positions[rows], shapes_xyz[ts_id], tolerance)
        return out

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

    def save(self, path):
        """Write the table to an ``.npz`` file, atomically (`load` reads it back).

        The one on-disk form of a table that protocol steps, the viewer
        process and the CLI exchange. Absent matrices / scores / voxel size
        stay absent; ``extra`` arrays are kept (numeric or string dtypes).

        Parameters
        ----------
        path : str
            Written as given (no ``.npz`` is appended).

        Examples
        --------
        >>> import os, tempfile
        >>> workdir = tempfile.TemporaryDirectory()
        >>> path = os.path.join(workdir.name, "picks.npz")
        >>> Picks(["TS_1", "TS_2"], [[1, 2, 3], [4, 5, 6]], scores=[0.5, 0.7],
        ...       voxel_size=10.0, extra={"ids": np.array([7, 9])}).save(path)
        >>> back = Picks.load(path)
        >>> back.tomo_ids.tolist(), back.matrices, back.scores.tolist(), back.extra["ids"].tolist()
        (['TS_1', 'TS_2'], None, [0.5, 0.7], [7, 9])
        >>> workdir.cleanup()
        """
        data = {"tomo_ids": self.tomo_ids, "positions": self.positions,
                "group_ids": self.group_ids}
        if self.matrices is not None:
            data["matrices"] = self.matrices
        if self.scores is not None:
            data["scores"] = self.scores
        if self.voxel_size is not None:
            data["voxel_size"] = np.float64(self.voxel_size)
        for name, values in self.extra.items():
            data[_EXTRA + name] = np.asarray(values)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_npz(path, **data)

    @classmethod
    def load(cls, path):
        """Read a table written by `save`.

        Raises
        ------
        ValueError
            Naming the file when it is not a saved table.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a saved particle table ({err})") from None
        if "positions" not in arrays or "tomo_ids" not in arrays:
            raise ValueError(f"{path}: not a saved particle table (no positions / tomo_ids)")
        voxel_size = arrays.get("voxel_size")
        return cls(arrays["tomo_ids"], arrays["positions"], arrays.get("group_ids"),
                   arrays.get("matrices"), arrays.get("scores"),
                   None if voxel_size is None else float(voxel_size),
                   {name[len(_EXTRA):]: values for name, values in arrays.items()
                    if name.startswith(_EXTRA)})

    @staticmethod
    def concatenate(parts):
        """One table from several of the same voxel size.

        Parts without a voxel size (None) are taken to be in that of the
        others; rows keep the order of the parts. Orientations (scores) are kept when any part has them; rows of the
        parts without get the identity (score 0), which is what a Scipion
        coordinate without them holds. ``extra`` columns that every part
        has are concatenated.

        Raises
        ------
        ValueError
            If there is nothing to concatenate or the voxel sizes differ.

        Examples
        --------
        >>> a = Picks("TS_1", [[1, 2, 3]], matrices=np.eye(4)[None] * 2, voxel_size=10.0)
        >>> b = Picks("TS_2", [[4, 5, 6]], scores=[0.5], voxel_size=10.0)
        >>> both = Picks.concatenate([a, b])
        >>> both.tomo_ids.tolist(), both.matrices[:, 0, 0].tolist(), both.scores.tolist()
        (['TS_1', 'TS_2'], [2.0, 1.0], [0.0, 0.5])
        """
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        sizes = {p.voxel_size for p in parts if p.voxel_size is not None}
        if len(sizes) > 1:
            raise ValueError(f"cannot concatenate picks of different voxel sizes "
                             f"{sorted(sizes)}: rescale them first")

        def cat(name, default):
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            return np.concatenate([default(len(p)) if v is None else v
                                   for p, v in zip(parts, values)])

        extra = {name: np.concatenate([p.extra[name] for p in parts])
                 for name in parts[0].extra if all(name in p.extra for p in parts)}
        return Picks(np.concatenate([p.tomo_ids for p in parts]),
                     np.concatenate([p.positions for p in parts]),
                     np.concatenate([p.group_ids for p in parts]),
                     cat("matrices", lambda n: np.tile(np.eye(4), (n, 1, 1))),
                     cat("scores", np.zeros), sizes.pop() if sizes else None, extra)
