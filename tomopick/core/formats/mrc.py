"""MRC volumes: reading (memory-mapped for large files), writing, headers.

Arrays are indexed [z, y, x]; voxel sizes are in Å/voxel.
"""
import contextlib
import math
import mmap
import os

import mrcfile
import mrcfile.mrcmemmap
import numpy as np

from ..atomic import PART_SUFFIX, atomic_path


class MrcError(ValueError):
    """A file that is missing, unreadable or not a valid MRC volume."""


def _open(path, mmap):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MrcError(f"MRC file not found: {path}")
    try:
        if mmap:
            return mrcfile.mmap(path, mode="r", permissive=False)
        return mrcfile.open(path, mode="r", permissive=False)
    except Exception as err:  # mrcfile raises ValueError/OSError/EOFError for broken files
        raise MrcError(f"cannot read MRC file {path}: {err}") from err


def read_mrc(path, mmap=False):
    """Volume data of an MRC file.

    Parameters
    ----------
    path : str or path-like
    mmap : bool, optional
        Return a read-only memory map instead of loading the data: use it for
        tomograms, of which only slabs or boxes are needed at a time.

    Returns
    -------
    data : (nz, ny, nx) ndarray or MappedVolume
        A `MappedVolume` (a numpy.memmap) with ``mmap``.

    Raises
    ------
    MrcError
        If the file is missing, truncated or not an MRC volume; with ``mmap``
        also when a slab is read after the file was truncated (see
        `MappedVolume`).

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "tomo.mrc")
    >>> write_mrc(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4), voxel_size=10.0)
    >>> volume = read_mrc(path)
    >>> volume.shape, volume.dtype.name, volume[1, 2, 3]
    ((2, 3, 4), 'float32', 23.0)
    >>> mapped = read_mrc(path, mmap=True)      # only the slabs read are loaded
    >>> float(mapped[1].sum())
    210.0
    >>> del mapped
    >>> tmp.cleanup()
    """
    mrc = _open(path, mmap)
    data = mrc.data
    if data is None or data.ndim not in (2, 3):
        mrc.close()
        raise MrcError(f"MRC file {path} holds no 2D/3D volume")
    if mmap:
        # keep the mapping alive through the array; the file handle itself is closed
        return MappedVolume.of(data if data.ndim == 3 else data[None], path)
    out = np.array(data)
    mrc.close()
    return out if out.ndim == 3 else out[None]


class MappedVolume(np.memmap):
    """A read-only memory-mapped MRC volume that checks its file is whole before each read.

    Reading a page of a memory map beyond the end of a file that another
    process truncated kills the process with SIGBUS, no message and no
    traceback. Every indexing (a slab, tile or box; views are
    `MappedVolume` too) and every numpy operation on the map (sums,
    comparisons, ...) first compares the mapped file's current size (one
    ``fstat`` of the map's own descriptor) with the size its header needs,
    and raises `MrcError` naming the file instead. Results of operations are
    plain ndarrays. A truncation in the microseconds between that check
    and the copy of the slab is not caught.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "v.mrc")
    >>> write_mrc(path, np.ones((4, 3, 3), np.float32), 1.0)
    >>> volume = read_mrc(path, mmap=True)
    >>> float(volume[1:3].sum()), type(volume[1:3]).__name__, type(volume + 1).__name__
    (18.0, 'MappedVolume', 'ndarray')
    >>> os.truncate(path, 1024 + 36)
    >>> volume[2:4].copy()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tomopick.core.formats.mrc.MrcError: MRC file .../v.mrc was truncated while in use: 1060 bytes, ...
    """

    @classmethod
    def of(cls, data, path):
        """`data` (a numpy.memmap of the MRC file at `path`) as a checked volume."""
        view = data.view(cls)
        view._path = os.fspath(path)
        view._end = int(data.offset) + int(data.nbytes)
        return view

    def __array_finalize__(self, obj):
        super().__array_finalize__(obj)
        self._path = getattr(obj, "_path", None)
        self._end = getattr(obj, "_end", None)

    def check(self):
        """Raise `MrcError` if the mapped file is now shorter than its header says."""
        mapped, end = getattr(self, "_mmap", None), getattr(self, "_end", None)
        if mapped is None or end is None:
            return
        try:
            size = mapped.size()  # fstat of the mapping's own descriptor: same inode
        except (OSError, ValueError):
            return
        if size < end:
            raise MrcError(f"MRC file {self._path} was truncated while in use: {size} bytes, "
                           f"its header needs {end}")

    def __getitem__(self, key):
        self.check()
        return super().__getitem__(key)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        def plain(arrays):
            out = []
            for a in arrays:
                if isinstance(a, MappedVolume):
                    a.check()
                    a = a.view(np.ndarray)
                out.append(a)
            return tuple(out)
        if "out" in kwargs:
            kwargs["out"] = plain(kwargs["out"])
        return getattr(ufunc, method)(*plain(inputs), **kwargs)


