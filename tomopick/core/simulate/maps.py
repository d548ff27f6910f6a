"""Real molecular shapes for the phantom simulator: density maps and atomic models.

`MapShape` wraps a density map (an EMDB map, or a PDB model splatted to a
grid by `pdb_density`) with the interface the simulator's analytic shapes
have: density at points given in Å of the particle's canonical frame, a
bounding radius and a shifted copy. `map_particle_class` makes the entry
that `tomopick.core.simulate.simulate_tomogram` takes in ``extra_classes``.

The canonical frame of a map is its own grid: x, y, z along the map's axes,
origin at the centre element ``n // 2`` (then moved by the simulator so that
the rendered density's centroid is the particle position). Densities are
scaled so that the mean inside the molecular envelope (voxels above 10 % of
the maximum) is 1, like the analytic classes' protein density.
"""
import numpy as np
from scipy import ndimage

from ..formats.mrc import mrc_header_info, read_mrc

#: Electrons of the elements found in macromolecular models (others count as carbon).
_ELECTRONS = {"H": 1, "C": 6, "N": 7, "O": 8, "P": 15, "S": 16, "MG": 12, "ZN": 30,
              "FE": 26, "CA": 20, "K": 19, "NA": 11, "CL": 17, "MN": 25}


def read_pdb_atoms(path):
    """Atom positions (x, y, z) in Å and their electron counts from a PDB file.

    Parameters
    ----------
    path : str
        A PDB file (ATOM / HETATM records; waters skipped).

    Returns
    -------
    xyz : (N, 3) ndarray of float
    electrons : (N,) ndarray of float

    Raises
    ------
    ValueError
        If the file cannot be read or holds no atoms, naming it.

    Examples
    --------
    >>> import os, tempfile
    >>> lines = ["ATOM      1  CA  ALA A   1      11.000  12.000  13.000  1.00  0.00           C",
    ...          "ATOM      2  O   ALA A   1       1.000   2.000   3.000  1.00  0.00           O",
    ...          "HETATM    3  O   HOH A   2       0.000   0.000   0.000  1.00  0.00           O"]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "two.pdb")
    ...     with open(path, "w") as fh:
    ...         _ = fh.write("\\n".join(lines) + "\\n")
    ...     xyz, electrons = read_pdb_atoms(path)
    ...     vol = pdb_density(path, 2.0)
    >>> xyz.tolist(), electrons.tolist()                 # the water is skipped
    ([[11.0, 12.0, 13.0], [1.0, 2.0, 3.0]], [6.0, 8.0])
    >>> vol.ndim, vol.shape[0] % 2, round(float(vol.sum()), 3)
    (3, 1, 14.0)
    """
    xyz, weights = [], []
    try:
        with open(path) as fh:
            for line in fh:
                if not line.startswith(("ATOM", "HETATM")) or line[17:20] == "HOH":
                    continue
                xyz.append((float(line[30:38]), float(line[38:46]), float(line[46:54])))
                element = line[76:78].strip().upper() or line[12:14].strip().upper()
                weights.append(_ELECTRONS.get(element, 6))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read atoms from the PDB file {path}: {err}") from err
    if not xyz:
        raise ValueError(f"the PDB file {path} has no ATOM/HETATM records")
    return np.array(xyz, dtype=float), np.array(weights, dtype=float)


