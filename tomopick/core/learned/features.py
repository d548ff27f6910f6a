"""Rotation-invariant multi-scale filter stack of a tomogram (the voxel descriptor).

Every voxel is described by filter responses at a few scales tied to the
particle diameter, all invariant to rotations of the particle (the manner of
ilastik's pixel classification): at each scale sigma

- Gaussian-smoothed intensity,
- difference of Gaussians (sigma minus the next scale),
- gradient magnitude (scale-normalised, times sigma),
- Laplacian of Gaussian (trace of the Hessian, times sigma^2),
- the three Hessian eigenvalues (sorted, times sigma^2),
- the three eigenvalues of the structure tensor (gradient outer products
  integrated over another sigma, times sigma^2).

The stack is computed on a *working grid*: the tomogram Fourier-cropped
(`tomopick.core.resample.fourier_crop_slabs`) so that the particle spans about
`WORKING_DIAMETER` voxels, whatever the tomogram's voxel size. The same model
therefore applies to tomograms at other sampling rates, and the cost no longer
grows with the particle size. The stack is computed in blocks with a halo
(z, y and x: a slab over a whole 750 x 750 plane with its halo would take
gigabytes), so only a block of features exists at a time. Everything is
float32.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from tomopick.core.formats.mrc import release_pages, volume_stats
from tomopick.core.resample import fourier_crop_slabs

#: Particle diameter on the working grid, voxels: large enough to resolve the
#: particle's shape at the finest scale (diameter / 8 = 1.5 voxels), small
#: enough that the filter stack of a 128 x 256 x 256 tomogram takes seconds.
WORKING_DIAMETER = 12.0
#: Scales of the stack as fractions of the particle diameter (working voxels).
SCALE_FRACTIONS = (0.125, 0.25, 0.5)
#: Gaussian kernels are truncated at this many sigmas.
TRUNCATE = 3.0
FEATURES_PER_SCALE = ("gaussian", "dog", "gradient", "laplacian", "hessian1", "hessian2",
                      "hessian3", "structure1", "structure2", "structure3")


def feature_names(scales):
    """Names of the stack's channels, in order ('gaussian@1.5', ...).

    Examples
    --------
    >>> names = feature_names((1.5, 3.0))
    >>> len(names), names[:3], names[-1]
    (20, ['gaussian@1.5', 'dog@1.5', 'gradient@1.5'], 'structure3@3')
    """
    return [f"{name}@{s:g}" for s in scales for name in FEATURES_PER_SCALE]


def symmetric_eigenvalues(a11, a22, a33, a12, a13, a23):
    """Eigenvalues of symmetric 3x3 matrices given by their six entries (closed form).

    The trigonometric solution of the characteristic cubic (Smith 1961), on
    whole arrays at once: ~20x faster than ``numpy.linalg.eigvalsh`` on a
    (N, 3, 3) stack and without its (N, 3, 3) copy.

    Parameters
    ----------
    a11, a22, a33, a12, a13, a23 : arrays of the same shape
        Matrix entries (float32 keeps float32).

    Returns
    -------
    (3,) + shape ndarray
        Eigenvalues in increasing order.

    Examples
    --------
    >>> m = np.array([[2., 1, 0], [1, 2, 0], [0, 0, 5]])
    >>> symmetric_eigenvalues(*(np.array([m[i, j]]) for i, j in
    ...                         ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)))).ravel().round(6)
    array([1., 3., 5.])
    """
    q = (a11 + a22 + a33) / 3
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p1 = a12 * a12 + a13 * a13 + a23 * a23
    p = np.sqrt((b11 * b11 + b22 * b22 + b33 * b33 + 2 * p1) / 6)
    safe = np.where(p > 0, p, 1)
    # det(B) / 2 with B = (A - qI) / p; |r| <= 1 in exact arithmetic
    det = (b11 * (b22 * b33 - a23 * a23) - a12 * (a12 * b33 - a23 * a13)
           + a13 * (a12 * a23 - b22 * a13))
    r = np.clip(det / (2 * safe ** 3), -1, 1)
    phi = np.arccos(r) / 3
    largest = q + 2 * p * np.cos(phi)
    smallest = q + 2 * p * np.cos(phi + np.float32(2 * np.pi / 3))
    middle = 3 * q - largest - smallest
    return np.stack([smallest, middle, largest])


@dataclass(frozen=True)
class WorkingGrid:
    """How a tomogram maps onto its working grid (Fourier-cropped).

    Along each axis an element at index ``n // 2`` of the tomogram maps to
    index ``m // 2`` of the working grid and offsets scale by ``m / n``
    (`fourier_crop_to`).

    Attributes
    ----------
    shape : (nz, ny, nx)
        The tomogram's shape.
    working_shape : (mz, my, mx)
    """
    shape: tuple
    working_shape: tuple

    @property
    def scale_xyz(self):
        """Working voxels per tomogram voxel along x, y, z."""
        return np.array([m / n for m, n in zip(self.working_shape, self.shape)])[::-1]

    def to_working(self, positions):
        """Tomogram (x, y, z) voxels -> working-grid (x, y, z) voxels."""
        n = np.array([s // 2 for s in self.shape])[::-1]
        m = np.array([s // 2 for s in self.working_shape])[::-1]
        return m + (np.asarray(positions, dtype=float).reshape(-1, 3) - n) * self.scale_xyz

    def to_tomogram(self, positions):
        """Working-grid (x, y, z) voxels -> tomogram (x, y, z) voxels."""
        n = np.array([s // 2 for s in self.shape])[::-1]
        m = np.array([s // 2 for s in self.working_shape])[::-1]
        return n + (np.asarray(positions, dtype=float).reshape(-1, 3) - m) / self.scale_xyz

    def upsample(self, working_volume, out=None, slab=16):
        """A working-grid map brought back onto the tomogram's grid (trilinear), float32.

        Parameters
        ----------
        working_volume : (mz, my, mx) array
        out : (nz, ny, nx) array, optional
            Where to write it (e.g. the memory map of
            `tomopick.core.formats.create_mrc`): filled ``slab`` z-planes at a
            time, its pages released after each, and returned.
        slab : int, optional
        """
        working_volume = np.asarray(working_volume, np.float32)
        scale = np.array([m / n for m, n in zip(self.working_shape, self.shape)])
        n = np.array([s // 2 for s in self.shape])
        m = np.array([s // 2 for s in self.working_shape])
        if out is None:
            out = np.empty(tuple(self.shape), np.float32)
        elif tuple(out.shape) != tuple(self.shape):
            raise ValueError(f"the output has shape {tuple(out.shape)}, the tomogram "
                             f"{tuple(self.shape)}")
        for z0 in range(0, self.shape[0], slab):
            part = out[z0:z0 + slab]
            # output plane z0 + k samples the working grid at scale (z0 + k) + offset
            ndi.affine_transform(working_volume, np.diag(scale),
                                 offset=m - n * scale + scale * (z0, 0, 0),
                                 output_shape=part.shape, output=part, order=1,
                                 mode="nearest")
            release_pages(out)
        return out


def working_volume(volume, voxel_size, working_voxel_size):
    """The tomogram on the working grid, standardised (zero mean, unit variance).

    Parameters
    ----------
    volume : (nz, ny, nx) array
        The tomogram (a memory map is read once).
    voxel_size : float
        Å per voxel of ``volume``.
    working_voxel_size : float
        Å per working voxel; must not be finer than ``voxel_size`` (the
        tomogram is not upsampled).

    Returns
    -------
    work : (mz, my, mx) float32 ndarray
    grid : WorkingGrid

    Raises
    ------
    ValueError
        If the tomogram is coarser than the working grid or constant.

    Examples
    --------
    >>> vol = np.random.default_rng(0).normal(size=(20, 40, 40)).astype(np.float32)
    >>> work, grid = working_volume(vol, 5.0, 10.0)
    >>> work.shape, grid.to_working([[20, 20, 10]]).tolist()
    ((10, 20, 20), [[10.0, 10.0, 5.0]])
    """
    if np.ndim(volume) != 3:
        raise ValueError(f"tomogram must be 3D [z, y, x], got shape {np.shape(volume)}")
    factor = float(working_voxel_size) / float(voxel_size)
    if factor < 1 - 1e-6:
        raise ValueError(f"the tomogram's voxel size {voxel_size:g} Å is coarser than the "
                         f"model's working voxel size {working_voxel_size:g} Å")
    shape = tuple(int(n) for n in np.shape(volume))
    working_shape = tuple(max(1, int(round(n / factor))) for n in shape)
    # streamed: a memory-mapped tomogram is read a few planes at a time
    work = fourier_crop_slabs(volume, working_shape)
    _, _, mean, std = volume_stats(work)
    if not std > 0:
        raise ValueError("the tomogram is constant: there is nothing to pick")
    work -= np.float32(mean)
    work *= np.float32(1.0 / std)
    return work, WorkingGrid(shape, working_shape)


def _halo(scales):
    """Voxels a block needs on each side for exact features at its core."""
    # largest support: the DoG partner (2 sigma_max) or the structure tensor
    # (a derivative at sigma_max then integration at sigma_max)
    return int(np.ceil(TRUNCATE * 2 * max(scales))) + 2


def _scale_features(block, core, sigma, next_sigma, smoothed):
    """The 10 features of one scale at the core voxels of a smoothed block."""
    g = smoothed[sigma]
    out = [g[core], (g - smoothed[next_sigma])[core]]
    grads = np.gradient(g)
    gz, gy, gx = grads
    out.append(np.sqrt(gz[core] ** 2 + gy[core] ** 2 + gx[core] ** 2) * np.float32(sigma))
    s2 = np.float32(sigma * sigma)
    # second derivatives by central differences of the smoothed volume (sigma
    # >= 1.5 voxels: the finite-difference error is far below the noise)
    hzz, hzy, hzx = (d[core] for d in np.gradient(gz))
    hyy, hyx = (d[core] for d in np.gradient(gy, axis=(1, 2)))
    hxx = np.gradient(gx, axis=2)[core]
    out.append((hzz + hyy + hxx) * s2)
    out.extend(symmetric_eigenvalues(hxx, hyy, hzz, hyx, hzx, hzy) * s2)
    products = (gx * gx, gy * gy, gz * gz, gx * gy, gx * gz, gy * gz)
    tensor = [ndi.gaussian_filter(p, sigma, truncate=TRUNCATE)[core] for p in products]
    out.extend(symmetric_eigenvalues(*tensor) * s2)
    return out


def block_features(work, block, scales):
    """The filter stack at a block of the working grid.

    Parameters
    ----------
    work : (mz, my, mx) float32 ndarray
        The standardised working volume (`working_volume`).
    block : tuple of 3 slices
        Core voxels [z, y, x] (steps of 1); the halo around them is read
        from ``work``.
    scales : sequence of float
        Gaussian sigmas, working voxels, increasing.

    Returns
    -------
    (F, dz, dy, dx) float32 ndarray
        F = 10 per scale, in `feature_names` order. Identical to the same
        voxels of the whole-volume stack (scipy's 'reflect' boundary at the
        volume's faces, exact halo inside).

    Examples
    --------
    >>> work = np.random.default_rng(0).standard_normal((20, 16, 16)).astype(np.float32)
    >>> whole = block_features(work, (slice(0, 20), slice(0, 16), slice(0, 16)), (1.0, 2.0))
    >>> part = block_features(work, (slice(8, 12), slice(4, 10), slice(0, 16)), (1.0, 2.0))
    >>> whole.shape, part.shape
    ((20, 20, 16, 16), (20, 4, 6, 16))
    >>> bool(np.allclose(part, whole[:, 8:12, 4:10], atol=1e-5))   # a block is the same voxels
    True
    """
    h = _halo(scales)
    outer = tuple(slice(max(0, b.start - h), min(n, b.stop + h))
                  for b, n in zip(block, work.shape))
    data = np.asarray(work[outer], np.float32)
    core = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(block, outer))
    sigmas = list(scales) + [2 * scales[-1]]
    smoothed = {s: ndi.gaussian_filter(data, s, truncate=TRUNCATE) for s in sigmas}
    channels = []
    for i, s in enumerate(scales):
        channels.extend(_scale_features(data, core, s, sigmas[i + 1], smoothed))
    return np.stack(channels).astype(np.float32, copy=False)


#: Bytes per voxel of a block (halo included) while its stack is computed:
#: the smoothed copies, gradients, Hessian and tensor terms (measured 111 for
#: 3 scales, 80 x 400 x 400 voxels), plus the stack of its core.
BLOCK_BYTES_PER_VOXEL = 128


def block_bounds(shape, scales, memory_mb=512):
    """Blocks (3 slices each, in z, y, x order) whose stacks take about ``memory_mb`` each.

    Blocks are cubes of one core size ``c`` along every axis (the whole axis
    where ``c`` covers it): the halo (`_halo`) is paid on every side, so the
    largest ``c`` whose haloed block fits the memory is taken. A tomogram
    whose every axis fits is one block.

    Examples
    --------
    >>> len(block_bounds((40, 50, 60), (1.5, 3.0, 6.0)))
    1
    >>> blocks = block_bounds((225, 750, 750), (1.5, 3.0, 6.0), memory_mb=512)
    >>> len(blocks), blocks[0]
    (300, (slice(0, 75, None), slice(0, 75, None), slice(0, 75, None)))
    """
    h = _halo(scales)
    n_features = len(FEATURES_PER_SCALE) * len(scales)
    budget = memory_mb * 2 ** 20

    def cost(c):
        extent = [n if c >= n else min(n, c + 2 * h) for n in shape]
        core = [min(n, c) for n in shape]
        return (np.prod(extent, dtype=float) * BLOCK_BYTES_PER_VOXEL
                + np.prod(core, dtype=float) * 4 * n_features)

    c = 8
    while c < max(shape) and cost(c + 1) <= budget:
        c += 1
    # even splits: the same number of blocks, as equal as possible
    ranges = []
    for n in shape:
        k = -(-n // c)
        edges = [round(i * n / k) for i in range(k + 1)]
        ranges.append([slice(a, b) for a, b in zip(edges[:-1], edges[1:])])
    return [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]


def _iter_features(work, scales, n_threads=2, memory_mb=1024, transform=None):
    """Yield ``(block, result)`` for the blocks of the working volume (`block_bounds`).

    Blocks are computed by ``n_threads`` threads (scipy's filters and
    scikit-learn's tree prediction release the GIL), each within
    ``memory_mb / n_threads``, and yielded in order; at most ``n_threads``
    blocks exist at a time.

    Parameters
    ----------
    transform : callable, optional
        Applied to each block's (F, dz, dy, dx) stack inside its thread (e.g.
        the classifier's prediction); the result is yielded instead of the
        stack.
    """
    bounds = block_bounds(work.shape, scales, memory_mb=memory_mb // max(1, n_threads))
    transform = transform or (lambda features: features)

    def run(block):
        return transform(block_features(work, block, scales))

    with ThreadPoolExecutor(max(1, n_threads)) as pool:
        for start in range(0, len(bounds), max(1, n_threads)):
            batch = bounds[start:start + max(1, n_threads)]
            for block, result in zip(batch, pool.map(run, batch)):
                yield block, result


def features_at(work, zyx, scales, n_threads=2, memory_mb=1024):
    """Feature vectors of given working-grid voxels.

    Parameters
    ----------
    work : (mz, my, mx) float32 ndarray
    zyx : (N, 3) array of int
        Voxel indices [z, y, x] on the working grid.
    scales : sequence of float

    Returns
    -------
    (N, F) float32 ndarray
        Row i describes voxel ``zyx[i]``.

    Examples
    --------
    >>> work = np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32)
    >>> features_at(work, [[8, 8, 8], [3, 4, 5]], scales=(1.5, 3.0)).shape
    (2, 20)
    """
    zyx = np.asarray(zyx, dtype=int).reshape(-1, 3)
    n_features = len(FEATURES_PER_SCALE) * len(scales)
    out = np.empty((len(zyx), n_features), np.float32)
    for block, features in _iter_features(work, scales, n_threads, memory_mb):
        lo = np.array([b.start for b in block])
        hi = np.array([b.stop for b in block])
        rows = np.nonzero(np.all((zyx >= lo) & (zyx < hi), axis=1))[0]
        if len(rows):
            z, y, x = (zyx[rows] - lo).T
            out[rows] = features[:, z, y, x].T
    return out
