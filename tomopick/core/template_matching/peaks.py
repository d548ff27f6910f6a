"""Peaks of score maps: statistical threshold, non-maximum suppression, bead masking."""
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.stats import norm


def gaussian_threshold(n_tests, false_positives):
    """Score (standard deviations) that ``n_tests`` Gaussian scores exceed ``false_positives`` times.

    The false-alarm model of pytom-match-pick: under the null hypothesis
    every (voxel, rotation) score is Gaussian with the background's
    standard deviation, so the expected number of scores above ``z`` sigma is
    ``n_tests * Q(z)`` (Q the upper tail); ``z`` solves ``n_tests Q(z) = FP``.

    Examples
    --------
    >>> round(gaussian_threshold(1e6, 1.0), 3)
    4.753
    """
    if not false_positives > 0:
        raise ValueError(f"the expected number of false positives must be positive, got "
                         f"{false_positives}")
    if not n_tests > false_positives:
        return 0.0
    return float(norm.isf(false_positives / float(n_tests)))


#: Fraction of the band-limited (voxel, Crowther rotation) tests that are
#: independent, measured on pure Gaussian noise with the 80S ribosome
#: template: the median best refined score of 4-8 noise volumes matched the
#: Gaussian maximum of 1/170 (12 Å voxels, 30 Å low-pass, binned search) and
#: 1/135 (25 Å, 60 Å, unbinned) of the counted tests. Scores of rotations a
#: Crowther step apart still correlate ~0.95 (the template's low
#: frequencies), so far fewer tests are independent than counted.
NOISE_CALIBRATION = 1.0 / 150.0


def effective_tests(n_voxels, voxel_size, resolution, n_rotations,
                    calibration=NOISE_CALIBRATION):
    """Independent (position, rotation) tests of a search, for `gaussian_threshold`.

    A score map band-limited at ``resolution`` Å has at most one independent
    value per ``(resolution / 2)^3`` Å^3 (Nyquist sampling of the band), and
    rotations closer than the Crowther step ``resolution / diameter`` give
    nearly the same scores; of those band-limited tests a fraction
    ``calibration`` behaves as independent Gaussian draws (measured, see
    `NOISE_CALIBRATION`). Counting every voxel and every sampled rotation as
    pytom-match-pick does makes the threshold conservative by orders of
    magnitude in expected false positives.

    Parameters
    ----------
    n_voxels : int
        Voxels searched.
    voxel_size : float
        Å per voxel.
    resolution : float
        Å, the band limit of the matching (low-pass).
    n_rotations : int
        Rotations at the Crowther step over the asymmetric unit.
    calibration : float
        Fraction of independent tests.

    Examples
    --------
    >>> effective_tests(1000, 10.0, 40.0, 100, calibration=1.0)
    12500.0
    """
    per_voxel = min(1.0, (2.0 * voxel_size / resolution) ** 3)
    return float(n_voxels) * per_voxel * float(n_rotations) * float(calibration)


def local_maxima(score, radius, threshold, allowed=None, max_count=None):
    """Greedy non-maximum suppression of a score map.

    Parameters
    ----------
    score : (nz, ny, nx) array of float
    radius : float
        Voxels; no two peaks kept are closer.
    threshold : float
        Only voxels scoring above it.
    allowed : (nz, ny, nx) array of bool, optional
        Peaks only where True.
    max_count : int, optional

    Returns
    -------
    positions : (N, 3) ndarray of int
        (x, y, z), best first.
    values : (N,) ndarray

    Examples
    --------
    >>> s = np.zeros((9, 9, 9)); s[4, 4, 2] = 3; s[4, 4, 4] = 2; s[4, 4, 7] = 1.5
    >>> local_maxima(s, 2.5, 1.0)[0].tolist()
    [[2, 4, 4], [7, 4, 4]]
    """
    score = np.asarray(score)
    r = max(int(np.floor(radius)), 1)
    peak = score == ndimage.maximum_filter(score, size=2 * min(r, 3) + 1, mode="nearest")
    peak &= score > threshold
    if allowed is not None:
        peak &= allowed
    zz, yy, xx = np.nonzero(peak)
    values = score[zz, yy, xx]
    order = np.argsort(-values, kind="stable")
    pos = np.stack([xx, yy, zz], 1)[order]
    keep = non_maximum_suppression(pos, values[order], radius)
    pos, values = pos[keep], values[order][keep]
    if max_count is not None:
        pos, values = pos[:max_count], values[:max_count]
    return pos, values


def non_maximum_suppression(positions, scores, radius):
    """Indices of picks kept by greedy suppression, best score first.

    Parameters
    ----------
    positions : (N, 3) array of float
    scores : (N,) array of float
    radius : float
        A pick suppresses every lower-scoring one closer than this.

    Returns
    -------
    (M,) ndarray of int

    Examples
    --------
    >>> non_maximum_suppression([[0, 0, 0], [1, 0, 0], [5, 0, 0]], [1.0, 2.0, 0.5], 2.0).tolist()
    [1, 2]
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    scores = np.asarray(scores, dtype=float)
    if len(positions) == 0:
        return np.zeros(0, int)
    order = np.argsort(-scores, kind="stable")
    tree = cKDTree(positions)
    suppressed = np.zeros(len(positions), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[tree.query_ball_point(positions[i], radius - 1e-9)] = True
    return np.array(keep, int)


def high_contrast_mask(volume, sigma_threshold=8.0, grow_threshold=3.0, dilate=2,
                       smoothing=1.0):
    """Voxels of very high-contrast objects (gold beads, ice crystals, carbon edges).

    The volume is smoothed (Gaussian, ``smoothing`` voxels) and scored
    robustly, ``z = (v - median) / (1.4826 MAD)``; objects are the connected
    regions with ``|z| > grow_threshold`` that reach ``|z| > sigma_threshold``
    somewhere (hysteresis), dilated by ``dilate`` voxels. Gold is several
    times denser than protein, so a bead scores far above any macromolecule
    at cryo-ET noise levels; the default 8 is well above ribosomes at SNR
    0.1 (about 3-4 after the smoothing) and below 10 nm gold (over 20).

    Parameters
    ----------
    volume : (nz, ny, nx) array of float
    sigma_threshold, grow_threshold : float
        Robust standard deviations.
    dilate : int
        Voxels.
    smoothing : float
        Gaussian sigma, voxels.

    Returns
    -------
    (nz, ny, nx) ndarray of bool

    Examples
    --------
    >>> v = np.random.default_rng(0).standard_normal((32, 32, 32)).astype(np.float32)
    >>> v[14:18, 14:18, 14:18] -= 30
    >>> m = high_contrast_mask(v)
    >>> bool(m[16, 16, 16]), bool(m[4, 4, 4]), int(m.sum()) < 1000
    (True, False, True)
    """
    v = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), smoothing)
    sample = v[::2, ::2, ::2]
    med = float(np.median(sample))
    mad = float(np.median(np.abs(sample - med))) * 1.4826
    if mad <= 0:
        return np.zeros(v.shape, bool)
    z = np.abs(v - med) / mad
    grown = z > grow_threshold
    labels, n = ndimage.label(grown)
    if n == 0:
        return np.zeros(v.shape, bool)
    peak = ndimage.maximum(z, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], np.asarray(peak) > sigma_threshold])
    mask = keep[labels]
    if dilate and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=int(dilate))
    return mask
