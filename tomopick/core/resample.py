"""Changing the voxel size of volumes: Fourier cropping (binning without aliasing).

`fourier_crop_to` crops arrays (and stacks) in one go; `fourier_crop_slabs`
gives the same result for whole tomograms read a few planes at a time.
"""
import numpy as np
import scipy.fft

from .formats.mrc import release_pages


def fourier_crop_to(data, shape, axes=None):
    """Downsample an array by Fourier cropping to a given shape along some axes.

    Parameters
    ----------
    data : array of float
        A volume [z, y, x], or a stack of them (then give ``axes``).
    shape : tuple of int
        New size along each of ``axes``; each at most the old size.
    axes : tuple of int, optional
        The axes to crop; all axes when omitted.

    Returns
    -------
    ndarray of float32
        Same mean as the input. The element at index ``n // 2`` maps to index
        ``m // 2`` exactly (the data are shifted so that it is the FFT origin
        before cropping), and a feature at offset ``d`` from it ends at offset
        ``d * m / n``. Frequencies beyond the new Nyquist are removed, not aliased.

    Examples
    --------
    A cosine of 2 cycles per box is resampled exactly, centre voxel on centre
    voxel (index 8 of 16 becomes index 4 of 8):

    >>> x = (np.arange(16) - 8) / 16
    >>> out = fourier_crop_to(np.cos(2 * np.pi * 2 * x), (8,))
    >>> np.round(out, 6) + 0.0
    array([ 1.,  0., -1.,  0.,  1.,  0., -1.,  0.], dtype=float32)
    """
    data = np.asarray(data, dtype=np.float32)
    axes = tuple(range(data.ndim)) if axes is None else tuple(axes)
    old = tuple(data.shape[a] for a in axes)
    shape = tuple(int(m) for m in shape)
    if len(shape) != len(axes) or any(m < 1 or m > n for m, n in zip(shape, old)):
        raise ValueError(f"cannot Fourier-crop a shape {old} to {shape}")
    if shape == old:
        return data.copy()
    # single precision in, single precision out: half the memory of numpy.fft
    spectrum = scipy.fft.rfftn(np.fft.ifftshift(data, axes=axes), axes=axes, workers=-1)
    for axis, n, m in zip(axes[:-1], old[:-1], shape[:-1]):
        spectrum = np.take(spectrum, _kept_frequencies(n, m), axis=axis)
    spectrum = np.take(spectrum, np.arange(shape[-1] // 2 + 1), axis=axes[-1])
    out = scipy.fft.irfftn(spectrum, s=shape, axes=axes, workers=-1)
    out *= np.prod(shape, dtype=float) / np.prod(old, dtype=float)
    return np.fft.fftshift(out, axes=axes).astype(np.float32, copy=False)


def _kept_frequencies(n, m):
    """Indices, in a length-`n` complex spectrum, of the frequencies a crop to `m` keeps.

    0 .. ceil(m/2)-1 and -floor(m/2) .. -1 (-m/2 included for even m).
    """
    return np.r_[0:(m + 1) // 2, n - m // 2:n]


def fourier_crop(volume, factor):
    """Downsample a volume by Fourier cropping.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    factor : float
        Downsampling factor >= 1; the new shape is ``round(n / factor)`` along
        every axis and the voxel size grows by ``n / round(n / factor)``.

    Returns
    -------
    (mz, my, mx) ndarray of float32
        See `fourier_crop_to`.

    Examples
    --------
    >>> volume = np.ones((30, 20, 9), np.float32)
    >>> out = fourier_crop(volume, 2)
    >>> out.shape, float(out.mean())
    ((15, 10, 4), 1.0)
    """
    if factor < 1:
        raise ValueError(f"the downsampling factor must be >= 1, got {factor}")
    return fourier_crop_to(volume, tuple(cropped_size(n, factor) for n in np.shape(volume)))


def cropped_size(n, factor):
    """Size of an axis of ``n`` voxels Fourier-cropped by ``factor``: ``round(n / factor)``, >= 1.

    The one rounding rule of `fourier_crop` and of subtomogram downsampling;
    the voxel size then grows by ``n / cropped_size(n, factor)``.

    Examples
    --------
    >>> cropped_size(64, 2), cropped_size(33, 2.0), cropped_size(40, 3)
    (32, 16, 13)
    """
    if factor < 1:
        raise ValueError(f"the downsampling factor must be >= 1, got {factor}")
    return max(1, int(round(n / factor)))


def binned_shape(shape, binning):
    """Shape of a volume binned by `fourier_bin`: every axis ``ceil(n / (2 b)) * 2``.

    Examples
    --------
    >>> binned_shape((24, 32, 40), 2), binned_shape((33, 100, 101), 2)
    ((12, 16, 20), (18, 50, 52))
    """
    b = int(binning)
    if b < 1 or b != binning:
        raise ValueError(f"binning must be a whole number >= 1, got {binning}")
    return tuple(2 * -(-int(n) // (2 * b)) for n in shape)


def fourier_crop_slabs(volume, shape, pad_to=None, fill=0.0, slab=8):
    """`fourier_crop_to` of a whole 3D volume, reading it a few z-planes at a time.

    The crop is done one axis at a time (cropping a spectrum to a box is
    separable), which equals the one-shot `fourier_crop_to` to float32
    rounding, Nyquist convention included: first x and y on ``slab`` planes
    at a time, then z on blocks of y-rows. Only ``slab`` planes of `volume`
    are read at once, and a memory map's pages are released after each, so
    memory is the output plus a half spectrum of ``(nz, my, mx // 2 + 1)``
    complex64 (``my * mx / (ny * nx)`` of the input), never the
    whole-volume spectrum. Use it for tomograms.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        Any real dtype; a memory-mapped tomogram is read slab by slab.
    shape : (mz, my, mx) tuple of int
        Each at most the (padded) size.
    pad_to : (pz, py, px) tuple of int, optional
        Crop the volume padded at its far end to this shape with ``fill``.
    fill : float, optional
    slab : int, optional
        z-planes read and cropped in x and y at a time.

    Returns
    -------
    (mz, my, mx) ndarray of float32

    Examples
    --------
    >>> v = np.random.default_rng(0).normal(size=(12, 10, 9)).astype(np.float32)
    >>> out = fourier_crop_slabs(v, (6, 5, 4), slab=5)
    >>> bool(np.allclose(out, fourier_crop_to(v, (6, 5, 4)), atol=1e-5))
    True
    """
    nz, ny, nx = np.shape(volume)
    pz, py, px = (nz, ny, nx) if pad_to is None else (int(n) for n in pad_to)
    mz, my, mx = (int(m) for m in shape)
    if pz < nz or py < ny or px < nx or not (0 < mz <= pz and 0 < my <= py and 0 < mx <= px):
        raise ValueError(f"cannot Fourier-crop a shape {(nz, ny, nx)} padded to "
                         f"{(pz, py, px)} to {tuple(shape)}")
    if (mz, my, mx) == (pz, py, px) == (nz, ny, nx):
        out = np.empty((nz, ny, nx), np.float32)
        for z0 in range(0, nz, slab):
            out[z0:z0 + slab] = volume[z0:z0 + slab]
            release_pages(volume)
        return out
    # The steps of fourier_crop_to - ifftshift, rfftn, crop, irfftn, fftshift -
    # one axis at a time (they act on different axes, so they commute). The
    # spectrum stays half (rfft) along x and complex until the last step,
    # which keeps the one-shot crop's Nyquist convention exactly.
    half = np.empty((pz, my, mx // 2 + 1), np.complex64)
    y_kept = _kept_frequencies(py, my)
    fill = np.float32(fill)
    for z0 in range(0, pz, slab):
        z1 = min(z0 + slab, pz)
        if z1 <= nz and (py, px) == (ny, nx):
            block = np.asarray(volume[z0:z1], dtype=np.float32)
        else:
            block = np.full((z1 - z0, py, px), fill, np.float32)
            if z0 < nz:
                block[:min(z1, nz) - z0, :ny, :nx] = volume[z0:min(z1, nz)]
        release_pages(volume)
        spectrum = scipy.fft.rfft(np.fft.ifftshift(block, axes=(1, 2)), axis=2, workers=-1)
        spectrum = scipy.fft.fft(spectrum[:, :, :mx // 2 + 1], axis=1, workers=-1)
        half[z0:z1] = np.fft.fftshift(
            scipy.fft.ifft(spectrum[:, y_kept], axis=1, workers=-1), axes=1)
    # then z, and back to real along x, on blocks of y-rows of about `slab` planes
    out = np.empty((mz, my, mx), np.float32)
    z_kept = _kept_frequencies(pz, mz)
    scale = np.float32(mz * my * mx / (pz * py * px))
    rows = max(1, slab * py // pz)
    for y0 in range(0, my, rows):
        spectrum = scipy.fft.fft(np.fft.ifftshift(half[:, y0:y0 + rows], axes=0), axis=0,
                                 workers=-1)
        block = scipy.fft.irfft(scipy.fft.ifft(spectrum[z_kept], axis=0, workers=-1), n=mx,
                                axis=2, workers=-1)
        out[:, y0:y0 + rows] = np.fft.fftshift(block, axes=(0, 2)) * scale
    return out


def fourier_bin(volume, binning, slab=8):
    """Bin a volume by a whole factor, Fourier-cropped, with exactly ``binning`` times the voxel size.

    Axes whose size is not a multiple of ``2 * binning`` are first padded at
    their far end with the volume mean, so that every axis shrinks by exactly
    ``binning`` (one sampling rate for x, y and z) and a position maps as
    ``x / binning`` (bottom-left origin: voxel ``n // 2`` lands on ``m // 2``).
    Streamed (`fourier_crop_slabs`): a memory-mapped tomogram is read
    ``slab`` planes at a time, and memory is about ``1 / binning ** 2`` of
    the input plus the output.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    binning : int
        >= 1.
    slab : int, optional
        z-planes read at a time.

    Returns
    -------
    ndarray of float32
        Shape `binned_shape`, same mean as the input.

    Examples
    --------
    >>> v = np.zeros((6, 8, 10), np.float32); v[2, 4, 6] = 1
    >>> out = fourier_bin(v, 2)
    >>> out.shape, np.unravel_index(out.argmax(), out.shape)
    ((4, 4, 6), (1, 2, 3))
    """
    shape = binned_shape(np.shape(volume), binning)
    padded = tuple(m * int(binning) for m in shape)
    mean = 0.0
    if padded != tuple(np.shape(volume)):
        total = 0.0
        for z0 in range(0, len(volume), slab):
            total += float(np.sum(volume[z0:z0 + slab], dtype=np.float64))
            release_pages(volume)
        mean = total / np.prod(np.shape(volume), dtype=float)
    return fourier_crop_slabs(volume, shape, pad_to=padded, fill=mean, slab=slab)
