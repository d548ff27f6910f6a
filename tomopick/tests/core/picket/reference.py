"""PickET's definitions written the way PickET writes them (window by window,
meshgrid in 'xy' order, numpy.fft.fftn + fftshift over all n^3 frequencies),
independently of tomopick.core.picket, and a small test volume."""
import numpy as np
import scipy.ndimage as ndi

from tomopick.core.picket import segment as seg


N = 5  # neighbourhood edge of the equivalence tests


def blobs(shape=(16, 20, 24), seed=0):
    """A small preprocessed volume with structure at several scales."""
    rng = np.random.default_rng(seed)
    vol = ndi.gaussian_filter(rng.normal(size=shape), 1.0)
    z, y, x = np.indices(shape)
    vol -= 2.0 * (((z - 8) ** 2 + (y - 10) ** 2 + (x - 12) ** 2) < 16)
    return seg.preprocess(vol.astype(np.float32))


def picket_windows(volume, n):
    """PickET's view_as_windows neighbourhoods of the symmetrically padded volume."""
    padded = np.pad(volume, n // 2, mode="symmetric")
    view = np.lib.stride_tricks.sliding_window_view(padded, (n, n, n))
    return view.reshape(-1, n, n, n)


def picket_fft_features(windows):
    spectra = np.fft.fftshift(np.fft.fftn(windows, axes=(-3, -2, -1)), axes=(-3, -2, -1))
    return np.abs(spectra).reshape(len(windows), -1)


def picket_gabor_bank(n, num_sinusoids=10):
    half = n // 2
    sigma = half / 3
    z, y, x = np.meshgrid(*[np.arange(-half, half + 1)] * 3)
    gaussian = np.exp(-0.5 * ((x ** 2 + y ** 2 + z ** 2) / (2 * sigma ** 2)))
    z, y, x = np.meshgrid(*[np.linspace(0, n, n)] * 3)
    bank = []
    for fz in np.linspace(0, 0.5, num_sinusoids):
        for fy in np.linspace(0, 0.5, num_sinusoids):
            for fx in np.linspace(0, 0.5, num_sinusoids):
                wave = np.cos(2 * np.pi * (fz * z + fy * y + fx * x))
                bank.append((wave * gaussian).reshape(-1))
    return np.array(bank, dtype=np.float32)
