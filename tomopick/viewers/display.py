"""Array preparation for the viewers: contrast, montages, galleries, colours, arrows.

Pure numpy/scipy, no Qt: everything a viewer shows is computed here from plain
arrays, so it can be tested (and reused) without a display.

Conventions: volumes are indexed [z, y, x]; positions and vectors are (x, y, z)
in voxels, bottom-left origin, so the centre of element [k, j, i] is at
(i, j, k). napari works in array order, so `to_zyx` flips the last axis.
"""
from collections import OrderedDict

import numpy as np
from scipy import ndimage

#: Distinct colours (RGB, 0-1) for models / groups: Okabe-Ito, then tab10.
PALETTE = np.array([
    [0.902, 0.624, 0.000], [0.337, 0.706, 0.914], [0.000, 0.620, 0.451],
    [0.941, 0.894, 0.259], [0.000, 0.447, 0.698], [0.835, 0.369, 0.000],
    [0.800, 0.475, 0.655], [0.839, 0.153, 0.157], [0.580, 0.404, 0.741],
    [0.549, 0.337, 0.294], [0.498, 0.498, 0.498], [0.737, 0.741, 0.133],
])

#: Axis names and the napari ``dims.order`` that slices along them.
SLICE_ORDERS = {"z": (0, 1, 2), "y": (1, 0, 2), "x": (2, 0, 1)}