def mrc_header_info(path):
    """Shape and voxel size of an MRC file without reading its data.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        ``shape`` (nz, ny, nx), ``voxel_size`` (Å, x), ``origin`` (x, y, z in Å
        from the header), ``dtype``.

    Raises
    ------
    MrcError
        If the file is missing or its header/data size are inconsistent.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "tomo.mrc")
    >>> write_mrc(path, np.zeros((4, 5, 6), np.float32), voxel_size=13.48, origin=(1, 2, 3))
    >>> info = mrc_header_info(path)
    >>> info["shape"], info["voxel_size"], info["origin"], info["dtype"].name
    ((4, 5, 6), 13.48, (1.0, 2.0, 3.0), 'float32')
    >>> tmp.cleanup()
    """
    mrc = _open(path, mmap=True)
    try:
        shape = tuple(int(v) for v in mrc.data.shape)
        if len(shape) == 2:
            shape = (1,) + shape
        voxel = mrc.voxel_size
        origin = mrc.header.origin
        return {"shape": shape, "voxel_size": round(float(voxel.x), 4),
                "origin": (float(origin.x), float(origin.y), float(origin.z)),
                "dtype": mrc.data.dtype}
    finally:
        mrc.close()


def write_mrc(path, data, voxel_size, origin=None):
    """Write a volume as a float32 (or integer-typed) MRC file, atomically.

    Parameters
    ----------
    path : str or path-like
    data : (nz, ny, nx) array
    voxel_size : float
        Å/voxel, written to the header.
    origin : (3,) float, optional
        Header origin (x, y, z) in Å.

    Raises
    ------
    OSError
        Naming `path`, when it cannot be written (e.g. no space left).

    Notes
    -----
    The file appears under its final name only once complete, so a failure
    never leaves a truncated volume behind.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "labels.mrc")
    >>> write_mrc(path, np.ones((2, 3, 4), np.int16), voxel_size=5.0)   # integer types are kept
    >>> write_mrc(os.path.join(tmp.name, "map.mrc"), np.ones((2, 3, 4)), voxel_size=5.0)
    >>> read_mrc(path).dtype.name, read_mrc(os.path.join(tmp.name, "map.mrc")).dtype.name
    ('int16', 'float32')
    >>> write_mrc(path, np.ones((2, 3, 4), np.uint8), voxel_size=5.0)   # MRC mode 6
    >>> read_mrc(path).dtype.name
    'uint16'
    >>> sorted(os.listdir(tmp.name))            # no temporary file left behind
    ['labels.mrc', 'map.mrc']
    >>> tmp.cleanup()
    """
    path = os.fspath(path)
    data = np.asarray(data)
    if data.dtype not in (np.int8, np.int16, np.uint8, np.uint16, np.float32):
        data = data.astype(np.float32)
    try:
        with atomic_path(path) as tmp:
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(data)
                mrc.voxel_size = float(voxel_size)
                if origin is not None:
                    mrc.header.origin = tuple(float(v) for v in origin)
    except OSError as err:  # e.g. a full disk: say which file
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from err


