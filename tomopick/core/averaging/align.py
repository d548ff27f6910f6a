"""Alignment of subtomograms to a reference: rotations searched, shifts by FFT.

Convention (tomopick.core, see `tomopick.core.alignment`)
---------------------------------------------------------
A pose is ``M = [[R, t], [0, 1]]`` with ``aligned(r) = box(R r + t)``: the
particle in the box is the reference turned by ``R`` and moved by ``t``
(x, y, z voxels from the box centre, element ``n // 2``), so that applying the
pose to the box brings the particle onto the reference.

Score: constrained cross-correlation
------------------------------------
A subtomogram measures only the Fourier coefficients inside its missing-wedge
mask ``W`` (fixed in the box frame: the tomogram's tilt axis and beam), and an
average built from few particles measures only part of Fourier space
(``coverage``, turned with the reference). Correlating all coefficients would
reward poses that lay the reference's empty region onto the particle's empty
region (the wedge aligning to itself). The score therefore sums only over
the coefficients both sample, normalising both by their power there::

    cc(R, t) = sum_k P(k) conj(F_R(k)) C(k) e^{2 pi i k t}
               / sqrt(sum_k |P|^2 C * sum_k |F_R|^2 C),   C = W * coverage_R * band

with ``F_R`` the spectrum of the reference turned by ``R`` and ``band`` a
band-pass. One inverse FFT gives ``cc`` for every shift ``t`` at once; the
peak is searched within ``max_shift`` voxels.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft as sfft

from tomopick.core.alignment import align_box
from tomopick.core.rotations import homogeneous, local_rotations


def hermitian_weights(n):
    """How often each rfftn column stands for a coefficient of the full grid.

    Parameters
    ----------
    n : int
        Real-space size along the last axis.

    Returns
    -------
    (n // 2 + 1,) ndarray of float32
        1 for the zero (and, for even n, the Nyquist) column, 2 for the others.

    Examples
    --------
    >>> hermitian_weights(4)
    array([1., 2., 1.], dtype=float32)
    """
    weight = np.full(n // 2 + 1, 2.0, np.float32)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return weight


def rotate_coverage(coverage, rotation):
    """A Fourier coverage of a reference, for the reference turned by ``rotation``.

    Parameters
    ----------
    coverage : (n, n, n) array
        Fraction of the reference's Fourier coefficients measured, on the full
        grid with the zero frequency at element ``n // 2`` (fftshifted).
    rotation : (3, 3) array
        ``R``: the turned reference is ``ref(R^T r)``.

    Returns
    -------
    (n, n, n // 2 + 1) ndarray of float32
        The turned coverage on the rfftn grid (not shifted).

    Examples
    --------
    >>> full = np.ones((4, 4, 4), np.float32)
    >>> rotate_coverage(full, np.eye(3)).shape
    (4, 4, 3)
    """
    n = coverage.shape[-1]
    # Fourier coefficients turn with the map: F_R(k) = F(R^T k)
    turned = align_box(coverage, homogeneous(np.asarray(rotation).T))
    return np.fft.ifftshift(turned)[..., :n // 2 + 1]


def shift_window(n, max_shift):
    """Flat indices of the cross-correlation map within ``max_shift`` voxels.

    Parameters
    ----------
    n : int
        Box edge (voxels).
    max_shift : float
        Largest shift searched, voxels (a sphere).

    Returns
    -------
    indices : (S,) ndarray of int
        Into a raveled (n, n, n) map whose element [0, 0, 0] is shift 0.
    shifts : (S, 3) ndarray of float
        The shift (x, y, z) of each.

    Examples
    --------
    >>> indices, shifts = shift_window(8, 1.0)
    >>> len(indices), shifts[0].tolist()
    (7, [0.0, 0.0, 0.0])
    """
    s = np.rint(sfft.fftfreq(n) * n)
    z, y, x = np.meshgrid(s, s, s, indexing="ij")
    inside = (x ** 2 + y ** 2 + z ** 2) <= max_shift ** 2 + 1e-9
    indices = np.flatnonzero(inside.ravel())
    shifts = np.stack([x.ravel()[indices], y.ravel()[indices], z.ravel()[indices]], axis=1)
    return indices, shifts


class Aligner:
    """Scores poses of a set of subtomograms against one reference.

    Parameters
    ----------
    boxes : (N, n, n, n) array
        The subtomograms, zero mean (e.g. normalised); cubic.
    wedges : (W, n, n, n // 2 + 1) array
        Fourier masks (rfftn grid, weights in [0, 1]) of the distinct missing
        wedges, in the box frame.
    wedge_ids : (N,) array of int
        The wedge of every subtomogram.
    band : (n, n, n // 2 + 1) array
        Band-pass weights on the rfftn grid (which frequencies align).
    max_shift : float
        Largest shift searched, voxels.
    workers : int, optional
        Threads: rotations (global search) and particles (`map`) are shared
        out between them, each doing its small FFTs single-threaded (numpy
        and pocketfft release the GIL); all cores when None.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.standard_normal((8, 8, 8)).astype(np.float32)
    >>> box = np.roll(ref, 1, axis=2)              # moved by +1 voxel in x
    >>> aligner = Aligner(box[None], np.ones((1, 8, 8, 5)), [0], np.ones((8, 8, 5)), 2)
    >>> aligner.set_reference(ref)
    >>> scores, shifts = aligner.score_rotations(np.eye(3)[None])
    >>> round(float(scores[0, 0]), 3), shifts[0, 0].tolist()
    (1.0, [1.0, 0.0, 0.0])
    """

    def __init__(self, boxes, wedges, wedge_ids, band, max_shift, workers=None):
        boxes = np.asarray(boxes, np.float32)
        if boxes.ndim != 4 or len(set(boxes.shape[1:])) != 1:
            raise ValueError(f"expected cubic boxes (N, n, n, n), got shape {boxes.shape}")
        self.n = n = boxes.shape[-1]
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.spectra = sfft.rfftn(boxes, axes=(1, 2, 3), workers=self.workers)
        herm = hermitian_weights(n)
        # |P|^2 counted as often as the full grid holds it: norms by one matrix product
        self.power = (np.abs(self.spectra) ** 2 * herm).reshape(len(boxes), -1)
        self.wedges = np.asarray(wedges, np.float32)
        self.wedge_ids = np.asarray(wedge_ids, int)
        if self.wedges.shape[1:] != self.spectra.shape[1:]:
            raise ValueError(f"wedge masks of shape {self.wedges.shape[1:]} do not fit "
                             f"boxes of {n}^3 (rfftn grid {self.spectra.shape[1:]})")
        self.band = np.asarray(band, np.float32)
        self.herm = herm
        self.window, self.window_shifts = shift_window(n, max_shift)
        self.reference = None
        self.coverage = None

    def __len__(self):
        return len(self.spectra)

    def set_reference(self, reference, coverage=None):
        """The map to align to, and its Fourier coverage (None: complete)."""
        reference = np.asarray(reference, np.float32)
        if reference.shape != (self.n,) * 3:
            raise ValueError(f"the reference is {reference.shape}, the boxes {self.n}^3")
        self.reference = reference - reference.mean()
        self.coverage = None if coverage is None else np.asarray(coverage, np.float32)

    def _turned(self, rotations, coverage_rotation=None):
        """Spectra and weights (band x turned coverage) of the reference turned by each rotation."""
        turned = np.stack([align_box(self.reference, homogeneous(np.asarray(R).T))
                           for R in rotations])
        spectra = sfft.rfftn(turned, axes=(1, 2, 3), workers=1)
        if self.coverage is None:
            weights = np.broadcast_to(self.band, spectra.shape)
        elif coverage_rotation is not None:
            weights = np.broadcast_to(self.band * rotate_coverage(self.coverage,
                                                                  coverage_rotation),
                                      spectra.shape)
        else:
            weights = np.stack([self.band * rotate_coverage(self.coverage, R)
                                for R in rotations])
        return spectra, weights

    def _peaks(self, cc, norm, subvoxel):
        """Best normalised score and shift (x, y, z) of each cross-correlation map."""
        cc = cc.reshape(len(cc), -1)
        inside = cc[:, self.window]
        best = np.argmax(inside, axis=1)
        scores = inside[np.arange(len(cc)), best] / norm
        shifts = self.window_shifts[best].astype(np.float32)
        if subvoxel:
            shifts += self._parabolic(cc, self.window[best])
        return scores.astype(np.float32), shifts

    def _correlate(self, particles, spectrum, weight):
        """Best score and shift of some particles against one turned reference."""
        wedge_ids = self.wedge_ids[particles]
        scores = np.empty(len(particles), np.float32)
        shifts = np.empty((len(particles), 3), np.float32)
        for w in np.unique(wedge_ids):
            rows = np.flatnonzero(wedge_ids == w)
            members = particles[rows]
            mask = self.wedges[w] * weight
            reference_power = float((np.abs(spectrum) ** 2 * mask * self.herm).sum())
            particle_power = self.power[members] @ mask.ravel()
            product = self.spectra[members] * (np.conj(spectrum) * mask)
            cc = sfft.irfftn(product, s=(self.n,) * 3, axes=(1, 2, 3), workers=1)
            norm = np.sqrt(np.maximum(particle_power * reference_power, 1e-30)) / self.n ** 3
            scores[rows], shifts[rows] = self._peaks(cc, norm, False)
        return scores, shifts

    def score_poses(self, particle, rotations, subvoxel=True, coverage_rotation=None):
        """One particle against several rotations of the reference.

        Parameters
        ----------
        particle : int
        rotations : (L, 3, 3) array
        subvoxel : bool, optional
            Refine the shifts to a fraction of a voxel (parabola through the peak).
        coverage_rotation : (3, 3) array, optional
            Turn the reference's coverage by this one rotation for all
            ``rotations`` (they are close to it: a local search), instead of
            by each; the coverage is smooth on that scale.

        Returns
        -------
        scores : (L,) ndarray of float32
        shifts : (L, 3) ndarray of float32
            x, y, z voxels.
        """
        if self.reference is None:
            raise ValueError("set a reference before aligning")
        spectra, weights = self._turned(rotations, coverage_rotation)
        mask = self.wedges[self.wedge_ids[particle]] * weights
        reference_power = (np.abs(spectra) ** 2 * mask * self.herm).reshape(len(mask), -1).sum(1)
        particle_power = mask.reshape(len(mask), -1) @ self.power[particle]
        product = self.spectra[particle] * np.conj(spectra) * mask
        cc = sfft.irfftn(product, s=(self.n,) * 3, axes=(1, 2, 3), workers=1)
        norm = np.sqrt(np.maximum(particle_power * reference_power, 1e-30)) / self.n ** 3
        return self._peaks(cc, norm, subvoxel)

    def _parabolic(self, cc, flat_peaks):
        """Sub-voxel offsets (x, y, z) of peaks by a parabola through neighbours."""
        n = self.n
        cc = cc.reshape(-1, n, n, n)
        z, y, x = np.unravel_index(flat_peaks, (n, n, n))
        rows = np.arange(len(cc))
        offsets = np.zeros((len(cc), 3), np.float32)
        for column, axis in ((0, 3), (1, 2), (2, 1)):      # x, y, z
            index = [z, y, x]
            centre = cc[rows, z, y, x]
            k = 3 - axis
            index_minus, index_plus = list(index), list(index)
            index_minus[k] = (index[k] - 1) % n
            index_plus[k] = (index[k] + 1) % n
            minus = cc[(rows, *index_minus)]
            plus = cc[(rows, *index_plus)]
            curvature = minus - 2 * centre + plus
            with np.errstate(divide="ignore", invalid="ignore"):
                delta = np.where(curvature < 0, 0.5 * (minus - plus) / curvature, 0.0)
            offsets[:, column] = np.clip(delta, -0.5, 0.5)
        return offsets

    def score_rotations(self, rotations, particles=None):
        """Every particle against every rotation: best shift for each.

        Parameters
        ----------
        rotations : (K, 3, 3) array
            Candidate ``R`` (core convention).
        particles : (B,) array of int, optional
            Which particles; all when None.

        Returns
        -------
        scores : (B, K) ndarray of float32
            Constrained cross-correlation at the best shift.
        shifts : (B, K, 3) ndarray of float32
            That shift ``t`` (x, y, z), whole voxels.
        """
        if self.reference is None:
            raise ValueError("set a reference before aligning")
        particles = np.arange(len(self)) if particles is None else np.asarray(particles, int)
        rotations = np.asarray(rotations, float).reshape(-1, 3, 3)
        scores = np.empty((len(particles), len(rotations)), np.float32)
        shifts = np.empty((len(particles), len(rotations), 3), np.float32)
        def chunk(start):
            # rotations turned a few at a time: one batched FFT instead of many small ones
            spectra, weights = self._turned(rotations[start:start + 8])
            for j, (spectrum, weight) in enumerate(zip(spectra, weights), start):
                scores[:, j], shifts[:, j] = self._correlate(particles, spectrum, weight)

        self.map(chunk, range(0, len(rotations), 8))
        return scores, shifts

    def map(self, function, items):
        """``[function(item) for item in items]`` on the aligner's threads."""
        items = list(items)
        if self.workers == 1 or len(items) < 2:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(function, items))

    def refine(self, particle, rotations, step, rounds=3):
        """Local refinement of one particle's candidate rotations.

        Each round tries every rotation within ``step`` of each candidate on a
        grid of ``step / 2`` (`tomopick.core.rotations.local_rotations`), keeps
        the best, and halves the step; the last round finds the shift to a
        fraction of a voxel.

        Parameters
        ----------
        particle : int
        rotations : (C, 3, 3) array
            Starting candidates (e.g. the best of a global search).
        step : float
            Search radius of the first round, degrees (e.g. the global step).
        rounds : int, optional

        Returns
        -------
        rotation : (3, 3) ndarray
        shift : (3,) ndarray
            x, y, z voxels, sub-voxel.
        score : float
        """
        candidates = np.asarray(rotations, float).reshape(-1, 3, 3)
        for round_ in range(rounds):
            radius = step / 2 ** round_
            results = []
            for candidate in candidates:
                trials = local_rotations(candidate, radius, radius / 2)
                scores, shifts = self.score_poses(particle, trials, round_ == rounds - 1,
                                                  coverage_rotation=candidate)
                best = int(np.argmax(scores))
                results.append((scores[best], trials[best], shifts[best]))
            score, rotation, shift = max(results, key=lambda result: result[0])
            candidates = rotation[None]
        return rotation, shift.astype(float), float(score)
