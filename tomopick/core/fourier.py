"""Fourier-space helpers shared by template matching, averaging and the simulator.

Grids: volumes are [z, y, x]; their real FFTs (``scipy.fft.rfftn``) have shape
``(nz, ny, nx // 2 + 1)`` and frequencies in cycles per voxel (``fftfreq``
along z and y, ``rfftfreq`` along x). Filters are float32 weights on that
grid, broadcastable against the spectrum. Resolutions are in Å, frequencies
in 1/Å where a voxel size is given.

Missing wedge model: single-axis tilt about y with the beam along z at tilt
0. A tilt series from ``min`` to ``max`` degrees measures the Fourier
coefficient (kx, ky, kz) when the angle ``atan(-kz / kx)`` lies inside the
range; the wedge is the double cone about kz left out (see `wedge_mask`).
"""
import numpy as np
import scipy.fft

from .resample import fourier_crop_to


def rfft_frequencies(shape):
    """Frequencies (cycles/voxel) of an rfftn grid, broadcastable.

    Parameters
    ----------
    shape : (nz, ny, nx)

    Returns
    -------
    kz, ky, kx : float32 arrays of shapes (nz, 1, 1), (1, ny, 1), (1, 1, nx // 2 + 1)

    Examples
    --------
    >>> kz, ky, kx = rfft_frequencies((4, 4, 4))
    >>> kz.ravel().tolist(), kx.ravel().tolist()
    ([0.0, 0.25, -0.5, -0.25], [0.0, 0.25, 0.5])
    """
    nz, ny, nx = (int(n) for n in shape)
    kz = scipy.fft.fftfreq(nz).astype(np.float32)[:, None, None]
    ky = scipy.fft.fftfreq(ny).astype(np.float32)[None, :, None]
    kx = scipy.fft.rfftfreq(nx).astype(np.float32)[None, None, :]
    return kz, ky, kx


def radial_frequency(shape):
    """|k| (cycles/voxel) on an rfftn grid, float32 of shape (nz, ny, nx // 2 + 1).

    Examples
    --------
    >>> float(radial_frequency((4, 4, 4))[2, 2, 2])
    0.8660253882408142
    """
    kz, ky, kx = rfft_frequencies(shape)
    return np.sqrt(kz * kz + ky * ky + kx * kx)


