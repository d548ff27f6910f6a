"""Imaging the phantom's density: ice, background, missing wedge, CTF, drift, noise.

The steps `simulate_tomogram` applies to the placed objects, in order:
`_add_ice` (ice grey level and structured background inside the slab, then
the polarity), `_filtered_spectrum` (missing wedge with tilt axis y and beam
z, and the phase-flipped CTF band-pass `ctf_band_pass`), `_add_drift` (a slow
grey-level ramp) and `_add_noise` (Gaussian, white inside the measured
Fourier region, at a requested SNR).

Arrays are [z, y, x] float32; frequencies are cycles per voxel unless said.
"""
import math
import os

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from ..fourier import wedge_mask

_N_THREADS = max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------
# Ice slab and structured background
# ---------------------------------------------------------------------------

def _linear_upsample_weights(n, step):
    """Indices and weights interpolating a coarse axis (node spacing ``step``) to ``n`` samples."""
    u = np.arange(n) / step + 1          # +1: the coarse grid has a node of margin
    i0 = np.floor(u).astype(int)
    return i0, (u - i0).astype(np.float32)


def _smooth_noise(shape, correlation, rng):
    """Unit-variance Gaussian noise low-passed to a correlation length (voxels).

    White noise on a grid ``correlation`` times coarser is Gaussian-smoothed
    and linearly interpolated back, one axis at a time (separable, so the
    cost is a few passes over the output rather than a 3D interpolation).
    """
    coarse_shape = tuple(int(math.ceil(n / correlation)) + 3 for n in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 1.0)
    coarse = (coarse / coarse.std()).astype(np.float32)
    ix, wx = _linear_upsample_weights(shape[2], correlation)
    coarse = coarse[:, :, ix] * (1 - wx) + coarse[:, :, ix + 1] * wx
    iy, wy = _linear_upsample_weights(shape[1], correlation)
    coarse = coarse[:, iy] * (1 - wy)[:, None] + coarse[:, iy + 1] * wy[:, None]
    iz, wz = _linear_upsample_weights(shape[0], correlation)
    out = np.empty(shape, dtype=np.float32)
    for z in range(shape[0]):
        out[z] = coarse[iz[z]] * (1 - wz[z]) + coarse[iz[z] + 1] * wz[z]
    return out



def _add_ice(volume, z_bot, z_top, level, background_amplitude, voxel_size, contrast, rng):
    """Add the ice (grey ``level``, soft slab edges) and its background in place; set polarity.

    The background is `_smooth_noise` with a 40 Å correlation length and
    standard deviation ``background_amplitude``, only inside the ice;
    ``contrast`` 'dark' negates the whole volume afterwards.
    """
    shape = volume.shape
    nz = shape[0]
    bg = (_smooth_noise(shape, max(2.0, 40.0 / voxel_size), rng)
          if background_amplitude else None)
    z = np.arange(nz, dtype=np.float32)
    for z0 in range(0, nz, 16):
        zz = z[z0:z0 + 16, None, None]
        occ = (0.25 * (1 + np.tanh(zz - z_bot[None])) * (1 + np.tanh(z_top[None] - zz))
               ).astype(np.float32)
        chunk = volume[z0:z0 + 16]
        chunk += occ * level[None].astype(np.float32)
        if bg is not None:
            chunk += np.float32(background_amplitude) * occ * bg[z0:z0 + 16]
    del bg
    if contrast == "dark":
        np.negative(volume, out=volume)


# ---------------------------------------------------------------------------
# Fourier filters
# ---------------------------------------------------------------------------

