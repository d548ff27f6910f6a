"""Fourier shell correlation between two maps, and the resolution it implies.

The shells are one Fourier voxel thick: shell ``s`` holds the frequencies
whose radius ``|k| * n`` rounds to ``s`` (``n`` the box edge), ``s = 0 ..
n // 2``; shell ``s`` has spatial frequency ``s / (n * voxel_size)`` 1/Å.
"""
import numpy as np
import scipy.fft as sfft

#: The half-map FSC threshold of Rosenthal & Henderson (2003): a half-map FSC of
#: 0.143 matches a correlation of 0.5 between the full map and the truth.
HALF_MAP_THRESHOLD = 0.143


def shell_index(shape):
    """The Fourier shell of every coefficient of an rfftn grid.

    Parameters
    ----------
    shape : (nz, ny, nx)
        Real-space shape of a cubic box.

    Returns
    -------
    (nz, ny, nx // 2 + 1) ndarray of int
        ``round(|k| * n)``, where k is in cycles/voxel and n = nx.

    Examples
    --------
    >>> shell_index((4, 4, 4))[:, 0, 0]
    array([0, 1, 2, 1])
    """
    nz, ny, nx = shape
    kz = sfft.fftfreq(nz)[:, None, None]
    ky = sfft.fftfreq(ny)[None, :, None]
    kx = sfft.rfftfreq(nx)[None, None, :]
    return np.rint(np.sqrt(kz ** 2 + ky ** 2 + kx ** 2) * nx).astype(int)


def fsc(map1, map2, voxel_size=1.0, mask=None):
    """Fourier shell correlation of two maps.

    Parameters
    ----------
    map1, map2 : (n, n, n) array
        Cubic maps on the same grid.
    voxel_size : float, optional
        Å per voxel; sets the frequencies returned.
    mask : (n, n, n) array, optional
        Real-space mask applied to both maps first (e.g. a soft sphere), so
        that the noise around the particle does not lower the FSC.

    Returns
    -------
    frequency : (n // 2 + 1,) ndarray
        Shell frequencies, 1/Å (shell 0 is the mean).
    correlation : (n // 2 + 1,) ndarray
        FSC per shell, in [-1, 1]; 0 for a shell where a map has no power.

    Raises
    ------
    ValueError
        If the maps are not cubic or differ in shape.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.standard_normal((8, 8, 8))
    >>> frequency, correlation = fsc(a, 2 * a + 1, voxel_size=10.0)  # shell 0: the mean
    >>> frequency[-1], bool(np.allclose(correlation[1:], 1))
    (0.05, True)
    """
    map1 = np.asarray(map1, dtype=np.float32)
    map2 = np.asarray(map2, dtype=np.float32)
    if map1.shape != map2.shape or map1.ndim != 3 or len(set(map1.shape)) != 1:
        raise ValueError(f"FSC needs two cubic maps of one shape, got {map1.shape} "
                         f"and {map2.shape}")
    if mask is not None:
        map1, map2 = map1 * mask, map2 * mask
    n = map1.shape[0]
    f1 = sfft.rfftn(map1, workers=-1)
    f2 = sfft.rfftn(map2, workers=-1)
    shells = shell_index(map1.shape)
    # the rfft grid holds the columns 1 .. n/2-1 once for two Friedel mates
    weight = np.full(n // 2 + 1, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    weight = np.broadcast_to(weight, shells.shape)
    count = n // 2 + 1
    inside = shells < count
    index, weight = shells[inside], weight[inside]
    f1, f2 = f1[inside], f2[inside]
    cross = np.bincount(index, weight * (f1 * np.conj(f2)).real, minlength=count)
    power1 = np.bincount(index, weight * np.abs(f1) ** 2, minlength=count)
    power2 = np.bincount(index, weight * np.abs(f2) ** 2, minlength=count)
    denominator = np.sqrt(power1 * power2)
    correlation = np.divide(cross, denominator, out=np.zeros(count),
                            where=denominator > 0)
    frequency = np.arange(count) / (n * float(voxel_size))
    return frequency, np.clip(correlation, -1.0, 1.0)


def resolution(frequency, correlation, threshold=HALF_MAP_THRESHOLD):
    """Resolution where an FSC curve first falls below a threshold.

    Parameters
    ----------
    frequency : (S,) array
        Shell frequencies, 1/Å, increasing (as `fsc` returns them).
    correlation : (S,) array
        The FSC.
    threshold : float, optional
        0.143 for two independent half maps; 0.5 for a map against the truth.

    Returns
    -------
    float
        Å: the inverse of the frequency where the curve crosses the threshold,
        interpolated linearly between the shells around the crossing; Nyquist
        (``1 / frequency[-1]``) when it never falls below.

    Examples
    --------
    >>> resolution(np.array([0.0, 0.01, 0.02, 0.03]), np.array([1.0, 0.9, 0.5, 0.1]), 0.5)
    50.0
    """
    frequency = np.asarray(frequency, dtype=float)
    correlation = np.asarray(correlation, dtype=float)
    below = np.flatnonzero(correlation[1:] < threshold) + 1
    if not len(below):
        return float(1.0 / frequency[-1])
    i = below[0]
    c0, c1 = correlation[i - 1], correlation[i]
    fraction = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
    crossing = frequency[i - 1] + fraction * (frequency[i] - frequency[i - 1])
    return float(1.0 / crossing) if crossing > 0 else float("inf")
