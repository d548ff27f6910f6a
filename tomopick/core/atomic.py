"""Atomic file writes: a file appears under its final name only once complete.

A run killed in the middle of a write (SIGKILL, a cancelled cluster job, a
full disk) leaves at most a ``<name>.part`` file, never a truncated volume or
table under the name a later step (or a resumed run) reads.
"""
import contextlib
import os

import numpy as np

PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_path(path):
    """Write to a temporary path that replaces `path` when the block succeeds.

    Parameters
    ----------
    path : str or path-like
        Final file name.

    Yields
    ------
    str
        ``<path>.part``, in the same folder (so the rename cannot cross file
        systems). On an exception it is deleted and `path` is left as it was.

    Examples
    --------
    >>> import os, tempfile
    >>> workdir = tempfile.TemporaryDirectory()
    >>> target = os.path.join(workdir.name, "table.txt")
    >>> with atomic_path(target) as tmp:
    ...     with open(tmp, "w") as handle:
    ...         _ = handle.write("complete")
    >>> open(target).read()
    'complete'
    >>> try:
    ...     with atomic_path(target) as tmp:
    ...         with open(tmp, "w") as handle:
    ...             _ = handle.write("half")
    ...         raise OSError("disk full")
    ... except OSError:
    ...     pass
    >>> open(target).read(), os.path.exists(target + ".part")
    ('complete', False)
    >>> workdir.cleanup()
    """
    path = os.fspath(path)
    tmp = path + PART_SUFFIX
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def save_npz(path, compressed=False, **arrays):
    """``numpy.savez`` to exactly `path`, atomically.

    Parameters
    ----------
    path : str or path-like
        File name (kept as given: no ``.npz`` is appended).
    compressed : bool, optional
        ``numpy.savez_compressed`` instead of ``numpy.savez``.
    **arrays : array_like
        Named arrays, read back with ``numpy.load(path)[name]``.

    Examples
    --------
    >>> import os, tempfile
    >>> workdir = tempfile.TemporaryDirectory()
    >>> target = os.path.join(workdir.name, "picks.npz")
    >>> save_npz(target, positions=np.zeros((2, 3), np.float32))
    >>> np.load(target)["positions"].shape
    (2, 3)
    >>> workdir.cleanup()
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            (np.savez_compressed if compressed else np.savez)(handle, **arrays)


def save_npy(path, array):
    """``numpy.save`` to exactly `path`, atomically (see `save_npz`).

    Examples
    --------
    >>> import os, tempfile
    >>> workdir = tempfile.TemporaryDirectory()
    >>> target = os.path.join(workdir.name, "sum.npy")
    >>> save_npy(target, np.arange(3, dtype=np.float32))
    >>> np.load(target).tolist()
    [0.0, 1.0, 2.0]
    >>> workdir.cleanup()
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