def ctf_band_pass(k, defocus=3.0, voltage=300.0, amplitude_contrast=0.07, bfactor=50.0):
    """Phase-flipped CTF magnitude used as the simulator's band-pass.

    ``|sqrt(1 - A^2) sin(chi) + A cos(chi)| * exp(-B k^2 / 4)`` with
    ``chi = pi * lambda * defocus * k^2`` (spherical aberration neglected):
    low frequencies are attenuated to the amplitude-contrast level ``A``,
    then the band oscillates with zeros where ``chi`` hits multiples of pi,
    as in a phase-flipped cryo-ET tomogram.

    Parameters
    ----------
    k : array of float
        Spatial frequency, 1/Å.
    defocus : float
        Underfocus, µm.
    voltage : float
        Acceleration voltage, kV (sets the electron wavelength).
    amplitude_contrast : float
    bfactor : float
        Envelope B-factor, Å^2.

    Returns
    -------
    ndarray of float
        The band-pass, shape of ``k``, in [0, 1].

    Examples
    --------
    >>> k = np.array([0.0, 0.01, 0.02])                 # 1/Å
    >>> ctf_band_pass(k).round(3)                        # 3 µm underfocus, 300 kV
    array([0.07 , 0.253, 0.722])
    """
    v = voltage * 1e3
    wavelength = 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))    # Å
    chi = np.pi * wavelength * defocus * 1e4 * k ** 2
    a = amplitude_contrast
    envelope = np.exp(-bfactor * k ** 2 / 4)
    return np.abs(np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * envelope




def _filtered_spectrum(volume, voxel_size, tilt_range, ctf, defocus, bfactor):
    """The half spectrum (rfftn) of ``volume`` times the wedge and CTF; and the wedge.

    Returns
    -------
    spectrum : complex64 ndarray
        Filtered in place, chunk by chunk in kz (no volume-sized filter).
    wedge : bool ndarray, broadcastable to the spectrum
        The measured Fourier region (all True when ``tilt_range`` is None).
    """
    shape = volume.shape
    nz, ny, nx = shape
    spectrum = sfft.rfftn(volume, workers=_N_THREADS)
    wedge = (np.ones((nz, 1, nx // 2 + 1), bool) if tilt_range is None
             else wedge_mask(shape, tilt_range))
    kz = sfft.fftfreq(nz).astype(np.float32)[:, None, None]
    ky = sfft.fftfreq(ny).astype(np.float32)[None, :, None]
    kx = sfft.rfftfreq(nx).astype(np.float32)[None, None, :]
    for z0 in range(0, nz, 16):
        filt = wedge[z0:z0 + 16].astype(np.float32)
        if ctf:
            k = np.sqrt(kz[z0:z0 + 16] ** 2 + ky ** 2 + kx ** 2) / np.float32(voxel_size)
            filt = filt * ctf_band_pass(k, defocus=defocus, bfactor=bfactor).astype(np.float32)
        spectrum[z0:z0 + 16] *= filt
    return spectrum, wedge


def _inverse(spectrum, shape):
    """The real volume of a half spectrum; the spectrum's buffer is consumed.

    overwrite_x: the spectrum is not needed afterwards (its buffer is reused
    for the noise), which saves pocketfft a volume-sized copy.
    """
    return sfft.irfftn(spectrum, s=shape, workers=_N_THREADS, overwrite_x=True)


# ---------------------------------------------------------------------------
# Drift and noise
# ---------------------------------------------------------------------------

def _add_drift(tomogram, amplitude, z_bot, z_top, rng):
    """Add a linear grey-level ramp across x and z in place (`simulate_tomogram`).

    Returns the signal variance inside the ice measured BEFORE the ramp (the
    SNR's reference, so the drift does not change the noise level), or None
    when there is no drift (no rng draw either: seeds keep their phantoms).
    """
    if not amplitude:
        return None
    var_s = _masked_var(tomogram, z_bot, z_top)
    angle = rng.uniform(0, 2 * np.pi)
    nz, _, nx = tomogram.shape
    ramp_x = (np.cos(angle) * (np.arange(nx) / max(nx - 1, 1) - 0.5)).astype(np.float32)
    ramp_z = (np.sin(angle) * (np.arange(nz) / max(nz - 1, 1) - 0.5)).astype(np.float32)
    # peak-to-peak |cos| + |sin| of the unit ramp, normalised to the amplitude
    scale = np.float32(amplitude * np.sqrt(var_s) / (abs(np.cos(angle)) + abs(np.sin(angle))))
    for z in range(nz):
        tomogram[z] += scale * (ramp_z[z] + ramp_x)[None, :]
    return var_s


def _add_noise(tomogram, snr, signal_var, rng, wedge=None, spectrum=None):
    """Add Gaussian noise of variance ``signal_var / snr`` (inside the ice) in place.

    Without ``wedge`` the noise is white in real space; with it, it is white
    inside the measured Fourier region and drawn straight in Fourier space
    into ``spectrum``'s buffer (one inverse FFT, no forward one).
    """
    if wedge is None:
        noise = rng.standard_normal(tomogram.shape, dtype=np.float32)
    else:
        spectrum.real = rng.standard_normal(spectrum.shape, dtype=np.float32)
        spectrum.imag = rng.standard_normal(spectrum.shape, dtype=np.float32)
        spectrum *= wedge
        noise = _inverse(spectrum, tomogram.shape)
    noise *= np.float32(np.sqrt(signal_var / snr / _masked_var(noise)))
    tomogram += noise


# ---------------------------------------------------------------------------
# Slab statistics
# ---------------------------------------------------------------------------

def _slab_mask(shape, z_bot, z_top):
    """Boolean [z, y, x] mask of the voxels between the two ice surfaces."""
    z = np.arange(shape[0])[:, None, None]
    return (z >= z_bot[None]) & (z <= z_top[None])


def _masked_var(volume, z_bot=None, z_top=None):
    """Variance of a volume inside the ice slab (everywhere without bounds).

    Accumulated per z-chunk in float64, so no volume-sized temporary is made.
    """
    n = total = total2 = 0.0
    z = np.arange(volume.shape[0])
    for z0 in range(0, volume.shape[0], 16):
        zz = z[z0:z0 + 16, None, None]
        if z_bot is None:
            mask = np.ones((len(zz),) + volume.shape[1:], bool)
        else:
            mask = (zz >= z_bot[None]) & (zz <= z_top[None])
        chunk = volume[z0:z0 + 16]
        n += mask.sum()
        total += np.sum(chunk, where=mask, dtype=np.float64)
        total2 += np.sum(np.square(chunk, dtype=np.float64), where=mask)
    if n < 2:
        raise ValueError("the ice slab is empty: cannot compute the signal variance for snr")
    mean = total / n
    return float(total2 / n - mean * mean)