def splat_atoms(xyz, weights, voxel_size, resolution=None, margin=10.0):
    """Density of atoms on a cubic grid by trilinear deposition and a Gaussian blur.

    Parameters
    ----------
    xyz : (N, 3) array of float
        Atom positions (x, y, z), Å.
    weights : (N,) array of float
        Scattering weight of each atom (electrons).
    voxel_size : float
        Å per voxel of the grid.
    resolution : float, optional
        Å; the blur is a Gaussian of FWHM ``resolution`` (default two voxels).
    margin : float
        Å of empty space around the atoms.

    Returns
    -------
    (n, n, n) ndarray of float32
        Indexed [z, y, x]; the atoms' weighted centroid at the centre element
        ``n // 2``.

    Examples
    --------
    >>> v = splat_atoms(np.array([[0.0, 0, 0], [10, 0, 0]]), np.ones(2), 2.0)
    >>> np.allclose(ndimage.center_of_mass(v), v.shape[0] // 2, atol=1e-3), v.dtype
    (True, dtype('float32'))
    >>> round(float(v.sum()), 3)
    2.0
    """
    xyz = np.asarray(xyz, dtype=float)
    weights = np.asarray(weights, dtype=float)
    resolution = 2 * voxel_size if resolution is None else float(resolution)
    centroid = (xyz * weights[:, None]).sum(0) / weights.sum()
    rel = (xyz - centroid) / voxel_size
    half = int(np.ceil(np.abs(rel).max() + (margin + 2 * resolution) / voxel_size)) + 1
    n = 2 * half + 1
    grid = np.zeros(n ** 3, dtype=np.float64)
    pos = rel[:, ::-1] + half                         # [z, y, x] index coordinates
    base = np.floor(pos).astype(int)
    frac = pos - base
    for corner in range(8):
        d = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        w = weights * np.prod(np.where(d, frac, 1 - frac), axis=1)
        idx = np.ravel_multi_index((base + d).T, (n, n, n))
        grid += np.bincount(idx, w, n ** 3)
    sigma = resolution / 2.3548 / voxel_size
    return ndimage.gaussian_filter(grid.reshape(n, n, n), sigma).astype(np.float32)


def pdb_density(path, voxel_size, resolution=None):
    """Density map of a PDB model (see `splat_atoms`), Å per voxel ``voxel_size``.

    The atoms are weighted by their electrons (`read_pdb_atoms`); see the
    example there.

    Examples
    --------
    >>> import os, tempfile
    >>> lines = ["ATOM      1  N   GLY A   1       0.000   0.000   0.000  1.00  0.00           N",
    ...          "ATOM      2  CA  GLY A   1       6.000   0.000   0.000  1.00  0.00           C",
    ...          "ATOM      3  O   GLY A   1       0.000   8.000   0.000  1.00  0.00           O"]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "gly.pdb")
    ...     with open(path, "w") as fh:
    ...         _ = fh.write("\\n".join(lines) + "\\n")
    ...     volume = pdb_density(path, voxel_size=2.0, resolution=4.0)
    >>> f"{volume.sum():.2f}"                     # 7 + 6 + 8 electrons
    '21.00'
    >>> centre = np.array(ndimage.center_of_mass(volume))  # the weighted centroid at n // 2
    >>> np.allclose(centre, volume.shape[0] // 2, atol=1e-3)
    True
    """
    xyz, electrons = read_pdb_atoms(path)
    return splat_atoms(xyz, electrons, voxel_size, resolution)


