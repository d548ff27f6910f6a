"""Changing the voxel size of volumes: Fourier cropping (binning without aliasing)."""
import numpy as np
import scipy.fft


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
        # frequencies 0 .. ceil(m/2)-1 and -floor(m/2) .. -1 (-m/2 included for even m)
        spectrum = np.take(spectrum, np.r_[0:(m + 1) // 2, n - m // 2:n], axis=axis)
    spectrum = np.take(spectrum, np.arange(shape[-1] // 2 + 1), axis=axes[-1])
    out = scipy.fft.irfftn(spectrum, s=shape, axes=axes, workers=-1)
    out *= np.prod(shape, dtype=float) / np.prod(old, dtype=float)
    return np.fft.fftshift(out, axes=axes).astype(np.float32, copy=False)


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


def fourier_bin(volume, binning):
    """Bin a volume by a whole factor, Fourier-cropped, with exactly ``binning`` times the voxel size.

    Axes whose size is not a multiple of ``2 * binning`` are first padded at
    their far end with the volume mean, so that every axis shrinks by exactly
    ``binning`` (one sampling rate for x, y and z) and a position maps as
    ``x / binning`` (bottom-left origin: voxel ``n // 2`` lands on ``m // 2``).

    Parameters
    ----------
    volume : (nz, ny, nx) array
    binning : int
        >= 1.

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
    padded_shape = tuple(m * int(binning) for m in shape)
    data = np.asarray(volume)
    if padded_shape != data.shape:
        padded = np.empty(padded_shape, np.float32)
        padded[...] = np.float32(data.mean(dtype=np.float64))
        padded[tuple(slice(0, n) for n in data.shape)] = data
        data = padded
    return fourier_crop_to(data, shape)
