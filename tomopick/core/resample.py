"""Changing the voxel size of volumes: Fourier cropping (binning without aliasing)."""
import numpy as np


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
        Same mean as the input. Unlike real-space binning, frequencies beyond
        the new Nyquist are removed instead of aliased.
    """
    if factor < 1:
        raise ValueError(f"the downsampling factor must be >= 1, got {factor}")
    volume = np.asarray(volume, dtype=np.float32)
    if factor == 1:
        return volume.copy()
    new_shape = tuple(max(1, int(round(n / factor))) for n in volume.shape)
    spectrum = np.fft.fftshift(np.fft.fftn(volume))
    # keep the centred block so that the zero frequency stays at index m // 2
    starts = [n // 2 - m // 2 for n, m in zip(volume.shape, new_shape)]
    cropped = spectrum[tuple(slice(s, s + m) for s, m in zip(starts, new_shape))]
    out = np.fft.ifftn(np.fft.ifftshift(cropped)).real
    out *= np.prod(new_shape) / np.prod(volume.shape)
    return out.astype(np.float32)
