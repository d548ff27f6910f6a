"""Averaging aligned subtomograms in Fourier space, with their missing wedges.

Each particle measures only the Fourier coefficients inside its wedge; once
aligned (``aligned(r) = box(R r + t)``, see `tomopick.core.alignment`) its
measured region is the wedge turned by ``R``. The average divides, voxel by
voxel, the sum of the aligned spectra by the number of particles that measured
that voxel, so a direction seen by few particles is not dimmed by the many that
missed it (a plain real-space mean would carry the union of the wedges as a
smear). Voxels measured by less than one particle in total are kept as their
sum (not amplified): the division is by ``max(count, 1)``.
"""
import numpy as np
import scipy.fft as sfft

from tomopick.core.alignment import align_box, apply_alignment
from tomopick.core.fourier import bandpass
from tomopick.core.rotations import homogeneous


def full_grid(weights):
    """Fourier weights of an rfftn grid on the full grid, zero frequency at the centre.

    Parameters
    ----------
    weights : (n, n, n // 2 + 1) array
        Friedel-symmetric weights (``w(-k) = w(k)``, as a wedge mask is), rfftn layout.

    Returns
    -------
    (n, n, n) ndarray of float32
        fftshifted: frequency 0 at element ``n // 2``, the box centre that
        `tomopick.core.alignment.align_box` rotates about.

    Examples
    --------
    >>> w = np.zeros((4, 4, 3)); w[0, 0, 1] = 1    # the frequency kx = 1/4
    >>> g = full_grid(w)
    >>> [tuple(int(i) for i in v) for v in np.argwhere(g)]
    [(2, 2, 1), (2, 2, 3)]
    """
    weights = np.asarray(weights, np.float32)
    n = weights.shape[0]
    full = np.empty((n, n, n), np.float32)
    half = n // 2 + 1
    full[..., :half] = weights
    # w(k) = w(-k): the columns kx < 0 mirror those of -k
    negative = np.arange(half, n)
    mirror = (-np.arange(n)) % n
    full[..., negative] = weights[mirror][:, mirror][..., (n - negative)]
    return np.fft.fftshift(full)


