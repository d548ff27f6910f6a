"""Applying a trained learned picker: dense score map, peaks, threshold, positions.

1. Score map: the classifier's particle probability at every working-grid
   voxel, block by block (`tomopick.core.learned.features.iter_features`), then
   smoothed by a Gaussian of `SMOOTHING` diameters so each particle gives one
   rounded peak.
2. Peaks: local maxima of the smoothed map, then greedy non-maximum
   suppression (best first; a peak closer than ``min_distance`` to a kept one
   is dropped; default `MIN_DISTANCE` diameters: the diameter a user gives is
   the particle's largest extent, and two elongated particles side by side
   have centres well under one diameter apart). Peaks on the outermost
   working-grid voxels are dropped: there the filters see the volume's
   boundary (reflected, and the periodic edge of the Fourier crop), not a
   particle, and a particle centred there would be half outside.
3. Threshold: given, or automatic: Otsu's threshold on the peak scores (peaks
   on particles score near 1, peaks on noise near 0; the histogram is
   bimodal), never below `MIN_AUTO_THRESHOLD`.
4. Sub-voxel positions: a parabola through each peak and its two neighbours
   along each axis (offset clamped to half a voxel), mapped back to the
   tomogram's voxels.

Score of a pick: the smoothed probability at its peak (0..1).
"""
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import cKDTree
from skimage.filters import threshold_otsu
from threadpoolctl import threadpool_limits

from .features import _iter_features, working_volume

SMOOTHING = 0.08
MIN_DISTANCE = 0.4
MIN_AUTO_THRESHOLD = 0.2
#: peaks below this smoothed probability are never candidates (noise floor)
CANDIDATE_FLOOR = 0.02


@dataclass
class Detection:
    """Picks of one tomogram and the maps they came from.

    Attributes
    ----------
    positions : (N, 3) ndarray
        (x, y, z) voxels of the tomogram, bottom-left origin, best first.
    scores : (N,) ndarray
        Smoothed particle probability at each peak.
    threshold : float
        The score threshold applied.
    automatic : bool
        Whether the threshold was chosen automatically.
    candidate_scores : (M,) ndarray
        Scores of every peak after suppression, before the threshold.
    score_map : (nz, ny, nx) float32 ndarray
        Smoothed probability on the tomogram's grid.
    """
    positions: np.ndarray
    scores: np.ndarray
    threshold: float
    automatic: bool
    candidate_scores: np.ndarray
    score_map: np.ndarray


def _score_map(picker, work, n_threads=2, memory_mb=1024):
    """Particle probability at every voxel of a working volume (unsmoothed), float32.

    Each slab's thread computes its features and classifies them; the
    classifier itself runs single-threaded (OpenMP threads on top of these
    would only contend for the same cores, and on a busy machine their
    spin-waiting costs 10x).
    """
    def classify(features):
        flat = features.reshape(features.shape[0], -1).T
        return picker.predict_proba(flat).reshape(features.shape[1:])

    out = np.empty(work.shape, np.float32)
    with threadpool_limits(1):
        for block, scores in _iter_features(work, picker.scales, n_threads, memory_mb,
                                           transform=classify):
            out[block] = scores
    return out


