"""Subtomogram extraction: cubic boxes cut out of a tomogram around particle positions.

Conventions
-----------
- Volumes are indexed ``[z, y, x]``; positions and shifts are (x, y, z) in
  voxels with the bottom-left-corner origin of `tomopick.core.picks`: the
  centre of element ``[k, j, i]`` is at (i, j, k).
- A box of size ``n`` has its centre at index ``n // 2`` along every axis (the
  Scipion / Xmipp / EMAN convention, and where the FFT puts the origin).

Sub-voxel accuracy
------------------
A particle at a non-integer position ``p`` is cut out *without interpolation*
(so the box is an exact copy of tomogram voxels, no smoothing): the box centre
is the voxel ``c = floor(p + 0.5)`` and the remainder ``p - c`` (each
component in [-0.5, 0.5)) goes into the subtomogram's transform shift.  In the
core convention ``aligned(r) = subtomogram(R r + t)`` (r about the box
centre) a particle whose centre sits at offset ``d`` from the box centre is
brought to the centre by ``t = d`` whatever ``R`` is, so the stored shift is
``t = t_coordinate + (p - c)`` (scaled to output voxels when downsampling) and
`tomopick.core.alignment.apply_alignment` centres the particle to sub-voxel
accuracy.

Reading
-------
The tomogram may be a ``numpy.memmap`` (``mrcfile.mmap``).  Boxes are copied
straight out of the memory map in z order, one z-slab of boxes at a time, by
a few threads.  Where boxes are dense the kernel is asked to read the next
slab ahead (``madvise(WILLNEED)``: one sequential read per slab while the
current one is copied); where they are sparse only the pages the boxes touch
are read, so a few boxes never read the whole tomogram.  No slab is copied
into memory: the boxes are the only copy.
"""
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from tomopick.core.resample import cropped_size, fourier_crop_to

#: Normalisation methods `normalize_boxes` knows, by name (a form keeps its own choice order).
NORMALIZATIONS = ("normalize", "edge mean")
#: Out-of-bounds policies, by name (a form keeps its own choice order).
OUT_OF_BOUNDS = ("skip", "pad")
#: particles extracted at a time by `extract_in_chunks` (bounds memory: 1000
#: boxes of 64^3 are 1 GB)
CHUNK = 500

_PAGE = 4096


@dataclass
class Extraction:
    """Subtomograms cut out of one tomogram.

    Attributes
    ----------
    boxes : (K, m, m, m) ndarray of float32
        The subtomograms ``[z, y, x]``, in the order of ``index``.
    index : (K,) ndarray of int
        Row of each box in the input positions; boxes come in the order they
        were read (z-blocks of one box height, then y), not in input order.
    matrices : (K, 4, 4) ndarray of float
        Core transforms [[R, t]]: rotation of the input matrix (identity
        when none was given) and shift ``(t_input + p - c) * m / n`` in output
        voxels (see the module notes on sub-voxel accuracy).
    padded : (K,) ndarray of bool
        Boxes that reached outside the tomogram and were filled with the pad value.
    n_skipped : int
        Positions dropped because their box reached outside the tomogram
        (``out_of_bounds='skip'``).
    scale : float
        Output voxel size / input voxel size: ``n / m`` (``down_factor``
        rounded to an integer output box).
    """
    boxes: np.ndarray
    index: np.ndarray
    matrices: np.ndarray
    padded: np.ndarray
    n_skipped: int
    scale: float