def rfft_half(full):
    """The rfftn part of an fftshifted full-grid array (inverse of `full_grid`).

    Examples
    --------
    >>> w = np.random.default_rng(0).random((4, 4, 3)); w[..., 0] = w[:, :, 0][np.ix_(-np.arange(4) % 4, -np.arange(4) % 4)]
    >>> bool(np.allclose(rfft_half(full_grid(w))[..., 1], w[..., 1]))
    True
    """
    n = full.shape[-1]
    return np.fft.ifftshift(full)[..., :n // 2 + 1]


class FourierAverage:
    """Running wedge-weighted average of aligned subtomograms.

    Parameters
    ----------
    n : int
        Box edge, voxels (cubic boxes).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> box = rng.standard_normal((8, 8, 8)).astype(np.float32)
    >>> wedge = np.ones((1, 8, 8, 5), np.float32)
    >>> acc = FourierAverage(8)
    >>> acc.add(np.stack([box, box]), np.stack([np.eye(4)] * 2), wedge, np.array([0, 0]))
    >>> average, coverage = acc.result()
    >>> bool(np.allclose(average, box - box.mean(), atol=1e-5)), float(coverage.max())
    (True, 2.0)
    """

    def __init__(self, n):
        self.n = int(n)
        self.numerator = np.zeros((n, n, n // 2 + 1), np.complex64)
        # counts on the full fftshifted grid, where rotations about the centre apply
        self.count = np.zeros((n, n, n), np.float32)
        self.particles = 0

    def add(self, boxes, matrices, wedges, wedge_ids, workers=None):
        """Add subtomograms with their poses.

        Parameters
        ----------
        boxes : (N, n, n, n) array
        matrices : (N, 4, 4) array
            Poses in core's convention, shifts in voxels of these boxes.
        wedges : (W, n, n, n // 2 + 1) array
            The distinct wedge masks (rfftn grid, box frame).
        wedge_ids : (N,) array of int
        workers : int, optional
            FFT threads.
        """
        wedges_full = [full_grid(w) for w in np.asarray(wedges, np.float32)]
        matrices = np.asarray(matrices, float)
        for start in range(0, len(boxes), 16):
            chunk = slice(start, start + 16)
            aligned = apply_alignment(boxes[chunk], matrices[chunk], workers=workers)
            aligned -= aligned.mean(axis=(1, 2, 3), keepdims=True)
            spectra = sfft.rfftn(aligned, axes=(1, 2, 3), workers=workers or -1)
            for spectrum, matrix, w in zip(spectra, matrices[chunk], wedge_ids[chunk]):
                # the aligned spectrum measures W(R k): the wedge turned with the particle
                turned = align_box(wedges_full[int(w)], homogeneous(matrix[:3, :3]))
                self.numerator += spectrum * rfft_half(turned)
                self.count += turned
                self.particles += 1

    def merge(self, other):
        """A new average holding the particles of both."""
        merged = FourierAverage(self.n)
        merged.numerator = self.numerator + other.numerator
        merged.count = self.count + other.count
        merged.particles = self.particles + other.particles
        return merged

    def result(self, symmetry=None):
        """The average and its Fourier coverage.

        Parameters
        ----------
        symmetry : (G, 3, 3) array, optional
            Point-group rotations (canonical frame); the numerator and the
            counts are summed over ``f(S r)`` for every S, which imposes the
            symmetry and lets each particle fill the wedges of its copies.

        Returns
        -------
        average : (n, n, n) ndarray of float32
            Zero mean.
        coverage : (n, n, n) ndarray of float32
            Particles (times the symmetry order) that measured each Fourier
            voxel, on the full fftshifted grid (see `full_grid`).
        """
        n = self.n
        numerator = sfft.irfftn(self.numerator, s=(n,) * 3, workers=-1).astype(np.float32)
        count = self.count
        if symmetry is not None and len(symmetry) > 1:
            numerator = sum(align_box(numerator, homogeneous(S)) for S in symmetry)
            count = sum(align_box(count, homogeneous(S)) for S in symmetry)
        spectrum = sfft.rfftn(numerator, workers=-1)
        spectrum /= np.maximum(rfft_half(count), 1.0)
        spectrum[0, 0, 0] = 0.0
        average = sfft.irfftn(spectrum, s=(n,) * 3, workers=-1).astype(np.float32)
        return average, np.asarray(count, np.float32)


def centre_of_mass_offset(volume):
    """Offset (x, y, z) voxels of the positive density's centre of mass from the box centre.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        Density positive (protein bright).

    Returns
    -------
    (3,) ndarray
        ``com - n // 2`` per axis, in (x, y, z) order.

    Examples
    --------
    >>> v = np.zeros((8, 8, 8)); v[4, 4, 6] = 1.0
    >>> centre_of_mass_offset(v).tolist()
    [2.0, 0.0, 0.0]
    """
    volume = np.clip(np.asarray(volume, dtype=np.float64), 0, None)
    total = volume.sum()
    if total <= 0:
        return np.zeros(3)
    com = []
    for axis in range(3):
        profile = volume.sum(axis=tuple(a for a in range(3) if a != axis))
        com.append(float((profile * np.arange(volume.shape[axis])).sum() / total
                         - volume.shape[axis] // 2))
    return np.array(com[::-1])


def low_pass(volume, voxel_size, resolution):
    """A map with the frequencies beyond a resolution removed (soft edge).

    Parameters
    ----------
    volume : (nz, ny, nx) array
    voxel_size : float
        Å per voxel.
    resolution : float or None
        Å; None or 0 leaves the map as it is (float32).

    Returns
    -------
    (nz, ny, nx) ndarray of float32
        `tomopick.core.fourier.bandpass` applied (weight 1/2 at ``1 / resolution``).

    Examples
    --------
    >>> v = np.zeros((8, 8, 8), np.float32); v[4, 4, 4] = 1
    >>> smooth = low_pass(v, 10.0, 40.0)
    >>> bool(smooth[4, 4, 4] < 0.5), round(float(smooth.sum()), 4)
    (True, 1.0)
    """
    volume = np.asarray(volume, np.float32)
    if not resolution:
        return volume.copy()
    weights = bandpass(volume.shape, voxel_size, lowpass=resolution)
    spectrum = sfft.rfftn(volume, workers=-1) * weights
    return sfft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32)