def wedge_mask(shape, tilt_range):
    """Which rfftn coefficients a single-axis tilt series measures.

    Parameters
    ----------
    shape : (nz, ny, nx)
    tilt_range : (float, float)
        Minimum and maximum tilt angles, degrees. The tilt axis is y and the
        beam is z at tilt 0, so frequency (kx, ky, kz) is measured when the
        angle ``atan(-kz / kx)`` lies inside ``tilt_range``; the missing
        wedge is the double cone around kz.

    Returns
    -------
    (nz, 1, nx // 2 + 1) ndarray of bool
        Broadcastable over ky (the tilt axis does not matter).

    Examples
    --------
    >>> m = wedge_mask((8, 8, 8), (-60, 60))
    >>> bool(m[0, 0, 3]), bool(m[3, 0, 0]), bool(m[0, 0, 0])
    (True, False, True)
    """
    lo, hi = (float(t) for t in tilt_range)
    if not -90 <= lo < hi <= 90:
        raise ValueError(f"tilt_range must be (min, max) within [-90, 90], got {tilt_range}")
    nz, ny, nx = shape
    kz = scipy.fft.fftfreq(nz)[:, None, None]
    kx = scipy.fft.rfftfreq(nx)[None, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.degrees(np.arctan2(-kz, kx))    # kx >= 0: phi in [-90, 90]
    measured = (phi >= lo - 1e-9) & (phi <= hi + 1e-9)
    # (kx = 0, kz < 0) gives +90 and (kx = 0, kz > 0) -90: the same line in
    # Fourier space (Friedel pair), measured only when one tilt reaches 90.
    on_axis = (kx == 0) & (kz != 0)
    measured = np.where(on_axis, (lo <= -90) | (hi >= 90), measured)
    measured |= (kx == 0) & (kz == 0)
    return measured


def soft_wedge(shape, tilt_range, edge=5.0):
    """Missing-wedge weights with a soft angular edge.

    The binary `wedge_mask` rings in real space; a cos^2 roll-off over
    ``edge`` degrees outside the measured range keeps the template compact.
    The sample is the same as `wedge_mask`'s otherwise.

    Parameters
    ----------
    shape : (nz, ny, nx)
    tilt_range : (float, float)
        Degrees, within [-90, 90].
    edge : float
        Width of the roll-off, degrees (0 = binary).

    Returns
    -------
    (nz, 1, nx // 2 + 1) ndarray of float32
        1 inside the measured range, falling to 0 ``edge`` degrees outside.

    Examples
    --------
    >>> w = soft_wedge((16, 16, 16), (-60, 60), edge=10)
    >>> float(w[0, 0, 4]), float(w[4, 0, 0]), 0 < float(w[-2, 0, 1]) < 1
    (1.0, 0.0, True)
    """
    binary = wedge_mask(shape, tilt_range)
    if edge <= 0:
        return binary.astype(np.float32)
    lo, hi = (float(t) for t in tilt_range)
    nz, ny, nx = shape
    kz = scipy.fft.fftfreq(nz)[:, None, None]
    kx = scipy.fft.rfftfreq(nx)[None, None, :]
    phi = np.degrees(np.arctan2(-kz, kx))

    def weight(angle):
        outside = np.maximum(np.maximum(lo - angle, angle - hi), 0.0)
        return np.where(outside < edge, np.cos(0.5 * np.pi * outside / edge) ** 2, 0.0)

    w = weight(phi)
    # the kx = 0 line is reached from both ends of the range (+-90 are one line)
    on_axis = np.broadcast_to((kx == 0) & (kz != 0), w.shape)
    w = np.where(on_axis, np.maximum(weight(np.full_like(phi, 90.0)),
                                     weight(np.full_like(phi, -90.0))), w)
    w = np.maximum(w, binary)
    return w.astype(np.float32)


def bandpass(shape, voxel_size, lowpass=None, highpass=None):
    """Band-pass weights on an rfftn grid, with cos^2 edges.

    Parameters
    ----------
    shape : (nz, ny, nx)
    voxel_size : float
        Å per voxel.
    lowpass : float, optional
        Resolution (Å) above which frequencies are removed; weight 1/2 at
        ``1 / lowpass``, cos^2 roll-off from 0.9 to 1.1 times that frequency.
        None or 0 = keep everything up to Nyquist.
    highpass : float, optional
        Resolution (Å) below which (larger features) frequencies are removed;
        weight 1/2 at ``1 / highpass``, roll-off from 0.5 to 1.5 times it (a
        soft high-pass does not ring at the particle scale). The DC term is
        always removed when given. None or 0 = no high-pass.

    Returns
    -------
    (nz, ny, nx // 2 + 1) ndarray of float32

    Examples
    --------
    >>> w = bandpass((32, 32, 32), 10.0, lowpass=40.0, highpass=200.0)
    >>> float(w[0, 0, 0]), float(w[0, 0, 5]), float(w[0, 0, 12])
    (0.0, 1.0, 0.0)
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    k = radial_frequency(shape) / np.float32(voxel_size)      # 1/Å
    w = np.ones(k.shape, np.float32)

    def ramp(x):          # 0 -> 1 as x goes 0 -> 1, cos^2 shaped
        return np.sin(0.5 * np.pi * np.clip(x, 0, 1)) ** 2

    if lowpass:
        if lowpass <= 0:
            raise ValueError(f"lowpass must be positive (Å), got {lowpass}")
        f = 1.0 / lowpass
        w *= (1 - ramp((k - 0.9 * f) / (0.2 * f))).astype(np.float32)
    if highpass:
        if lowpass and highpass <= lowpass:
            raise ValueError(f"highpass ({highpass} Å) must be a larger length than lowpass "
                             f"({lowpass} Å)")
        f = 1.0 / highpass
        w *= ramp((k - 0.5 * f) / f).astype(np.float32)
        w[0, 0, 0] = 0
    return w


def soft_sphere(shape, radius, edge=2.0, center=None):
    """A spherical mask with a cos^2 edge, in real space.

    Parameters
    ----------
    shape : (nz, ny, nx)
    radius : float
        Voxels; weight 1 up to ``radius``.
    edge : float
        Voxels over which the weight falls to 0 (0 = binary).
    center : (3,) array of float, optional
        (x, y, z) voxels; default the element ``n // 2`` of every axis.

    Returns
    -------
    ndarray of float32

    Examples
    --------
    >>> m = soft_sphere((9, 9, 9), 2.0, edge=2.0)
    >>> float(m[4, 4, 4]), round(float(m[4, 4, 7]), 6), float(m[4, 4, 0])
    (1.0, 0.5, 0.0)
    """
    shape = tuple(int(n) for n in shape)
    c = (np.array([n // 2 for n in shape[::-1]], float) if center is None
         else np.asarray(center, dtype=float))
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    r = np.sqrt((z[:, None, None] - c[2]) ** 2 + (y[None, :, None] - c[1]) ** 2
                + (x[None, None, :] - c[0]) ** 2)
    if edge <= 0:
        return (r <= radius).astype(np.float32)
    t = np.clip((r - radius) / edge, 0, 1)
    return np.where(t < 1, np.cos(0.5 * np.pi * t) ** 2, 0).astype(np.float32)


def fourier_pad_to(data, shape):
    """Upsample a volume by zero-padding its spectrum (the inverse of `fourier_crop_to`).

    Parameters
    ----------
    data : (nz, ny, nx) array of float
    shape : (mz, my, mx)
        Each at least the old size.

    Returns
    -------
    ndarray of float32
        Same mean; element ``n // 2`` maps to ``m // 2`` and an offset ``d``
        from it to ``d * m / n``. The Nyquist plane of even input sizes is
        split between +-Nyquist so that the result stays real.

    Examples
    --------
    >>> v = np.random.default_rng(0).standard_normal((8, 8, 8)).astype(np.float32)
    >>> up = fourier_pad_to(v, (16, 16, 16))
    >>> np.allclose(up[::2, ::2, ::2], v, atol=1e-4)
    True
    """
    data = np.asarray(data, dtype=np.float32)
    old = data.shape
    shape = tuple(int(m) for m in shape)
    if len(shape) != data.ndim or any(m < n for m, n in zip(shape, old)):
        raise ValueError(f"cannot Fourier-pad a shape {old} to {shape}")
    if shape == old:
        return data.copy()
    spectrum = scipy.fft.fftn(np.fft.ifftshift(data), workers=-1)
    out = np.zeros(shape, dtype=np.complex64)
    index = []
    for axis, (n, m) in enumerate(zip(old, shape)):
        src = np.fft.fftfreq(n) * n                    # integer frequencies of the input
        dst = np.where(src >= 0, src, src + m).astype(int)
        if n % 2 == 0 and m > n:
            # split the Nyquist coefficient between +n/2 and -n/2
            nyq = n // 2
            spectrum = np.moveaxis(spectrum, axis, 0)
            half = spectrum[nyq] / 2
            spectrum = np.concatenate([spectrum[:nyq], half[None], spectrum[nyq + 1:],
                                       half[None]], axis=0)
            spectrum = np.moveaxis(spectrum, 0, axis)
            dst = np.concatenate([dst[:nyq], [nyq], dst[nyq + 1:], [m - nyq]])
        index.append(dst)
    out[np.ix_(*index)] = spectrum
    result = scipy.fft.ifftn(out, workers=-1).real
    result *= np.prod(shape, dtype=float) / np.prod(old, dtype=float)
    return np.fft.fftshift(result).astype(np.float32, copy=False)


def resample_volume(volume, voxel_size, new_voxel_size, max_pad=16):
    """Change a cubic-ish volume's voxel size in Fourier space (crop or zero-pad).

    The volume is first padded with its edge mean by up to ``max_pad``
    voxels per axis so that ``size * voxel_size / new_voxel_size`` is as
    close to an integer as possible; the voxel size reached is reported.

    Parameters
    ----------
    volume : (nz, ny, nx) array of float
    voxel_size, new_voxel_size : float
        Å per voxel, old and wanted.
    max_pad : int
        Largest padding tried, voxels.

    Returns
    -------
    out : ndarray of float32
        The centre element ``n // 2`` stays the centre element.
    achieved : float
        The voxel size of ``out`` (Å), within 0.5 % of the wanted one for
        volumes of 32 voxels or more.

    Examples
    --------
    >>> v = np.zeros((64, 64, 64), np.float32); v[32, 32, 32] = 1
    >>> out, size = resample_volume(v, 8.66, 12.0)
    >>> out.shape[0] * size == 64 * 8.66 or abs(size / 12.0 - 1) < 0.005
    True
    """
    if voxel_size <= 0 or new_voxel_size <= 0:
        raise ValueError(f"voxel sizes must be positive, got {voxel_size} and {new_voxel_size}")
    volume = np.asarray(volume, dtype=np.float32)
    ratio = voxel_size / new_voxel_size
    if abs(ratio - 1) < 1e-6:
        return volume.copy(), float(voxel_size)
    best = None
    for pad in range(0, max_pad + 1):
        sizes = [n + pad for n in volume.shape]
        err = max(abs(s * ratio - round(s * ratio)) / max(round(s * ratio), 1) for s in sizes)
        if best is None or err < best[0] - 1e-12:
            best = (err, pad)
    pad = best[1]
    if pad:
        edge = np.concatenate([volume[[0, -1]].ravel(), volume[:, [0, -1]].ravel(),
                               volume[..., [0, -1]].ravel()]).mean()
        # pad after, then shift so the centre element n // 2 stays central
        padded = np.full([n + pad for n in volume.shape], edge, dtype=np.float32)
        start = [(n + pad) // 2 - n // 2 for n in volume.shape]
        padded[tuple(slice(s, s + n) for s, n in zip(start, volume.shape))] = volume
        volume = padded
    new_shape = tuple(max(1, int(round(n * ratio))) for n in volume.shape)
    if all(m <= n for m, n in zip(new_shape, volume.shape)):
        out = fourier_crop_to(volume, new_shape)
    else:
        out = fourier_pad_to(volume, new_shape)
    return out, float(voxel_size * volume.shape[0] / new_shape[0])


def radial_power_spectrum(volume, n_bins=None):
    """Rotational average of a volume's power spectrum.

    Parameters
    ----------
    volume : (nz, ny, nx) array of float
    n_bins : int, optional
        Shells from 0 to sqrt(3)/2 cycles/voxel; default ``max(shape)``.

    Returns
    -------
    k : (n_bins,) ndarray
        Shell centres, cycles/voxel.
    power : (n_bins,) ndarray
        Mean |F|^2 per shell (0 for empty shells).

    Examples
    --------
    >>> v = np.random.default_rng(1).standard_normal((32, 32, 32))
    >>> k, p = radial_power_spectrum(v)
    >>> 0.8 < p[4:16].mean() / v.size < 1.2
    True
    """
    volume = np.asarray(volume, dtype=np.float32)
    n_bins = int(n_bins or max(volume.shape))
    spectrum = scipy.fft.rfftn(volume, workers=-1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float64)
    k = radial_frequency(volume.shape)
    edges = np.linspace(0, np.sqrt(3) / 2 + 1e-6, n_bins + 1)
    idx = np.clip(np.digitize(k.ravel(), edges) - 1, 0, n_bins - 1)
    # the half-spectrum counts the x > 0 half twice in the full one: weight it 2
    weight = np.full(k.shape, 2.0, np.float64)
    weight[..., 0] = 1
    if volume.shape[-1] % 2 == 0:
        weight[..., -1] = 1
    total = np.bincount(idx, (power * weight).ravel(), n_bins)
    count = np.bincount(idx, weight.ravel(), n_bins)
    centres = (edges[:-1] + edges[1:]) / 2
    return centres, np.where(count > 0, total / np.maximum(count, 1), 0.0)


def whitening_filter(k, power, shape):
    """Weights ``1 / sqrt(power)`` (normalised to max 1) of a radial power spectrum on a grid.

    Spectral whitening flattens the noise spectrum of a tomogram so that
    the correlation is not dominated by low frequencies; the same filter
    goes on the template. The profile is given in cycles/voxel so it can be
    evaluated on the template's box as well as on the tomogram's.

    Parameters
    ----------
    k, power : (n,) arrays
        From `radial_power_spectrum`.
    shape : (nz, ny, nx)
        Grid to evaluate on (same voxel size as the spectrum's volume).

    Returns
    -------
    (nz, ny, nx // 2 + 1) ndarray of float32

    Examples
    --------
    >>> w = whitening_filter(np.array([0.0, 0.5]), np.array([4.0, 1.0]), (4, 4, 4))
    >>> float(w[0, 0, 0]), float(w[0, 0, 2])
    (0.5, 1.0)
    """
    power = np.asarray(power, dtype=float)
    positive = power[power > 0]
    floor = positive.max() * 1e-8 if positive.size else 1.0
    amp = 1.0 / np.sqrt(np.maximum(power, floor))
    w = np.interp(radial_frequency(shape).ravel(), k, amp).reshape(radial_frequency(shape).shape)
    return (w / w.max()).astype(np.float32)


def randomize_phases(volume, voxel_size=1.0, beyond=None, seed=0):
    """Replace the phases beyond a resolution by random ones, keeping the amplitudes.

    Phases come from the spectrum of white noise, so the result stays real
    and Hermitian-consistent.

    Parameters
    ----------
    volume : (nz, ny, nx) array of float
    voxel_size : float
        Å per voxel.
    beyond : float, optional
        Resolution (Å); frequencies higher than ``1 / beyond`` are randomised.
        None or 0: every frequency but the mean.
    seed : int

    Returns
    -------
    ndarray of float32
        Same power spectrum (up to the frequency ``1 / beyond``, the same
        volume).

    Examples
    --------
    >>> v = np.random.default_rng(2).standard_normal((16, 16, 16)).astype(np.float32)
    >>> r = randomize_phases(v, seed=3)
    >>> k0, p0 = radial_power_spectrum(v); k1, p1 = radial_power_spectrum(r)
    >>> np.allclose(p0, p1, rtol=1e-3), abs(np.corrcoef(v.ravel(), r.ravel())[0, 1]) < 0.1
    (True, True)
    """
    volume = np.asarray(volume, dtype=np.float32)
    spectrum = scipy.fft.rfftn(volume, workers=-1)
    noise = scipy.fft.rfftn(np.random.default_rng(seed).standard_normal(volume.shape)
                            .astype(np.float32), workers=-1)
    phase = noise / np.maximum(np.abs(noise), 1e-30)
    randomised = np.abs(spectrum) * phase
    if beyond:
        k = radial_frequency(volume.shape) / np.float32(voxel_size)
        randomised = np.where(k > 1.0 / beyond, randomised, spectrum)
    else:
        randomised[0, 0, 0] = spectrum[0, 0, 0]
    return scipy.fft.irfftn(randomised, s=volume.shape, workers=-1).astype(np.float32)