def box_centers(positions):
    """Integer box centres and the sub-voxel remainders of particle positions.

    Parameters
    ----------
    positions : (N, 3) array of float
        (x, y, z) in voxels.

    Returns
    -------
    centers : (N, 3) ndarray of int
        ``floor(p + 0.5)``: the voxel nearest each position (halves round up).
    remainders : (N, 3) ndarray of float
        ``p - centers``, each component in [-0.5, 0.5).

    Examples
    --------
    >>> centers, remainders = box_centers([[1.4, 2.5, -0.6]])
    >>> centers, remainders
    (array([[ 1,  3, -1]]), array([[ 0.4, -0.5,  0.4]]))
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(positions)):
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise ValueError(f"position {bad} is not finite: {positions[bad]}")
    centers = np.floor(positions + 0.5).astype(np.int64)
    return centers, positions - centers


def output_box_size(box_size, down_factor=1.0):
    """Box size after Fourier downsampling: ``round(box_size / down_factor)``, at least 1
    (`tomopick.core.resample.cropped_size`).

    Examples
    --------
    >>> output_box_size(40, 1.5)
    27
    """
    return cropped_size(box_size, down_factor)


def volume_mean(volume, chunk_bytes=256 << 20):
    """Mean of a (possibly memory-mapped) volume, read in z-slabs.

    Parameters
    ----------
    volume : (nz, ny, nx) array-like
    chunk_bytes : int, optional
        Bytes read at a time.

    Returns
    -------
    float

    Examples
    --------
    >>> volume_mean(np.arange(24.0).reshape(2, 3, 4), chunk_bytes=1)
    11.5
    """
    nz = volume.shape[0]
    step = max(1, chunk_bytes // max(1, volume[0].nbytes))
    total = 0.0
    for z0 in range(0, nz, step):
        total += float(np.asarray(volume[z0:z0 + step], dtype=np.float64).sum())
    return total / float(np.prod(volume.shape))


def iter_boxes(volume, positions, box_size, out_of_bounds="skip", pad_value=None,
               slab_bytes=256 << 20, allocate=None, workers=None):
    """Raw boxes around positions, yielded slab by slab in z order.

    Parameters
    ----------
    volume : (nz, ny, nx) array-like
        The tomogram, typically a read-only ``numpy.memmap``.
    positions : (N, 3) array of float
        (x, y, z) in voxels; each box is centred on the nearest voxel (see
        `box_centers`).
    box_size : int
        Edge of the cubic box in voxels.
    out_of_bounds : {'skip', 'pad'}
        Boxes reaching outside the volume are dropped ('skip') or completed
        with ``pad_value`` ('pad').
    pad_value : float, optional
        Value outside the volume; the volume mean (`volume_mean`) when None,
        computed only if a box needs it.
    slab_bytes : int, optional
        Size of the z-slab whose boxes form one batch; for a memory map the
        kernel is asked to read the next slab ahead (sequentially) while the
        boxes of the current one are copied.
    allocate : callable, optional
        ``allocate(k)`` returns the (k, n, n, n) float32 array a batch is written
        into (lets a caller fill its output in place); ``np.empty`` when None.
    workers : int, optional
        Threads copying boxes (numpy copies release the GIL, and page faults of
        a cold file overlap); ``os.cpu_count()`` when None.

    Yields
    ------
    index : (k,) ndarray of int
        Rows of ``positions`` of this batch.
    boxes : (k, n, n, n) ndarray of float32
        ``boxes[b] = volume[cz - n//2 : cz - n//2 + n, cy - ..., cx - ...]``.
    padded : (k,) ndarray of bool

    Notes
    -----
    Positions whose box is out of bounds under 'skip' are never yielded; the
    caller counts them (see `extract_subtomograms`). Batches come in z order;
    `count_boxes` tells beforehand how many boxes will be yielded in all.

    Examples
    --------
    The box at the corner is padded; batches come in z order:

    >>> volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    >>> for index, boxes, padded in iter_boxes(volume, [[5, 5, 5], [0, 0, 0]], 4,
    ...                                        out_of_bounds="pad", pad_value=-1):
    ...     print(index, boxes.shape, padded, boxes[0, 0, 0, 0])
    [1] (1, 4, 4, 4) [ True] -1.0
    [0] (1, 4, 4, 4) [False] 333.0
    """
    n = _check_box_size(box_size)
    if allocate is None:
        allocate = (lambda k: np.empty((k, n, n, n), np.float32))
    if np.ndim(volume) != 3:
        raise ValueError(f"the tomogram must be a 3D array, got shape {np.shape(volume)}")
    shape = np.array(volume.shape)  # nz, ny, nx
    starts, inside, candidates = _plan(shape, positions, n, out_of_bounds)
    if len(candidates) == 0:
        return
    if pad_value is None and not np.all(inside[candidates]):
        pad_value = volume_mean(volume)
    # z-blocks of one box height, then y within a block: consecutive boxes share
    # tomogram rows, which are then still in the CPU cache (~20 % faster copies)
    block = starts[:, 0] // n
    order = candidates[np.lexsort((starts[candidates, 2], starts[candidates, 1],
                                   block[candidates]))]
    lo = np.maximum(starts, 0)
    hi = np.minimum(starts + n, shape)
    workers = max(1, workers or os.cpu_count() or 1)
    # slices of a plain ndarray view skip numpy.memmap's Python-level __array_finalize__
    source = volume.view(np.ndarray) if isinstance(volume, np.ndarray) else volume
    # ... and a MappedVolume's check that its file is whole: done once per batch here
    check_file = getattr(volume, "check", lambda: None)

    slice_bytes = int(np.prod(shape[1:])) * volume.dtype.itemsize
    blocks_per_slab = max(1, slab_bytes // max(1, slice_bytes) // n)
    nz = int(shape[0])
    batches = []
    slab_of = block[order] // blocks_per_slab
    bounds = np.flatnonzero(np.diff(slab_of)) + 1
    for batch in np.split(order, bounds):
        z_first = max(0, int(starts[batch, 0].min()))
        z_last = min(nz, int(starts[batch, 0].max()) + n)
        # sparse boxes touch ~n*n pages each: then read only those pages
        dense = len(batch) * n * n * max(_PAGE, n * 4) >= (z_last - z_first) * slice_bytes // 2
        batches.append((batch, z_first, z_last, dense))

    lo_rows, hi_rows, inside_rows, start_rows = lo.tolist(), hi.tolist(), inside.tolist(), \
        starts.tolist()

    def copy(batch, boxes, padded, part):
        for b in part:
            row = batch[b]
            z0, y0, x0 = lo_rows[row]
            z1, y1, x1 = hi_rows[row]
            if inside_rows[row]:
                boxes[b] = source[z0:z1, y0:y1, x0:x1]
                continue
            padded[b] = True
            out = boxes[b]
            out.fill(pad_value)
            sz, sy, sx = start_rows[row]
            out[z0 - sz:z1 - sz, y0 - sy:y1 - sy, x0 - sx:x1 - sx] = source[z0:z1, y0:y1, x0:x1]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, (batch, z_first, z_last, dense) in enumerate(batches):
            if k == 0 and dense:
                _will_need(volume, z_first, z_last)
            if k + 1 < len(batches) and batches[k + 1][3]:
                _will_need(volume, batches[k + 1][1], batches[k + 1][2])
            check_file()
            boxes = allocate(len(batch))
            padded = np.zeros(len(batch), bool)
            parts = np.array_split(np.arange(len(batch)), min(workers, len(batch)))
            rows = batch.tolist()
            for job in [pool.submit(copy, rows, boxes, padded, part.tolist()) for part in parts]:
                job.result()
            yield batch, boxes, padded


def _will_need(volume, z_lo, z_hi):
    """Ask the kernel to read volume[z_lo:z_hi] of a memory map ahead, sequentially.

    A no-op for arrays that are not memory maps, or where madvise is unavailable.
    """
    mm = getattr(volume, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_WILLNEED"):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
        first = volume[z_lo:z_hi].ctypes.data - base
        length = (z_hi - z_lo) * volume.strides[0]
        aligned = first - first % mmap.PAGESIZE
        mm.madvise(mmap.MADV_WILLNEED, aligned, min(length + first - aligned, len(mm) - aligned))
    except (ValueError, OSError, BufferError, TypeError):
        pass  # only a hint


def count_boxes(shape, positions, box_size, out_of_bounds="skip"):
    """Number of boxes `iter_boxes` yields for a volume of ``shape`` (nz, ny, nx).

    Examples
    --------
    >>> count_boxes((10, 10, 10), [[5, 5, 5], [0, 0, 0]], 4)
    1
    >>> count_boxes((10, 10, 10), [[5, 5, 5], [0, 0, 0]], 4, "pad")
    2
    """
    return len(_plan(np.array(shape), positions, _check_box_size(box_size), out_of_bounds)[2])


def _plan(shape, positions, n, out_of_bounds):
    """Box starts (z, y, x), in-bounds mask and rows to extract."""
    if out_of_bounds not in OUT_OF_BOUNDS:
        raise ValueError(f"out_of_bounds must be one of {OUT_OF_BOUNDS}, got {out_of_bounds!r}")
    centers, _ = box_centers(positions)
    starts = centers[:, ::-1] - n // 2
    inside = np.all((starts >= 0) & (starts + n <= shape), axis=1)
    if out_of_bounds == "skip":
        return starts, inside, np.flatnonzero(inside)
    overlaps = np.all((starts < shape) & (starts + n > 0), axis=1)
    if not np.all(overlaps):
        bad = int(np.flatnonzero(~overlaps)[0])
        raise ValueError(f"position {bad} {np.asarray(positions)[bad]} lies entirely "
                         f"outside the tomogram of shape (z, y, x) {tuple(shape)}")
    return starts, inside, np.arange(len(starts))


def _check_box_size(box_size):
    n = int(box_size)
    if n != box_size or n < 1:
        raise ValueError(f"the box size must be a positive integer number of voxels, "
                         f"got {box_size}")
    return n


def fourier_crop_boxes(boxes, size):
    """Downsample cubic boxes by Fourier cropping, keeping the box centre fixed.

    Parameters
    ----------
    boxes : (K, n, n, n) array
    size : int
        Output edge ``m <= n``.

    Returns
    -------
    (K, m, m, m) ndarray of float32
        Same mean as the input; the point at index ``n // 2`` maps to index
        ``m // 2`` exactly (the boxes are shifted so the centre is the FFT
        origin before cropping), and a feature at offset ``d`` from the centre
        ends at offset ``d * m / n``.

    Examples
    --------
    >>> small = fourier_crop_boxes(np.ones((2, 8, 8, 8), np.float32), 4)
    >>> small.shape, float(small.mean())
    ((2, 4, 4, 4), 1.0)
    """
    size = int(size)
    return fourier_crop_to(boxes, (size, size, size), axes=(1, 2, 3))


def normalize_boxes(boxes, method="normalize"):
    """Zero mean and unit standard deviation, in place.

    Parameters
    ----------
    boxes : (K, n, n, n) ndarray of float32
        Modified in place.
    method : {'normalize', 'edge mean'}
        'normalize': mean and std of the whole box; 'edge mean': of the box
        edge (the voxels on its six faces, one voxel thick), so that the
        background, not the particle, sets the scale.

    Returns
    -------
    boxes : the same array

    Examples
    --------
    >>> boxes = np.random.default_rng(0).random((2, 6, 6, 6), dtype=np.float32)
    >>> boxes = normalize_boxes(boxes)
    >>> np.round(boxes.mean(axis=(1, 2, 3)), 5) + 0.0, np.round(boxes.std(axis=(1, 2, 3)), 5)
    (array([0., 0.], dtype=float32), array([1., 1.], dtype=float32))
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {method!r}")
    if method == "normalize":
        mean = boxes.mean(axis=(1, 2, 3), dtype=np.float64)
        std = boxes.std(axis=(1, 2, 3), dtype=np.float64)
    else:
        edge = edge_mask(boxes.shape[-1])
        values = boxes[:, edge]
        mean = values.mean(axis=1, dtype=np.float64)
        std = values.std(axis=1, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    boxes -= mean.astype(np.float32)[:, None, None, None]
    boxes /= std.astype(np.float32)[:, None, None, None]
    return boxes


def edge_mask(n):
    """Boolean (n, n, n) mask of the voxels on the six faces of a box.

    Examples
    --------
    >>> int(edge_mask(3).sum()), int(edge_mask(4).sum())
    (26, 56)
    """
    mask = np.ones((n, n, n), bool)
    if n > 2:
        mask[1:-1, 1:-1, 1:-1] = False
    return mask


def extract_subtomograms(volume, positions, box_size, matrices=None, down_factor=1.0,
                         invert=False, normalize=None, out_of_bounds="skip", pad_value=None,
                         slab_bytes=256 << 20, workers=None):
    """Cut subtomograms out of one tomogram.

    Parameters
    ----------
    volume : (nz, ny, nx) array-like
        The tomogram (a ``numpy.memmap`` is read slab by slab, never whole).
    positions : (N, 3) array of float
        Particle centres (x, y, z) in voxels of ``volume``; fractional parts
        go into the output shifts (module notes).
    box_size : int
        Box edge in voxels of ``volume``.
    matrices : (N, 4, 4) array, optional
        Core transforms [[R, t]] of the coordinates (shifts in voxels of
        ``volume``); identity when None.
    down_factor : float, optional
        >= 1. The box is Fourier-cropped to ``m = round(box_size / down_factor)``
        and the voxel size grows by ``box_size / m`` (``Extraction.scale``).
    invert : bool, optional
        Multiply by -1 (dark particles become bright).
    normalize : {None, 'normalize', 'edge mean'}, optional
        See `normalize_boxes`; applied last, on the output boxes.
    out_of_bounds : {'skip', 'pad'}, optional
        What to do with boxes that reach outside the tomogram.
    pad_value : float, optional
        Fill value for 'pad'; the tomogram mean when None.
    slab_bytes : int, optional
        Size of the z-slab read ahead at a time (see `iter_boxes`).
    workers : int, optional
        Threads copying boxes and post-processing them (downsample/normalise)
        while the next slab is read; ``os.cpu_count()`` when None.

    Returns
    -------
    Extraction

    Examples
    --------
    The box at (1, 1, 1) would reach outside: skipped. The sub-voxel 0.3 of the
    other goes into its shift:

    >>> volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    >>> result = extract_subtomograms(volume, [[5.3, 5, 5], [1, 1, 1]], 4)
    >>> result.boxes.shape, result.index, result.n_skipped
    ((1, 4, 4, 4), array([0]), 1)
    >>> result.matrices[0, :3, 3], float(result.boxes[0, 2, 2, 2]) == volume[5, 5, 5]
    (array([0.3, 0. , 0. ]), True)
    """
    n = _check_box_size(box_size)
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    m = output_box_size(n, down_factor)
    scale = n / m
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be None or one of {NORMALIZATIONS}, "
                         f"got {normalize!r}")
    if matrices is None:
        matrices = np.broadcast_to(np.eye(4), (len(positions), 4, 4))
    matrices = np.asarray(matrices, dtype=float)
    if matrices.shape != (len(positions), 4, 4):
        raise ValueError(f"expected {len(positions)} 4x4 matrices, got shape {matrices.shape}")

    total = count_boxes(volume.shape, positions, n, out_of_bounds)
    out = np.empty((total, m, m, m), np.float32)
    filled = [0]

    def allocate(k):
        # without downsampling the raw boxes go straight into the output
        if m == n:
            return out[filled[0]:filled[0] + k]
        return np.empty((k, n, n, n), np.float32)

    def finish(boxes, k0):
        if m != n:
            out[k0:k0 + len(boxes)] = fourier_crop_boxes(boxes, m)
        block = out[k0:k0 + len(boxes)]
        if invert:
            np.negative(block, out=block)
        if normalize is not None:
            normalize_boxes(block, normalize)

    indices, pads, jobs = [], [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index, boxes, padded in iter_boxes(volume, positions, n, out_of_bounds, pad_value,
                                               slab_bytes, allocate, workers):
            if m != n or invert or normalize is not None:
                jobs.append(pool.submit(finish, boxes, filled[0]))
            filled[0] += len(index)
            indices.append(index)
            pads.append(padded)
        for job in jobs:
            job.result()
    index = np.concatenate(indices) if indices else np.zeros(0, int)
    padded = np.concatenate(pads) if pads else np.zeros(0, bool)
    _, remainders = box_centers(positions[index])
    out_matrices = matrices[index].copy()
    out_matrices[:, :3, 3] = (out_matrices[:, :3, 3] + remainders) / scale
    n_skipped = len(positions) - len(index)
    return Extraction(out, index, out_matrices, padded, n_skipped, scale)


def extract_in_chunks(volume, positions, box_size, matrices=None, chunk=CHUNK,
                      out_of_bounds="skip", pad_value=None, **options):
    """`extract_subtomograms` over z-ordered chunks of particles: bounded memory.

    The particles are sorted by z (stably) and split into
    ``ceil(N / chunk)`` chunks of nearly equal size, so each chunk reads one
    z-range of the tomogram. Under 'pad' the fill value is computed once for
    the whole tomogram, not per chunk.

    Parameters
    ----------
    volume, positions, box_size, matrices, out_of_bounds, pad_value
        As in `extract_subtomograms`.
    chunk : int, optional
        Most particles per chunk (>= 1).
    **options
        ``down_factor``, ``invert``, ``normalize``, ``slab_bytes``,
        ``workers`` of `extract_subtomograms`.

    Yields
    ------
    rows : (k,) ndarray of int
        Rows of ``positions`` in this chunk.
    result : Extraction
        The extraction of ``positions[rows]`` (``result.index`` indexes
        ``rows``); every box equals that of the particle extracted alone.

    Examples
    --------
    >>> volume = np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)
    >>> positions = [[8, 8, z] for z in (12, 4, 8)]
    >>> for rows, result in extract_in_chunks(volume, positions, 4, chunk=2):
    ...     print(rows, result.boxes.shape)
    [1 2] (2, 4, 4, 4)
    [0] (1, 4, 4, 4)
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    if matrices is not None:
        matrices = np.asarray(matrices, dtype=float)
    if out_of_bounds == "pad" and pad_value is None and \
            count_boxes(volume.shape, positions, box_size, "skip") < len(positions):
        pad_value = volume_mean(volume)
    order = np.argsort(positions[:, 2], kind="stable")
    for rows in np.array_split(order, max(1, int(np.ceil(len(order) / chunk)))):
        yield rows, extract_subtomograms(volume, positions[rows], box_size,
                                         matrices=None if matrices is None else matrices[rows],
                                         out_of_bounds=out_of_bounds, pad_value=pad_value,
                                         **options)