class MapShape:
    """A density map evaluated at points in Å of its canonical frame.

    Parameters
    ----------
    volume : (n, n, n) array of float
        Density, positive protein, indexed [z, y, x]; negative values
        (noise around an EM map) are clipped to 0.
    voxel_size : float
        Å per voxel of ``volume``.
    offset : (3,) array of float
        Å; the map's centre element sits at ``offset`` of the canonical frame.
    threshold : float
        Fraction of the maximum that defines the molecular envelope (for the
        radius and the density scale).

    Examples
    --------
    >>> vol = np.zeros((9, 9, 9), np.float32)
    >>> vol[2:7, 2:7, 2:7] = 3.0                          # a 5-voxel cube, 2 Å voxels
    >>> shape = MapShape(vol, 2.0)
    >>> shape.density([[0, 0, 0], [20, 0, 0]]).tolist()  # envelope mean scaled to 1
    [1.0, 0.0]
    >>> shape.shifted([2.0, 0, 0]).density([[2.0, 0, 0]]).tolist()
    [1.0]
    """

    def __init__(self, volume, voxel_size, offset=(0.0, 0.0, 0.0), threshold=0.1,
                 _scaled=False):
        vol = np.clip(np.asarray(volume, dtype=np.float32), 0, None)
        if vol.ndim != 3 or not np.isfinite(vol).all() or vol.max() <= 0:
            raise ValueError("a particle map must be a finite 3D volume with positive density")
        envelope = vol > threshold * vol.max()
        if not _scaled:
            vol = vol / vol[envelope].mean()
        self.volume = vol
        self.voxel_size = float(voxel_size)
        self.offset = np.asarray(offset, dtype=float)
        self.threshold = threshold
        self.center = np.array([n // 2 for n in vol.shape[::-1]], dtype=float)   # (x, y, z)
        zz, yy, xx = np.nonzero(envelope)
        r = np.sqrt(((np.stack([xx, yy, zz], 1) - self.center) ** 2).sum(1)).max()
        self._radius = float(r + 1) * self.voxel_size

    def shifted(self, offset):
        """The same map moved by ``offset`` (Å)."""
        return MapShape(self.volume, self.voxel_size, self.offset + offset, self.threshold,
                        _scaled=True)

    def radius(self):
        """Radius (Å) about the canonical origin containing the envelope."""
        return self._radius + float(np.linalg.norm(self.offset))

    def density(self, pts):
        """Density at (N, 3) points (x, y, z) in Å of the canonical frame (float32)."""
        pts = np.asarray(pts, dtype=np.float32)
        idx = (pts - self.offset.astype(np.float32)) / np.float32(self.voxel_size) \
            + self.center.astype(np.float32)
        return ndimage.map_coordinates(self.volume, idx[:, ::-1].T, order=1, mode="constant",
                                       cval=0.0, prefilter=False).astype(np.float32)


def map_particle_class(name, volume, voxel_size, target_voxel_size=None):
    """A simulator particle class from a density map.

    Parameters
    ----------
    name : str
        Class name in the ground truth.
    volume : (n, n, n) array of float or str
        The density, or the path of an MRC map (its header gives the voxel
        size when ``voxel_size`` is None) or of a PDB model (``.pdb``,
        splatted at ``target_voxel_size / 2``).
    voxel_size : float or None
        Å per voxel of ``volume``.
    target_voxel_size : float, optional
        Voxel size of the phantom: the map is low-passed to its Nyquist
        (a Gaussian of sigma half a target voxel) so that rendering at the
        coarser grid does not alias.

    Returns
    -------
    dict
        ``dict(name=name, kind="free", shape=MapShape)``, the form
        ``simulate_tomogram(extra_classes={id: ...})`` takes.

    Examples
    --------
    >>> vol = np.zeros((15, 15, 15), np.float32)
    >>> vol[4:11, 5:10, 6:9] = 1.0                        # a 7 x 5 x 3 voxel brick (z, y, x)
    >>> cls = map_particle_class("brick", vol, 4.0, target_voxel_size=8.0)
    >>> cls["name"], cls["kind"], type(cls["shape"]).__name__
    ('brick', 'free', 'MapShape')
    >>> 20 < cls["shape"].radius() < 40                   # Å, about half the 28 Å diagonal
    True
    """
    if isinstance(volume, str):
        if volume.lower().endswith((".pdb", ".ent")):
            voxel_size = (target_voxel_size or 4.0) / 2
            volume = pdb_density(volume, voxel_size, resolution=2 * voxel_size)
        else:
            if voxel_size is None:
                voxel_size = float(mrc_header_info(volume)["voxel_size"])
            volume = read_mrc(volume)
    if voxel_size is None or voxel_size <= 0:
        raise ValueError(f"the voxel size of the map for class {name!r} must be positive, "
                         f"got {voxel_size}")
    vol = np.asarray(volume, dtype=np.float32)
    if target_voxel_size and target_voxel_size > voxel_size:
        vol = ndimage.gaussian_filter(vol, 0.5 * target_voxel_size / voxel_size)
    return dict(name=str(name), kind="free", shape=MapShape(vol, voxel_size))