def create_mrc(path, shape, voxel_size, dtype=np.float32):
    """Create an MRC file of a given shape and return it open for slab-wise writing.

    Parameters
    ----------
    path : str or path-like
    shape : (nz, ny, nx)
    voxel_size : float
        Å/voxel.
    dtype : numpy dtype, optional

    Returns
    -------
    mrcfile.mrcmemmap.MrcMemmap
        Write slabs into ``mrc.data[z0:z1]``; call `update_header_stats_slabs`
        and ``close()`` at the end. The data go to ``<path>.part``, which
        ``close()`` (or a ``with`` block that ends without an exception) renames
        to `path`: a writer that dies midway never leaves a truncated `path`.

    Raises
    ------
    OSError
        Naming `path`, when the disk has no room for the whole file.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "big.mrc")
    >>> mrc = create_mrc(path, (4, 3, 2), voxel_size=10.0)
    >>> os.path.exists(path)                     # not before close()
    False
    >>> for z0 in range(0, 4, 2):
    ...     mrc.data[z0:z0 + 2] = z0
    >>> mrc.update_header_stats()
    >>> mrc.close()
    >>> read_mrc(path)[:, 0, 0].tolist(), mrc_header_info(path)["voxel_size"]
    ([0.0, 0.0, 2.0, 2.0], 10.0)
    >>> tmp.cleanup()
    """
    path = os.fspath(path)
    mrc = _AtomicMrcMemmap(path + PART_SUFFIX, mode="w+", overwrite=True)
    try:
        # what mrcfile.new_mmap does, on the subclass
        mrc._open_memmap(np.dtype(dtype), tuple(shape))
        # reserve the blocks now: a full disk is an OSError here, not a SIGBUS that
        # kills the process when a slab is later stored into the sparse mapping
        fileno = mrc._iostream.fileno()
        os.posix_fallocate(fileno, 0, os.fstat(fileno).st_size)
    except OSError as err:
        mrc.__exit__(type(err), err, None)
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from err
    mrc.update_header_from_data()
    mrc.voxel_size = float(voxel_size)
    mrc._final = path
    return mrc


class _AtomicMrcMemmap(mrcfile.mrcmemmap.MrcMemmap):
    """A memory-mapped MRC file written as ``.part``, renamed when closed normally."""

    _final = None

    def close(self):
        final, self._final = self._final, None
        super().close()
        if final is not None:
            os.replace(self._iostream.name, final)

    def __exit__(self, exc_type, exc_val, exc_tb):
        if exc_type is None:
            self.close()
            return
        self._final = None  # a failed writer publishes nothing
        super().close()
        with contextlib.suppress(OSError):
            os.remove(self._iostream.name)

    def __del__(self):
        self._final = None  # garbage collected without close(): never published
        super().__del__()


def _mode(dtype):
    return {np.dtype(np.int8): 0, np.dtype(np.int16): 1, np.dtype(np.float32): 2,
            np.dtype(np.uint16): 6, np.dtype(np.uint8): 6}[np.dtype(dtype)]


