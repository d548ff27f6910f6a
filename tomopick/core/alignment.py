"""Applying alignments to subtomograms, and their average.

Convention (tomopick.core's transforms)
---------------------------------------
A subtomogram's transform is ``[[R, t], [0, 1]]``, the inverse of the matrix M
that Scipion objects store (``f'(r) = f(M r)``, `tomo.objects.convertMatrix`;
`tomopick.convert` converts). Positions r = (x, y, z) are measured in voxels from the box centre, the
element at index ``n // 2`` along every axis. Applying the alignment gives::

    aligned(r) = subtomogram(R r + t)

so a particle whose z-axis is ``R @ (0, 0, 1)`` in the subtomogram, centred at
offset ``t`` from the box centre, ends centred with its z-axis along +z of the
box (for membrane proteins: the outward normal points to +z).

Boundaries: values outside the box are zero (the box is zero-padded), so a
rotation never wraps material from one edge to the other.

Interpolation: 'linear' is trilinear, the same numbers as
``scipy.ndimage.affine_transform(order=1, mode='grid-constant', cval=0)`` up to
float32 rounding of the coordinates (measured |difference| < 1e-4 of the data
standard deviation; ``mode='constant'``, scipy's default, differs only where a
source point falls in the outermost voxel shell). It is computed by a
vectorised gather in numpy, which releases the GIL, so boxes are aligned in
parallel threads; one thread is already 2-3x faster than scipy box by box
(benchmarks/bench_extract_align.py). 'cubic' uses scipy's cubic B-spline
(``affine_transform(order=3, mode='grid-constant')``).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

#: Interpolations `align_box` knows, by name (a form keeps its own choice order).
INTERPOLATIONS = ("linear", "cubic")

#: subtomograms aligned at a time by `align_in_batches` (bounds memory)
BATCH = 64

_ORDER = {"linear": 1, "cubic": 3}
# z-slices of the output computed at a time: keeps the temporaries in cache
_CHUNK_VOXELS = 1 << 14
# per-thread reusable work arrays
_workspace = threading.local()


def _index_transform(matrix, shape):
    """Affine map from output to input array indices [z, y, x]: (A, offset)."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a 4x4 transform, got shape {matrix.shape}")
    R, t = matrix[:3, :3], matrix[:3, 3]
    center = np.array([s // 2 for s in shape], dtype=float)  # z, y, x
    # reverse (x, y, z) -> [z, y, x]: A = P R P with P the axis flip
    A = R[::-1, ::-1]
    offset = center + t[::-1] - A @ center
    return A, offset


def align_box(box, matrix, interpolation="linear"):
    """Apply a core transform [[R, t]] (inverse of Scipion's M) to one box.

    Parameters
    ----------
    box : (nz, ny, nx) array
        The subtomogram (usually cubic).
    matrix : (4, 4) array
        ``[[R, t], [0, 1]]``; t in voxels (x, y, z).
    interpolation : {'linear', 'cubic'}

    Returns
    -------
    (nz, ny, nx) ndarray of float32
        ``aligned(r) = box(R r + t)``, r about the box centre; zero outside.

    Examples
    --------
    A shift t = (1, 0, 0) brings the voxel at x + 1 to the centre:

    >>> box = np.zeros((5, 5, 5), np.float32)
    >>> box[2, 2, 3] = 1.0
    >>> matrix = np.eye(4)
    >>> matrix[0, 3] = 1.0
    >>> float(align_box(box, matrix)[2, 2, 2])
    1.0
    """
    box = np.asarray(box, dtype=np.float32)
    if box.ndim != 3:
        raise ValueError(f"expected a 3D box, got shape {box.shape}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    A, offset = _index_transform(matrix, box.shape)
    if interpolation == "linear":
        return _trilinear(box, A, offset)
    return ndimage.affine_transform(box, A, offset, order=_ORDER[interpolation],
                                    mode="grid-constant", cval=0.0,
                                    output=np.float32)


def _frame(shape):
    """This thread's zero-framed work array for boxes of ``shape`` (reused: no page faults)."""
    frame = getattr(_workspace, "frame", None)
    framed = tuple(s + 3 for s in shape)
    if frame is None or frame.shape != framed:
        frame = np.zeros(framed, np.float32)
        _workspace.frame = frame
    return frame


def _trilinear(box, A, offset):
    """Trilinear resampling out[g] = box(A g + offset), zero outside, in numpy.

    The box is copied into a zero frame (1 voxel before, 2 after) so that every
    clipped coordinate has its 8 neighbours inside the array and everything
    outside the box reads as zero; the 8 corners are gathered from shifted
    views of the flat array with one shared index (no per-corner index sums).
    The output is computed a few z-slices at a time so that the ~20
    temporaries stay in the CPU cache.
    """
    nz, ny, nx = box.shape
    frame = _frame(box.shape)
    frame[1:nz + 1, 1:ny + 1, 1:nx + 1] = box
    flat = frame.ravel()
    sz, sy = frame.shape[1] * frame.shape[2], frame.shape[2]
    corners = [flat[o:] for o in (0, 1, sy, sy + 1, sz, sz + 1, sz + sy, sz + sy + 1)]
    A = A.astype(np.float32)
    offset = (offset + 1.0).astype(np.float32)  # +1: the zero frame
    # coordinates further out than the frame all read zero: clip them into it
    upper = np.array([nz + 1, ny + 1, nx + 1], np.float32)
    zero = np.float32(0.0)
    gz, gy, gx = (np.arange(s, dtype=np.float32) for s in (nz, ny, nx))
    # the grid is separable: c_k = A[k,0] z + (A[k,1] y + A[k,2] x) + offset_k
    planes = [((A[k, 1] * gy)[:, None] + (A[k, 2] * gx)[None, :]).ravel() for k in range(3)]
    out = np.empty((nz, ny, nx), np.float32)
    chunk = max(1, _CHUNK_VOXELS // (ny * nx))
    axis_strides = (np.float32(sz), np.float32(sy))
    for z0 in range(0, nz, chunk):
        zz = gz[z0:z0 + chunk]
        fractions, base = [], None
        for k in range(3):
            c = ((A[k, 0] * zz + offset[k])[:, None] + planes[k][None, :]).ravel()
            np.clip(c, zero, upper[k], out=c)
            whole = np.floor(c)
            c -= whole
            fractions.append(c)
            if k < 2:
                whole *= axis_strides[k]
            # flat index summed in float32: exact below 2**24 voxels
            base = whole if base is None else np.add(base, whole, out=base)
        fz, fy, fx = fractions
        index = base.astype(np.intp)
        # indices are in range by construction; 'wrap' skips numpy's bounds-error path
        c000, c001, c010, c011, c100, c101, c110, c111 = (
            v.take(index, mode="wrap") for v in corners)
        for lo, hi, f in ((c000, c001, fx), (c010, c011, fx), (c100, c101, fx),
                          (c110, c111, fx), (c000, c010, fy), (c100, c110, fy),
                          (c000, c100, fz)):
            hi -= lo
            hi *= f
            lo += hi
        out[z0:z0 + len(zz)] = c000.reshape(len(zz), ny, nx)
    return out


def apply_alignment(boxes, matrices, interpolation="linear", out=None, workers=None):
    """Apply each subtomogram's transform: aligned(r) = box(R r + t).

    Parameters
    ----------
    boxes : (N, nz, ny, nx) array
    matrices : (N, 4, 4) array
        Core transforms [[R, t]], shifts in voxels of the boxes.
    interpolation : {'linear', 'cubic'}
    out : (N, nz, ny, nx) float32 ndarray, optional
        Where to write (may be ``boxes`` itself only if it is float32).
    workers : int, optional
        Threads; ``os.cpu_count()`` when None. 'linear' scales with them (numpy
        releases the GIL); scipy's 'cubic' runs mostly serially.

    Returns
    -------
    (N, nz, ny, nx) ndarray of float32

    Examples
    --------
    >>> box = np.zeros((5, 5, 5), np.float32)
    >>> box[2, 2, 3] = 1.0
    >>> shift = np.eye(4)
    >>> shift[0, 3] = 1.0
    >>> apply_alignment(np.stack([box, box]), np.stack([shift, np.eye(4)]))[:, 2, 2, 2]
    array([1., 0.], dtype=float32)
    """
    boxes = np.asarray(boxes)
    matrices = np.asarray(matrices, dtype=float)
    if boxes.ndim != 4:
        raise ValueError(f"expected boxes of shape (N, nz, ny, nx), got {boxes.shape}")
    if matrices.shape != (len(boxes), 4, 4):
        raise ValueError(f"expected {len(boxes)} 4x4 matrices, got shape {matrices.shape}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if out is None:
        out = np.empty(boxes.shape, np.float32)

    def work(i):
        out[i] = align_box(boxes[i], matrices[i], interpolation)

    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(boxes) < 2:
        for i in range(len(boxes)):
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, range(len(boxes))))
    return out


def align_in_batches(boxes, matrices, interpolation="linear", workers=None, batch=BATCH):
    """`apply_alignment` on consecutive batches of boxes: bounded memory for large sets.

    Parameters
    ----------
    boxes : (N, nz, ny, nx) array-like
        May be a lazy sequence of arrays (e.g. memory maps, or an object
        reading files on slicing), read ``batch`` at a time.
    matrices : (N, 4, 4) array
        As in `apply_alignment`.
    interpolation : {'linear', 'cubic'}
    workers : int, optional
    batch : int, optional
        Boxes aligned at a time (>= 1).

    Yields
    ------
    start : int
        Index of the batch's first box.
    aligned : (k, nz, ny, nx) ndarray of float32
        Boxes ``start .. start + k - 1`` aligned, exactly as `align_box`
        aligns each one.

    Examples
    --------
    >>> boxes = np.random.default_rng(0).random((5, 4, 4, 4), dtype=np.float32)
    >>> shifts = np.tile(np.eye(4), (5, 1, 1))
    >>> [(start, len(aligned)) for start, aligned in align_in_batches(boxes, shifts, batch=2)]
    [(0, 2), (2, 2), (4, 1)]
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    matrices = np.asarray(matrices, dtype=float)
    for start in range(0, len(boxes), batch):
        chunk = np.stack([np.asarray(b, np.float32) for b in boxes[start:start + batch]])
        yield start, apply_alignment(chunk, matrices[start:start + batch], interpolation,
                                     workers=workers)


def average_aligned(boxes, matrices, interpolation="linear", workers=None, batch=BATCH):
    """Mean of the aligned boxes, without keeping them all in memory.

    Parameters
    ----------
    boxes : (N, nz, ny, nx) array-like
        May be a lazy sequence of arrays (e.g. memory maps), read ``batch`` at a time.
    matrices : (N, 4, 4) array
    interpolation : {'linear', 'cubic'}
    workers : int, optional
    batch : int, optional
        See `align_in_batches`.

    Returns
    -------
    (nz, ny, nx) ndarray of float32
        Sum in float64, then divided by N.

    Raises
    ------
    ValueError
        If no box is given.

    Examples
    --------
    A box shifted by +1 and by -1 voxel along x averages to the mean of its
    two neighbours:

    >>> box = np.zeros((5, 5, 5), np.float32)
    >>> box[2, 2, 1], box[2, 2, 3] = 2.0, 4.0
    >>> shifts = np.tile(np.eye(4), (2, 1, 1))
    >>> shifts[:, 0, 3] = (1, -1)
    >>> float(average_aligned([box, box], shifts)[2, 2, 2])
    3.0
    """
    if len(boxes) == 0:
        raise ValueError("cannot average an empty set of subtomograms")
    total = None
    for _, aligned in align_in_batches(boxes, matrices, interpolation, workers, batch):
        part = aligned.sum(axis=0, dtype=np.float64)
        total = part if total is None else total + part
    return (total / len(boxes)).astype(np.float32)