def nms_peaks(scores_map, min_distance, floor=CANDIDATE_FLOOR):
    """Local maxima of a map, thinned by greedy non-maximum suppression.

    Parameters
    ----------
    scores_map : (nz, ny, nx) array
    min_distance : float
        Voxels; of two peaks closer than this the lower one is dropped.
    floor : float
        Peaks scoring below it are ignored, and so are peaks on the faces.

    Returns
    -------
    zyx : (N, 3) ndarray of int
        Peak voxels, best first.
    scores : (N,) ndarray

    Examples
    --------
    >>> m = np.zeros((9, 9, 9), np.float32)
    >>> m[4, 4, 2], m[4, 4, 4], m[4, 4, 7] = 0.5, 0.9, 0.8
    >>> zyx, s = nms_peaks(m, min_distance=3)
    >>> zyx.tolist(), s.tolist()
    ([[4, 4, 4], [4, 4, 7]], [0.8999999761581421, 0.800000011920929])
    """
    size = max(3, 2 * int(min_distance / 2) + 1)
    local = ndi.maximum_filter(scores_map, size=size, mode="nearest")
    peak = (scores_map == local) & (scores_map >= floor)
    for axis in range(3):  # the faces: see the module doc
        face = [slice(None)] * 3
        for index in (0, -1):
            face[axis] = index
            peak[tuple(face)] = False
    zyx = np.argwhere(peak)
    scores = scores_map[tuple(zyx.T)]
    order = np.argsort(-scores, kind="stable")
    zyx, scores = zyx[order], scores[order]
    if len(zyx) < 2:
        return zyx, scores
    tree = cKDTree(zyx)
    suppressed = np.zeros(len(zyx), bool)
    keep = []
    for i in range(len(zyx)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[tree.query_ball_point(zyx[i], min_distance - 1e-9)] = True
    keep = np.array(keep, int)
    return zyx[keep], scores[keep]


def subvoxel_offsets(volume, zyx):
    """Parabolic refinement of integer peaks, per axis; (N, 3) offsets [z, y, x] in [-0.5, 0.5].

    Examples
    --------
    >>> z = np.arange(9.0)
    >>> v = np.exp(-((z[:, None, None] - 4.3) ** 2 + (z[None, :, None] - 4) ** 2
    ...              + (z[None, None, :] - 3.8) ** 2) / 8)
    >>> (subvoxel_offsets(v, np.array([[4, 4, 4]])).round(1) + 0.0).tolist()
    [[0.3, 0.0, -0.2]]
    """
    zyx = np.asarray(zyx, int).reshape(-1, 3)
    offsets = np.zeros(zyx.shape, float)
    for axis in range(3):
        step = np.zeros(3, int)
        step[axis] = 1
        lo = np.clip(zyx - step, 0, np.array(volume.shape) - 1)
        hi = np.clip(zyx + step, 0, np.array(volume.shape) - 1)
        f0 = volume[tuple(zyx.T)].astype(float)
        fm = volume[tuple(lo.T)].astype(float)
        fp = volume[tuple(hi.T)].astype(float)
        curvature = fm - 2 * f0 + fp
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(curvature < 0, 0.5 * (fm - fp) / curvature, 0.0)
        offsets[:, axis] = np.clip(np.nan_to_num(delta), -0.5, 0.5)
    return offsets


def automatic_threshold(candidate_scores):
    """Otsu's threshold on peak scores, at least `MIN_AUTO_THRESHOLD`.

    Examples
    --------
    >>> s = np.r_[np.full(30, 0.05), np.full(10, 0.9)]
    >>> 0.2 <= automatic_threshold(s) < 0.9
    True
    """
    scores = np.asarray(candidate_scores, float)
    if len(scores) < 2 or np.ptp(scores) == 0:
        return MIN_AUTO_THRESHOLD
    return float(max(MIN_AUTO_THRESHOLD, threshold_otsu(scores)))


def pick(picker, volume, voxel_size, threshold=-1.0, max_picks=0, min_distance=None,
         n_threads=2, memory_mb=1024, score_out=None):
    """Pick a tomogram with a trained `LearnedPicker`.

    Parameters
    ----------
    picker : LearnedPicker
        Fitted (`LearnedPicker.fit` or `LearnedPicker.load`).
    volume : (nz, ny, nx) array
        The tomogram (a memory map is read once).
    voxel_size : float
        Å per voxel of ``volume``.
    threshold : float
        Smoothed-probability threshold; negative = automatic
        (`automatic_threshold`).
    max_picks : int
        Keep at most this many (best first); 0 = no limit.
    min_distance : float, optional
        Non-maximum suppression distance in tomogram voxels; default
        `MIN_DISTANCE` particle diameters.
    n_threads : int
    score_out : (nz, ny, nx) array, optional
        Where to write the score map (e.g. the memory map of
        `tomopick.core.formats.create_mrc`, so that a big tomogram's map
        never sits in memory); it is then the result's ``score_map``.

    Returns
    -------
    Detection

    Examples
    --------
    >>> from tomopick.core.learned import LearnedPicker
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.mgrid[:32, :48, :48]
    >>> volume = rng.normal(0, 0.3, (32, 48, 48)).astype(np.float32)
    >>> big = [(10, 12, 10), (34, 14, 20), (12, 36, 16), (36, 36, 22), (24, 24, 12)]
    >>> small = [(24, 8, 22), (8, 26, 22), (40, 26, 10)]
    >>> for (cx, cy, cz), r in [(c, 4) for c in big] + [(c, 1.5) for c in small]:
    ...     volume += (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r
    >>> picker = LearnedPicker.create(diameter=80.0, voxel_size=10.0, seed=0)
    >>> _ = picker.add_examples(volume, 10.0, positives=big[:3], negatives=small[:2])
    >>> detection = pick(picker.fit(), volume, 10.0, threshold=0.5)
    >>> sorted(np.round(detection.positions).astype(int).tolist())   # the 5 big balls only
    [[10, 12, 10], [12, 36, 16], [24, 24, 12], [34, 14, 20], [36, 36, 22]]
    >>> detection.score_map.shape
    (32, 48, 48)
    """
    work, grid = working_volume(volume, voxel_size, picker.working_voxel_size)
    d = picker.working_diameter
    raw = _score_map(picker, work, n_threads, memory_mb)
    smoothed = ndi.gaussian_filter(raw, max(0.5, SMOOTHING * d), mode="nearest")
    del raw
    if min_distance is None:
        distance = MIN_DISTANCE * d
    else:
        distance = float(min_distance) * float(np.mean(grid.scale_xyz))
    zyx, scores = nms_peaks(smoothed, max(1.0, distance))
    automatic = threshold is None or threshold < 0
    chosen = automatic_threshold(scores) if automatic else float(threshold)
    keep = scores >= chosen
    if max_picks and max_picks > 0:
        keep &= np.cumsum(keep) <= max_picks
    peaks = zyx[keep]
    refined = peaks + subvoxel_offsets(smoothed, peaks)
    positions = grid.to_tomogram(refined[:, ::-1]) if len(peaks) else np.zeros((0, 3))
    return Detection(positions, scores[keep].astype(float), chosen, automatic,
                     scores.astype(float), grid.upsample(smoothed, out=score_out))
