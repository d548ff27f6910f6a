"""Fourier helpers (tomopick.core.fourier): wedge, band-pass, resampling, whitening, phases."""
import numpy as np
import pytest
import scipy.fft

from tomopick.core.fourier import (bandpass, randomize_phases, radial_power_spectrum,
                                   resample_volume, soft_sphere, soft_wedge, wedge_mask,
                                   whitening_filter)


def _blob(n, voxel, center_a=(0, 0, 0), sigma_a=30.0):
    z, y, x = np.mgrid[:n, :n, :n].astype(float) - n // 2
    cx, cy, cz = (c / voxel for c in center_a)
    r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
    return np.exp(-r2 / (2 * (sigma_a / voxel) ** 2)).astype(np.float32)


def test_resample_keeps_physical_size_and_centre():
    # a Gaussian of 30 Å sigma, 40 Å off centre, at 8.66 Å/voxel -> 12 Å/voxel
    src = _blob(64, 8.66, center_a=(40, 0, 0))
    out, size = resample_volume(src, 8.66, 12.0)
    assert abs(size / 12.0 - 1) < 0.005
    ref = _blob(out.shape[0], size, center_a=(40, 0, 0))
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.999
    # and back up again
    back, size2 = resample_volume(out, size, 6.0)
    ref2 = _blob(back.shape[0], size2, center_a=(40, 0, 0))
    assert np.corrcoef(back.ravel(), ref2.ravel())[0, 1] > 0.999


def test_soft_wedge_contains_the_binary_wedge():
    shape = (32, 8, 32)
    w = soft_wedge(shape, (-50, 60), edge=6)
    b = wedge_mask(shape, (-50, 60))
    assert np.all(w[b] == 1)
    assert 0 < w[~b].sum() < 0.5 * (~b).sum()
    with pytest.raises(ValueError, match="within"):
        soft_wedge(shape, (-95, 60))


def test_bandpass_on_white_noise_keeps_the_band():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((48, 48, 48)).astype(np.float32)
    w = bandpass(noise.shape, 10.0, lowpass=40.0, highpass=200.0)
    out = scipy.fft.irfftn(scipy.fft.rfftn(noise) * w, s=noise.shape)
    k, p = radial_power_spectrum(out)
    k_a = k / 10.0
    assert p[(k_a > 0.012) & (k_a < 0.02)].mean() > 0.5 * noise.size
    assert p[k_a > 0.03].mean() < 1e-6 * noise.size
    with pytest.raises(ValueError, match="highpass"):
        bandpass(noise.shape, 10.0, lowpass=40.0, highpass=30.0)


def test_whitening_flattens_a_coloured_spectrum():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((48, 48, 48)).astype(np.float32)
    coloured = scipy.fft.irfftn(scipy.fft.rfftn(noise) / (1 + 40 * np.sqrt(
        np.add.outer(np.add.outer(scipy.fft.fftfreq(48) ** 2, scipy.fft.fftfreq(48) ** 2),
                     scipy.fft.rfftfreq(48) ** 2))), s=noise.shape)
    k, p = radial_power_spectrum(coloured)
    white = scipy.fft.irfftn(scipy.fft.rfftn(coloured) * whitening_filter(k, p, coloured.shape),
                             s=noise.shape)
    k2, p2 = radial_power_spectrum(white)
    band = (k2 > 0.05) & (k2 < 0.45)
    assert p[band].max() / p[band].min() > 20
    assert p2[band].max() / p2[band].min() < 1.5


def test_phase_randomisation_keeps_low_resolution():
    vol = _blob(32, 10.0, sigma_a=25.0) + 0.3 * np.random.default_rng(2).standard_normal(
        (32, 32, 32)).astype(np.float32)
    out = randomize_phases(vol, 10.0, beyond=40.0, seed=1)
    low = bandpass(vol.shape, 10.0, lowpass=45.0)
    f = lambda v: scipy.fft.irfftn(scipy.fft.rfftn(v) * low, s=v.shape)   # noqa: E731
    assert np.corrcoef(f(vol).ravel(), f(out).ravel())[0, 1] > 0.98
    high = 1 - bandpass(vol.shape, 10.0, lowpass=30.0)
    g = lambda v: scipy.fft.irfftn(scipy.fft.rfftn(v) * high, s=v.shape)  # noqa: E731
    assert abs(np.corrcoef(g(vol).ravel(), g(out).ravel())[0, 1]) < 0.1


def test_soft_sphere_is_radial():
    m = soft_sphere((21, 21, 21), 6.0, edge=3.0)
    assert m[10, 10, 10] == 1 and m[10, 10, 16] == 1 and m[10, 10, 19] == 0
    assert np.allclose(m, m.transpose(2, 1, 0)) and np.allclose(m, m[::-1])