def to_zyx(positions):
    """(x, y, z) positions to napari's array order (z, y, x).

    Parameters
    ----------
    positions : (N, 3) array of float

    Returns
    -------
    (N, 3) ndarray of float
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    return positions[:, ::-1].copy()


def contrast_limits(volume, percentiles=(0.5, 99.5), max_samples=2_000_000, seed=0):
    """Robust display range of a volume.

    Parameters
    ----------
    volume : ndarray (any shape, memory maps welcome)
    percentiles : (float, float)
        Lower and upper percentile (0-100) mapped to black and white.
    max_samples : int
        At most this many voxels are read: large tomograms are subsampled on a
        regular stride so a memory-mapped file is not read completely.

    Returns
    -------
    (float, float)
        Lower < upper (a constant volume gets a unit-wide range).
    """
    volume = np.asarray(volume) if not hasattr(volume, "shape") else volume
    if volume.size == 0:
        raise ValueError("cannot compute the contrast of an empty volume")
    if volume.size > max_samples:
        # a stride along every axis keeps the sample spread over the whole volume
        stride = int(np.ceil((volume.size / max_samples) ** (1.0 / volume.ndim)))
        sample = np.asarray(volume[(slice(None, None, stride),) * volume.ndim])
    else:
        sample = np.asarray(volume)
    sample = sample[np.isfinite(sample)]
    low, high = np.percentile(sample, percentiles) if sample.size else (0.0, 1.0)
    if not high > low:
        low, high = float(low) - 0.5, float(low) + 0.5
    return float(low), float(high)


def gaussian_contrast(image, sigma):
    """Gaussian low-pass used as the viewers' contrast filter.

    Parameters
    ----------
    image : ndarray
        A slice or a volume.
    sigma : float
        Standard deviation in voxels; 0 returns the image unchanged (as float32).

    Returns
    -------
    ndarray of float32, same shape
    """
    if sigma < 0:
        raise ValueError(f"the Gaussian sigma must be >= 0, got {sigma}")
    image = np.asarray(image, dtype=np.float32)
    if sigma == 0:
        return image
    return ndimage.gaussian_filter(image, sigma, mode="nearest")


class FilteredVolume:
    """A volume seen through a Gaussian filter, computed slab by slab on access.

    napari accepts any array-like with ``shape``, ``dtype``, ``ndim`` and
    ``__getitem__``; it reads one plane at a time. The Gaussian is separable,
    so a plane of the filtered volume is the kernel-weighted sum of the
    ``2 r + 1`` planes around it (r = ``int(4 sigma + 0.5)``, the radius of
    `scipy.ndimage.gaussian_filter`), filtered in 2D: the result equals
    filtering the whole volume (mode 'nearest'), at the cost of reading a
    thin slab. This keeps the contrast filter interactive on memory-mapped
    tomograms of any size.

    Parameters
    ----------
    volume : (nz, ny, nx) array-like
    sigma : float
        Voxels, > 0.
    """

    def __init__(self, volume, sigma):
        if sigma <= 0:
            raise ValueError(f"FilteredVolume needs sigma > 0, got {sigma}")
        if len(volume.shape) != 3:
            raise ValueError(f"FilteredVolume needs a 3D volume, got shape {volume.shape}")
        self.volume = volume
        self.sigma = float(sigma)
        self.shape = tuple(volume.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self._margin = int(4.0 * self.sigma + 0.5)  # scipy's truncate=4 radius
        # whole planes recently shown (slice view + montage neighbours overlap as one
        # moves through the volume)
        self._planes = OrderedDict()
        self._cache_size = 16

    @property
    def size(self):
        return int(np.prod(self.shape))

    def __array__(self, dtype=None):
        out = gaussian_contrast(np.asarray(self.volume), self.sigma)
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        ints = [i for i, k in enumerate(key) if isinstance(k, (int, np.integer))]
        whole = all(k == slice(None) for i, k in enumerate(key) if i not in ints)
        if len(ints) == 1 and whole:
            a = ints[0]
            cache_key = (a, int(key[a]) % self.shape[a])
            if cache_key in self._planes:
                self._planes.move_to_end(cache_key)
                return self._planes[cache_key]
            plane = self._filter(key)
            self._planes[cache_key] = plane
            if len(self._planes) > self._cache_size:
                self._planes.popitem(last=False)
            return plane
        return self._filter(key)

    def _filter(self, key):
        r = self._margin
        box, plan = [], []
        for k, n in zip(key, self.shape):
            if isinstance(k, (int, np.integer)):
                k = int(k) + n if k < 0 else int(k)
                if not 0 <= k < n:
                    raise IndexError(f"index {k} out of range for an axis of length {n}")
                lo, hi = max(0, k - r), min(n, k + r + 1)
                # 'nearest' boundary: taps beyond the edge repeat the edge plane
                taps = np.clip(np.arange(k - r, k + r + 1), 0, n - 1) - lo
                box.append(slice(lo, hi))
                plan.append(("plane", taps))
            elif isinstance(k, slice) and k.indices(n)[2] == 1:
                start, stop, _ = k.indices(n)
                lo, hi = max(0, start - r), min(n, stop + r)
                box.append(slice(lo, hi))
                plan.append(("range", slice(start - lo, stop - lo)))
            else:  # fancy or strided indexing: napari does not do it; filter everything
                return np.asarray(self)[key]
        data = np.asarray(self.volume[tuple(box)], dtype=np.float32)
        x = np.arange(-r, r + 1)
        weights = np.exp(-0.5 * (x / self.sigma) ** 2)
        weights /= weights.sum()
        axis = 0
        for kind, where in plan:
            if kind == "plane":
                # weighted sum of the planes around the requested one: this axis goes away
                data = np.tensordot(weights, np.take(data, where, axis=axis), axes=(0, axis))
                data = data.astype(np.float32, copy=False)
            else:
                data = ndimage.gaussian_filter1d(data, self.sigma, axis=axis, mode="nearest")
                data = np.take(data, np.arange(where.start, where.stop), axis=axis)
                axis += 1
        return data


def central_sections(volume):
    """The three orthogonal central sections of a volume.

    Parameters
    ----------
    volume : (nz, ny, nx) array

    Returns
    -------
    xy : (ny, nx) ndarray
        The plane z = nz // 2.
    xz : (nz, nx) ndarray
        The plane y = ny // 2.
    yz : (nz, ny) ndarray
        The plane x = nx // 2.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"central sections need a 3D volume, got shape {volume.shape}")
    nz, ny, nx = volume.shape
    return volume[nz // 2], volume[:, ny // 2, :], volume[:, :, nx // 2]


def tile(images, ncols=None, gap=2, fill=None):
    """Images laid out on a grid, row by row, separated by ``gap`` pixels.

    Parameters
    ----------
    images : sequence of 2D arrays
        May differ in size; each cell is as big as the largest image and the
        image sits in its top-left corner.
    ncols : int, optional
        Columns; default ceil(sqrt(n)).
    gap : int
        Pixels between cells.
    fill : float, optional
        Value of gaps and empty cells; default the minimum of all images.

    Returns
    -------
    mosaic : 2D ndarray of float32
    origins : (n, 2) ndarray of int
        (row, column) of each image's top-left pixel in the mosaic.
    """
    images = [np.asarray(im, dtype=np.float32) for im in images]
    if not images:
        raise ValueError("nothing to tile: no images given")
    if any(im.ndim != 2 for im in images):
        raise ValueError("tile takes 2D images only")
    n = len(images)
    ncols = int(ncols or np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    ch = max(im.shape[0] for im in images)
    cw = max(im.shape[1] for im in images)
    if fill is None:
        fill = min(float(im.min()) for im in images)
    mosaic = np.full((nrows * ch + (nrows - 1) * gap, ncols * cw + (ncols - 1) * gap),
                     fill, dtype=np.float32)
    origins = np.zeros((n, 2), dtype=int)
    for index, im in enumerate(images):
        r, c = divmod(index, ncols)
        origins[index] = (r * (ch + gap), c * (cw + gap))
        mosaic[origins[index, 0]:origins[index, 0] + im.shape[0],
               origins[index, 1]:origins[index, 1] + im.shape[1]] = im
    return mosaic, origins


def montage(volume, axis="z", center=None, count=9, step=1, ncols=None, gap=2):
    """Consecutive slices of a volume side by side.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    axis : {'z', 'y', 'x'}
        Slicing axis.
    center : int, optional
        Middle slice; default the central one.
    count : int
        Number of slices (clipped to the volume).
    step : int
        Slices between neighbouring panels.

    Returns
    -------
    mosaic : 2D ndarray of float32
    indices : (count,) ndarray of int
        Slice index shown in each panel, row by row.
    """
    if axis not in SLICE_ORDERS:
        raise ValueError(f"axis must be 'z', 'y' or 'x', got {axis!r}")
    a = "zyx".index(axis)
    n = volume.shape[a]
    center = n // 2 if center is None else int(center)
    indices = center + step * (np.arange(count) - count // 2)
    indices = indices[(indices >= 0) & (indices < n)]
    # index plane by plane: lazy volumes (memory maps, FilteredVolume) read only those
    planes = [np.asarray(volume[(slice(None),) * a + (int(i),)]) for i in indices]
    mosaic, _ = tile(planes, ncols=ncols, gap=gap)
    return mosaic, indices


def gallery(volumes, ncols=None, gap=2):
    """Central XY slices of several volumes (subtomograms) on a grid.

    Parameters
    ----------
    volumes : sequence of (n, n, n) arrays

    Returns
    -------
    mosaic : 2D ndarray of float32
    origins : (N, 2) ndarray of int
        Top-left (row, column) of each subtomogram's panel.
    """
    return tile([central_sections(v)[0] for v in volumes], ncols=ncols, gap=gap)


def sections_panel(volume, gap=2):
    """The central XY, XZ and YZ sections of one volume in a row."""
    return tile(list(central_sections(volume)), ncols=3, gap=gap)


def group_colors(group_ids, alpha=1.0):
    """A distinct colour per group id (same id, same colour everywhere).

    Parameters
    ----------
    group_ids : (N,) array of int

    Returns
    -------
    (N, 4) ndarray of float
        RGBA in 0-1.
    """
    group_ids = np.asarray(group_ids, dtype=int).reshape(-1)
    rgb = PALETTE[np.mod(group_ids, len(PALETTE))]
    return np.column_stack([rgb, np.full(len(rgb), alpha)])


def score_colors(scores, low=None, high=None, colormap="viridis"):
    """Colours of a continuous score through a matplotlib colormap.

    Parameters
    ----------
    scores : (N,) array of float
    low, high : float, optional
        Score mapped to the first / last colour; default the score range.

    Returns
    -------
    (N, 4) ndarray of float
    """
    from matplotlib import colormaps  # matplotlib is pinned by pwem; no Qt involved

    scores = np.asarray(scores, dtype=float).reshape(-1)
    if scores.size == 0:
        return np.zeros((0, 4))
    low = float(np.nanmin(scores)) if low is None else float(low)
    high = float(np.nanmax(scores)) if high is None else float(high)
    t = np.clip((scores - low) / (high - low), 0, 1) if high > low else np.full(scores.shape, 0.5)
    return np.asarray(colormaps[colormap](t))


def orientation_vectors(positions, matrices, length=10.0):
    """napari Vectors data for particle orientations.

    Each arrow starts at the particle and points along ``R @ (0, 0, 1)``
    (the particle's z-axis; the outward normal for membrane models).

    Parameters
    ----------
    positions : (N, 3) array of float
        (x, y, z) voxels.
    matrices : (N, 4, 4) or (N, 3, 3) array of float
        Core transforms [[R, t]] (``R @ z`` is the particle's z-axis).
    length : float
        Arrow length in voxels.

    Returns
    -------
    (N, 2, 3) ndarray of float
        napari's [start, projection] pairs in (z, y, x) order.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    matrices = np.asarray(matrices, dtype=float)
    if matrices.shape[0] != len(positions) or matrices.shape[1:] not in ((4, 4), (3, 3)):
        raise ValueError(f"need one 3x3 or 4x4 matrix per position: {len(positions)} positions, "
                         f"matrices of shape {matrices.shape}")
    z_axes = matrices[:, :3, 2]  # R @ (0, 0, 1) is the third column
    return np.stack([to_zyx(positions), to_zyx(z_axes * length)], axis=1)


def score_mask(scores, threshold):
    """Which coordinates pass a score threshold (score >= threshold; all when None)."""
    scores = np.asarray(scores, dtype=float).reshape(-1)
    if threshold is None:
        return np.ones(scores.shape, dtype=bool)
    return scores >= threshold
