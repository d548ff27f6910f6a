"""Denoising an MRC file into another, streaming: peak memory about one float32 volume."""
import os

import numpy as np

from tomopick.core.formats.mrc import read_mrc, read_mrc_geometry, release_pages, write_mrc_slabs

from .flows import check_volume, denoise


def denoise_file(in_path, out_path, method="EED", n_threads=1, slab_size=None,
                 progress=None, voxel_size=None, **params):
    """Denoise an MRC tomogram file into a new float32 MRC file, streaming.

    The input is memory-mapped and copied slab by slab into one float32
    working volume, which is filtered in place and written slab by slab; peak
    memory is about one float32 volume plus slab temporaries.  The output
    header keeps the input's voxel size, origin and start indices.

    Parameters
    ----------
    in_path, out_path : str or path-like
        Input and output MRC files (the output is replaced atomically).
    method : {'EED', 'BFlow'}
    n_threads, slab_size, progress
        As in `eed`.
    voxel_size : float, optional
        Å/voxel to write in the output header (e.g. the sampling rate a
        project assigned to the tomogram); default: the input header's.
    **params
        ``sigma``, ``n_iter``, ``lam``, ``time_step``, ``n_iter_bflow``,
        ``time_step_bflow`` as in `denoise`.

    Returns
    -------
    dict
        ``shape``, ``voxel_size`` (x, y, z Å), ``origin`` (x, y, z Å),
        ``passed_through`` (True for a constant volume, copied unchanged).

    Raises
    ------
    tomopick.core.formats.mrc.MrcError
        If the input is missing or not an MRC volume.
    ValueError
        For NaN/infinite voxels or invalid parameters.

    Examples
    --------
    >>> import os, tempfile
    >>> from tomopick.core.formats.mrc import read_mrc, write_mrc
    >>> workdir = tempfile.TemporaryDirectory()
    >>> folder = workdir.name
    >>> source, target = os.path.join(folder, "in.mrc"), os.path.join(folder, "out.mrc")
    >>> volume = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    >>> write_mrc(source, volume, voxel_size=10.0)
    >>> info = denoise_file(source, target, method="EED", n_iter=2)
    >>> info["shape"], info["voxel_size"], info["passed_through"]
    ((8, 8, 8), (10.0, 10.0, 10.0), False)
    >>> bool(read_mrc(target).std() < volume.std())
    True
    >>> workdir.cleanup()
    """
    src = read_mrc(in_path, mmap=True)
    geometry = read_mrc_geometry(in_path)
    voxel = geometry["voxel_size"]
    if voxel_size is not None:
        if not float(voxel_size) > 0:
            raise ValueError(f"voxel size must be > 0 Å, got {voxel_size}")
        # the header holds float32: report what it will hold
        voxel = (float(np.float32(voxel_size)),) * 3
    constant = check_volume(src, name=os.path.basename(os.fspath(in_path)))
    work = np.empty(src.shape, dtype=np.float32)
    for z0 in range(0, src.shape[0], 16):
        work[z0:z0 + 16] = src[z0:z0 + 16]
        release_pages(src)
    del src
    if not constant:
        denoise(work, method=method, n_threads=n_threads, slab_size=slab_size,
                progress=progress, out=work, **params)
    write_mrc_slabs(out_path, work, voxel, origin=geometry["origin"], start=geometry["start"])
    return {"shape": work.shape, "voxel_size": voxel, "origin": geometry["origin"],
            "passed_through": bool(constant)}