def read_mrc_geometry(path):
    """Voxel size, origin and start indices of an MRC file, from its header only.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        ``voxel_size`` (x, y, z) Å/voxel, ``origin`` (x, y, z) Å, ``start``
        (nxstart, nystart, nzstart) voxels: what `write_mrc_slabs` needs to
        give another file the same geometry.

    Raises
    ------
    MrcError
        If the file is missing or not an MRC file.

    Examples
    --------
    >>> import os, tempfile
    >>> workdir = tempfile.TemporaryDirectory()
    >>> path = os.path.join(workdir.name, "v.mrc")
    >>> write_mrc(path, np.zeros((2, 3, 4), np.float32), voxel_size=7.5, origin=(1, 2, 3))
    >>> geometry = read_mrc_geometry(path)
    >>> geometry["voxel_size"], geometry["origin"], geometry["start"]
    ((7.5, 7.5, 7.5), (1.0, 2.0, 3.0), (0, 0, 0))
    >>> workdir.cleanup()
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MrcError(f"MRC file not found: {path}")
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            header, voxel = mrc.header, mrc.voxel_size
            return {"voxel_size": (float(voxel.x), float(voxel.y), float(voxel.z)),
                    "origin": (float(header.origin.x), float(header.origin.y),
                               float(header.origin.z)),
                    "start": (int(header.nxstart), int(header.nystart), int(header.nzstart))}
    except Exception as err:  # mrcfile raises ValueError/OSError/EOFError for broken files
        raise MrcError(f"cannot read MRC file {path}: {err}") from err


def write_mrc_slabs(path, data, voxel_size, origin=None, start=None, slab=16,
                    dtype=np.float32):
    """Write a large volume slab by slab, atomically, with exact header statistics.

    Unlike `write_mrc` no whole-volume temporary is made: slabs are copied
    into a memory-mapped file (their pages released as they are written)
    and the header's min, max, mean and rms are then accumulated slab by
    slab in float64 (`update_header_stats_slabs`).

    Parameters
    ----------
    path : str or path-like
    data : (nz, ny, nx) array
        Written as ``dtype``, converted slab by slab.
    voxel_size : float or (3,) float
        Å/voxel, one for all axes or (x, y, z).
    origin : (3,) float, optional
        Header origin (x, y, z) in Å.
    start : (3,) int, optional
        Header start indices (nxstart, nystart, nzstart).
    slab : int, optional
        z-planes copied at a time.
    dtype : numpy dtype, optional
        float32 (default) or an MRC integer type (int8, int16, uint8, uint16),
        e.g. for label volumes.

    Examples
    --------
    >>> import os, tempfile
    >>> workdir = tempfile.TemporaryDirectory()
    >>> path = os.path.join(workdir.name, "v.mrc")
    >>> data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    >>> write_mrc_slabs(path, data, voxel_size=(2.0, 2.0, 3.0), start=(0, 0, 5), slab=1)
    >>> bool(np.array_equal(read_mrc(path), data)), read_mrc_geometry(path)["voxel_size"]
    (True, (2.0, 2.0, 3.0))
    >>> with mrcfile.open(path) as mrc:
    ...     float(mrc.header.dmax)
    23.0
    >>> workdir.cleanup()
    """
    with create_mrc(path, data.shape, 1.0, dtype) as mrc:
        mrc.voxel_size = voxel_size
        if origin is not None:
            mrc.header.origin = tuple(float(v) for v in origin)
        if start is not None:
            for field, value in zip(("nxstart", "nystart", "nzstart"), start):
                mrc.header[field] = value
        for z0 in range(0, data.shape[0], slab):
            mrc.data[z0:z0 + slab] = np.asarray(data[z0:z0 + slab]).astype(dtype, copy=False)
            release_pages(mrc.data)
            release_pages(data)
        update_header_stats_slabs(mrc, slab)


def update_header_stats_slabs(mrc, slab=16):
    """Set an open MRC file's header min, max, mean and rms from its data, slab by slab.

    mrcfile's ``update_header_stats`` makes whole-volume temporaries (and
    keeps every page of a memory map resident); here the sums are
    accumulated in float64 over ``slab`` z-planes at a time and the pages
    are released after each.

    Parameters
    ----------
    mrc : mrcfile.mrcfile.MrcFile or MrcMemmap
        Open for writing (e.g. from `create_mrc`).
    slab : int, optional

    Examples
    --------
    >>> import os, tempfile
    >>> workdir = tempfile.TemporaryDirectory()
    >>> path = os.path.join(workdir.name, "v.mrc")
    >>> with create_mrc(path, (3, 2, 2), 1.0) as mrc:
    ...     mrc.data[:] = np.arange(12).reshape(3, 2, 2)
    ...     update_header_stats_slabs(mrc, slab=2)
    ...     float(mrc.header.dmin), float(mrc.header.dmax), float(mrc.header.dmean)
    (0.0, 11.0, 5.5)
    >>> workdir.cleanup()
    """
    lo, hi, mean, std = volume_stats(mrc.data, slab)
    mrc.header.dmin, mrc.header.dmax, mrc.header.dmean, mrc.header.rms = lo, hi, mean, std


def volume_stats(data, slab=16):
    """Min, max, mean and standard deviation of a volume, ``slab`` z-planes at a time.

    Sums are accumulated in float64 without whole-volume temporaries, and a
    memory map's pages are released after each slab.

    Returns
    -------
    (min, max, mean, std) : tuple of float

    Examples
    --------
    >>> volume_stats(np.arange(8, dtype=np.float32).reshape(2, 2, 2), slab=1)
    (0.0, 7.0, 3.5, 2.29128784747792)
    """
    lo, hi, total, total2 = math.inf, -math.inf, 0.0, 0.0
    for z0 in range(0, data.shape[0], slab):
        block = data[z0:z0 + slab]
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        total += float(block.sum(dtype=np.float64))
        total2 += float(np.square(block, dtype=np.float64).sum())
        release_pages(data)
    n = data.size
    mean = total / n
    return lo, hi, mean, math.sqrt(max(total2 / n - mean * mean, 0.0))


def release_pages(array):
    """Drop the resident pages of a memory-mapped array (they stay in the page cache).

    A no-op for arrays that are not memory maps. Reading or writing a volume
    larger than memory through a map keeps every touched page resident
    until the map closes; releasing them slab by slab bounds memory.

    Examples
    --------
    >>> release_pages(np.zeros(3))    # nothing to release
    """
    mm = getattr(array, "_mmap", None)
    if mm is None:
        base = getattr(array, "base", None)
        mm = base if isinstance(base, mmap.mmap) else None
    if mm is not None:
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):
            pass
