"""Lipid membranes in a tomogram, for PickET's stage 2 to tell membrane pieces from particles.

PickET's clustering puts membranes in the particle class: after its sigma-2
blur and 5-voxel windows a bilayer is a sheet of the mask about 12 voxels
thick, which the watershed cuts into particle-sized pieces.  Most are flat and
dropped as sheets (`localize.object_blobness`), but on small vesicles (radii
of one or two particle diameters) a piece is a curved cap, and where a
membrane protein or a touching particle thickens it, it passes for a particle;
a particle touching a membrane, merged with it, is dropped with it.

The mask cannot tell them apart; the density can.  A membrane is where the
density's gradients, gathered over a few voxels, all point one way (across
the sheet) and where the density peaks along that direction (the bilayer's
mid-surface).  `find_membranes` takes the structure tensor of the blurred
volume's gradient: its planarity (l1 - l2) / l1 high, its energy l1 in the
volume's top decile, and the second derivative across the sheet (along the
tensor's first eigenvector) strongly negative on the dense side; the voxels
passing all three, in connected sheets of a few particle cross-sections,
are mid-surfaces.  A particle's gradients point every way at its centre,
and at its border the density has no peak across the border: neither is
taken.  Only the mask's voxels are candidates (membranes are in PickET's
particle class), and nothing within the tensor's reach of a face (planar
artefacts of the padding).  Returned is the band within `MEMBRANE_REACH` of
the mid-surfaces: what the mask holds of the membrane (measured on the
lamellae of ``bench_picket.py --lamellae``: 92-97 % of the vesicles'
mid-surface points in it, 0-1 of 260 particle centres; nothing on lamellae
without membranes).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.ndimage as ndi

from .blur import gaussian_slab, hessian_at

__all__ = ["MEMBRANE_PLANARITY", "MEMBRANE_REACH", "find_membranes"]

#: gradient scale and integration scale of the structure tensor (tomogram
#: voxels): a bilayer (two leaflets ~40 A apart) after PickET's sigma-2 blur
GRADIENT_SIGMA = 1.5
TENSOR_SIGMA = 3.0
#: (l1 - l2) / l1 of the structure tensor above which the gradients point one way
MEMBRANE_PLANARITY = 0.7
#: energy l1 above this quantile of the volume's (the gradients are the sample's)
ENERGY_QUANTILE = 90.0
#: curvature across the sheet, in standard deviations of the volume's: a density peak
RIDGE_STD = 1.0
#: smallest mid-surface, in particle cross-sections (pi D^2 / 4)
MIN_SHEET_AREA = 3.0
#: half-thickness of a membrane in PickET's mask (tomogram voxels): the
#: bilayer's half-width plus the reach of the sigma-2 blur (2 sigma) and of
#: the 5-voxel windows (2)
MEMBRANE_REACH = 6.0
# the volume's statistics are taken on every SAMPLE-th voxel along each axis
_SAMPLE = 4


def find_membranes(volume, mask, particle_diameter, step=1, n_threads=2,
                   slab_voxels=4_000_000):
    """The band of voxels within `MEMBRANE_REACH` of a membrane's mid-surface.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        The preprocessed tomogram (`segment.preprocess`), on the grid of
        ``step`` (every step-th voxel) like ``mask``.
    mask : (nz, ny, nx) bool array
        PickET's particle mask: which side of the solvent level is dense
        (particles and membranes alike).
    particle_diameter : float
        Tomogram voxels.
    step : int
        Grid step of ``volume`` and ``mask``; lengths are divided by it.
    n_threads : int
    slab_voxels : int
        Voxels per z-slab computed at a time (with a halo of the filters' reach).

    Returns
    -------
    (nz, ny, nx) bool ndarray
        On the grid of ``volume``.

    Raises
    ------
    ValueError
        If the volume is not 3D or the mask's shape differs.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((40, 64, 64))
    >>> volume = rng.normal(0, 0.1, z.shape).astype(np.float32)
    >>> volume -= np.exp(-0.5 * ((z - 20) / 1.5) ** 2)                 # a dark sheet at z = 20
    >>> volume -= ((x - 32) ** 2 + (y - 14) ** 2 + (z - 8) ** 2 <= 16)   # a dark ball
    >>> volume = ndi.gaussian_filter(volume, 2.0)
    >>> band = find_membranes(volume, volume < np.percentile(volume, 20), particle_diameter=8)
    >>> [bool(band[20, 40, 40]), bool(band[8, 14, 32]), bool(band[30, 40, 40])]  # sheet, ball
    [True, False, False]
    """
    if np.ndim(volume) != 3 or np.shape(mask) != np.shape(volume):
        raise ValueError(f"membranes need a 3D volume and a mask of its shape, got "
                         f"{np.shape(volume)} and {np.shape(mask)}")
    nz = volume.shape[0]
    sigma_g, rho = GRADIENT_SIGMA / step, TENSOR_SIGMA / step
    diameter = float(particle_diameter) / step
    sample = np.asarray(volume[::_SAMPLE, ::_SAMPLE, ::_SAMPLE], np.float32)
    inside = np.asarray(mask[::_SAMPLE, ::_SAMPLE, ::_SAMPLE], bool)
    # dense = the side of the solvent level the particle mask lies on
    dense = -1.0 if inside.any() and np.median(sample[inside]) < np.median(sample) else 1.0
    # the reach of the tensor at a voxel: its smoothing on the coarse grid
    # (in pairs of slices), the gradient's difference and the density's blur
    halo = 2 * (int(1.5 * rho + 0.5) + 1) + 1 + int(4 * sigma_g + 0.5)
    rows = -(-nz // max(n_threads, -(-volume.size // slab_voxels)))
    slabs = [(z0, min(nz, z0 + rows)) for z0 in range(0, nz, rows)]

    def measure(slab):
        return _slab_tensor(volume, mask, slab, halo, sigma_g, rho, dense)

    with ThreadPoolExecutor(n_threads) as pool:
        parts = list(pool.map(measure, slabs))
    energy = np.concatenate([p["sample_energy"] for p in parts])
    ridge = np.concatenate([p["sample_ridge"] for p in parts])
    band = np.zeros(volume.shape, bool)
    if len(energy) == 0:
        return band
    energy_min = np.percentile(energy, ENERGY_QUANTILE)
    ridge_min = RIDGE_STD * np.std(ridge)
    # near a face the tensor's window reaches past the volume (edge-padded:
    # flat), where planar artefacts arise (measured: sheets along the x faces
    # of a lamella without membranes); nothing is found there
    margin = int(3 * rho + 0.5) + 1
    lo, hi = np.full(3, margin), np.array(volume.shape) - margin
    for p in parts:
        keep = (p["energy"] > energy_min) & (p["ridge"] > ridge_min)
        keep &= np.all((p["coords"] >= lo) & (p["coords"] < hi), axis=1)
        band[tuple(p["coords"][keep].T)] = True
    labels, n = ndi.label(band)
    if n == 0:
        return band
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    band = (sizes >= MIN_SHEET_AREA * np.pi / 4 * diameter ** 2)[labels]
    del labels
    reach = int(round(MEMBRANE_REACH / step))
    if reach and band.any():
        # dilated inside the sheets' bounding box only (a few vesicles: a
        # fraction of the volume)
        found = np.nonzero(band)
        box = tuple(slice(max(0, int(f.min()) - reach), int(f.max()) + reach + 1) for f in found)
        band[box] = ndi.binary_dilation(band[box], iterations=reach)
    return band


def _slab_tensor(volume, mask, slab, halo, sigma_g, rho, dense):
    """Structure-tensor measures of one z-slab at its mask voxels and at a sample of all.

    Returns a dict: 'coords' (K, 3) of the slab's mask voxels whose planarity
    exceeds `MEMBRANE_PLANARITY`, their 'energy' and 'ridge' (curvature across
    the sheet on the dense side), and 'sample_energy' / 'sample_ridge' on the
    `_SAMPLE` grid of the slab (for the volume's thresholds).  Membranes are
    in PickET's particle class: only the mask's voxels can be mid-surfaces
    (the tensor is evaluated there, a twentieth of the voxels or so).
    """
    z0, z1 = slab
    nz = volume.shape[0]
    # an even first slice: the coarse grid's pairs of slices are the volume's
    # whatever the slabs (the result does not depend on them)
    a, b = max(0, z0 - halo), min(nz, z1 + halo)
    a -= a % 2
    smooth = gaussian_slab(volume[a:b], 0, b - a, sigma_g, mode="nearest")
    if dense < 0:
        np.negative(smooth, out=smooth)
    gradient = np.gradient(smooth)
    sampled = np.zeros((z1 - z0,) + volume.shape[1:], bool)
    sampled[(-z0) % _SAMPLE::_SAMPLE, ::_SAMPLE, ::_SAMPLE] = True
    wanted = sampled | np.asarray(mask[z0:z1], bool)
    flat = np.flatnonzero(wanted)
    coords = np.argwhere(wanted)
    # the tensor's six components at the wanted voxels, (6, K)
    rows = np.empty((6, len(flat)))
    # the products are integrated on a grid twice as coarse (2 x 2 x 2 means,
    # then the Gaussian of half the sigma): an eighth of the smoothing's work
    half = [max(1, n // 2) for n in smooth.shape]
    cz, cy, cx = (np.minimum(c // 2, n - 1) for c, n in
                  zip((coords[:, 0] + (z0 - a), coords[:, 1], coords[:, 2]), half))
    k = 0
    for i in range(3):
        for j in range(i, 3):
            coarse = _pair_means(gradient[i] * gradient[j])
            coarse = gaussian_slab(coarse, 0, len(coarse), rho / 2, truncate=3.0,
                                   mode="nearest")
            rows[k] = coarse[cz, cy, cx]
            k += 1
    del gradient, coarse
    l1, l2 = _largest_eigenvalues(rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        planarity = np.where(l1 > 0, (l1 - l2) / l1, 0.0)
    in_sample = sampled.ravel()[flat]
    in_planar = (planarity > MEMBRANE_PLANARITY) & np.asarray(mask[z0:z1], bool).ravel()[flat]
    use = in_planar | in_sample
    coords, rows, l1 = coords[use], rows[:, use], l1[use]
    in_planar, in_sample = in_planar[use], in_sample[use]
    normal = _first_eigenvector(rows, l1)
    # the smoothed density's curvature at those voxels along the normal
    hessian = hessian_at(smooth, coords + [z0 - a, 0, 0], np.float64)
    ridge = np.zeros(len(coords))
    for i in range(3):
        ridge -= normal[:, i] ** 2 * hessian[:, i, i]
        for j in range(i + 1, 3):
            ridge -= 2 * normal[:, i] * normal[:, j] * hessian[:, i, j]
    coords[:, 0] += z0
    return {"coords": coords[in_planar], "energy": l1[in_planar], "ridge": ridge[in_planar],
            "sample_energy": l1[in_sample], "sample_ridge": ridge[in_sample]}


def _pair_means(volume):
    """Means of 2 x 2 x 2 blocks (an axis of odd length loses its last plane; length 1 stays)."""
    for axis in range(3):
        n = volume.shape[axis]
        if n > 1:
            even = volume.take(np.arange(0, n - 1, 2), axis=axis)
            volume = even + volume.take(np.arange(1, n, 2), axis=axis)
    return volume * np.float32(1 / 8)


def _largest_eigenvalues(tensor):
    """The two largest eigenvalues of symmetric 3x3 matrices, closed form.

    ``tensor`` = (xx, xy, xz, yy, yz, zz) arrays of one shape (float64);
    returns (l1, l2), l1 >= l2 (the trigonometric solution of the cubic).
    """
    a11, a12, a13, a22, a23, a33 = tensor
    q = (a11 + a22 + a33) / 3
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p = np.sqrt((b11 ** 2 + b22 ** 2 + b33 ** 2 + 2 * (a12 ** 2 + a13 ** 2 + a23 ** 2)) / 6)
    det = (b11 * (b22 * b33 - a23 ** 2) - a12 * (a12 * b33 - a23 * a13)
           + a13 * (a12 * a23 - b22 * a13))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(p > 0, det / (2 * p ** 3), 0.0)
    phi = np.arccos(np.clip(r, -1, 1)) / 3
    l1 = q + 2 * p * np.cos(phi)
    l3 = q + 2 * p * np.cos(phi + 2 * np.pi / 3)
    return l1, 3 * q - l1 - l3


def _first_eigenvector(rows, l1):
    """Unit eigenvectors of eigenvalue ``l1`` of symmetric 3x3 matrices given as (6, N) rows.

    The cross product of two rows of A - l1 I (the largest of the three
    pairs, for stability); (N, 3) in (z, y, x) order like the rows' axes.
    """
    a11, a12, a13, a22, a23, a33 = rows
    r1 = np.stack([a11 - l1, a12, a13], 1)
    r2 = np.stack([a12, a22 - l1, a23], 1)
    r3 = np.stack([a13, a23, a33 - l1], 1)
    candidates = np.stack([np.cross(r1, r2), np.cross(r1, r3), np.cross(r2, r3)])
    norms = np.linalg.norm(candidates, axis=2)
    best = np.argmax(norms, axis=0)
    index = np.arange(len(l1))
    vector = candidates[best, index]
    length = norms[best, index]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(length[:, None] > 0, vector / length[:, None], 0.0)
