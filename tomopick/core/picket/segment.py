"""PickET stage 1: unsupervised two-class segmentation of a tomogram.

The method of PickET (Arvindekar, Golatkar & Viswanath, bioRxiv 2025): blur the
tomogram (Gaussian, sigma 2 voxels), min-max normalise it, describe every voxel
by features of its n^3 neighbourhood (`tomopick.core.picket.features`), fit a
two-class clusterer (KMeans or a Gaussian mixture) on neighbourhoods sampled
from a z-slab, label every voxel, and call one class "particle".

What differs from PickET:

- no window is materialised for prediction.  A two-centre KMeans assigns the
  nearer centre, and ||g - c0||^2 - ||g - c1||^2 = 2 (c1 - c0).g + |c0|^2 - |c1|^2
  is LINEAR in the features g: for intensities and Gabor features that is one
  n^3 correlation of the volume; for FFT magnitudes one dot product per voxel.
  The result is exactly KMeans.predict.
- GMM: PickET fits a full-covariance mixture on all d features.  Here the
  features are first projected on their leading principal components (enough
  for ``GMM_VARIANCE_KEPT[mode]`` of the sample variance, at most
  ``GMM_MAX_COMPONENTS[mode]``: 99.99 % / 24 for FFT, 99.9 % / 12 else) and the
  full-covariance mixture is fitted there, so prediction needs only that many
  linear projections per voxel, and its posterior log-odds, a quadratic form,
  is evaluated in the form's eigenbasis (`_gmm_log_odds_form`) as a sum of
  squares.  `tests/test_picket.py` checks the log-odds against scikit-learn's
  and measures the agreement with the full-feature mixture.
- FFT features: only the non-redundant half of the n^3 DFT is computed; the
  duplicated coefficients are represented by weighting their partner by
  sqrt(2), which leaves every Euclidean distance (hence KMeans) unchanged.
- z ranges for fitting and picking come from the slice profile when not given
  (`lamella_z_ranges`); the particle class is chosen automatically when not
  given (`choose_particle_cluster`); every voxel, the border included, is
  classified (PickET leaves an n//2 frame unlabelled and then calls it
  "particle" when the labels flip).
- each voxel gets a signed margin (KMeans: distance difference; GMM: posterior
  log-odds), positive on the particle side, from which picks get scores.
- deterministic for a given ``seed``; z-chunks processed by threads with a
  halo, so memory stays bounded by the volume itself plus a few chunks.
- coarse-to-fine: for particles of at least ``GRID_MIN_DIAMETER`` voxels the
  margin is computed on the grid of every second voxel along each axis
  (`grid_step_for`), exactly there, at an eighth of the cost.  The sigma-2
  blur leaves the volume band-limited well below that grid's Nyquist
  frequency (its transfer function is 0.7 % there), so the grid loses no
  detail a particle of 12 voxels or more is made of; stage 2 finds objects on
  that grid and returns positions in voxels of the tomogram.
"""
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.ndimage as ndi
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from threadpoolctl import ThreadpoolController

from tomopick.core.formats.mrc import release_pages

from . import features as pf
from .beads import GOLD_CONTRAST, GoldBeads, find_gold_beads
from .blur import gaussian_slab
from .membranes import find_membranes
from .features import grid_shape

__all__ = [
    "CLUSTERERS", "MAX_FIT_NEIGHBORHOODS", "check_clusterer", "parse_z_range", "preprocess",
    "lamella_z_ranges",
    "PickETModel", "fit_model", "grid_step_for", "GridVolume", "predict_margin",
    "choose_particle_cluster", "Segmentation", "segment_tomogram", "segment_workflows",
]

CLUSTERERS = ("KMeans", "GMM")
BLUR_SIGMA = 2.0
# principal components kept for the GMM (variance fraction, at most so many):
# each costs one FFT correlation per voxel for the linear modes, only a row of
# a small matrix product for FFT magnitudes, so FFT keeps more
GMM_VARIANCE_KEPT = {"FFT": 0.9999, "Gabor": 0.999, "intensities": 0.999}
GMM_MAX_COMPONENTS = {"FFT": 24, "Gabor": 12, "intensities": 12}
NUM_GABOR_FEATURES = 64
# fitting sample: measured on the 128 x 256 x 256 lamellae (bench_picket.py
# --lamellae), 25,000 neighbourhoods give the F1 of 100,000 (PickET's default)
# within +-0.02 for every workflow, at a quarter of the fitting time
MAX_FIT_NEIGHBORHOODS = 25000
# a particle class holding more than this fraction of the picked voxels means
# the clusterer split the background (KMeans' bisector does that when the
# particles are a small, weak-contrast minority): the class is split again
MAX_PARTICLE_FRACTION = 0.25

#: `choose_particle_cluster`: contrasts closer than this ratio tell the classes
#: apart no better than chance (measured: 0.042 against 0.041, the wrong class)
AMBIGUOUS_CONTRAST = 1.25

#: particles at least this wide (voxels) are segmented on the step-2 grid
#: (`grid_step_for`): 6 grid voxels across, enough for stage 2's shape tests
GRID_MIN_DIAMETER = 12.0


def check_clusterer(name):
    """Canonical clusterer name ('KMeans' or 'GMM').

    Raises
    ------
    ValueError
        If ``name`` is neither (case-insensitive).

    Examples
    --------
    >>> check_clusterer("kmeans"), check_clusterer("gmm")
    ('KMeans', 'GMM')
    """
    canonical = {c.lower(): c for c in CLUSTERERS}
    try:
        return canonical[str(name).lower()]
    except KeyError:
        raise ValueError(f"clusterer {name!r} is not one of {CLUSTERERS}") from None


def parse_z_range(text, nz=None):
    """Parse a user z range "lo-hi" (inclusive slice indices); empty -> None.

    Raises
    ------
    ValueError
        If the text is not two integers "lo-hi" with 0 <= lo <= hi < nz.

    Examples
    --------
    >>> parse_z_range("40-120"), parse_z_range(""), parse_z_range("40:120", nz=200)
    ((40, 120), None, (40, 120))
    """
    text = (text or "").strip()
    if not text:
        return None
    parts = text.replace(":", "-").replace(",", "-").split("-")
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"z range {text!r} is not of the form 'lo-hi' (e.g. '40-120')") from None
    if lo < 0 or hi < lo or (nz is not None and hi >= nz):
        raise ValueError(f"z range {text!r} is outside 0..{'nz-1' if nz is None else nz - 1} "
                         "or has lo > hi")
    return lo, hi


# --------------------------------------------------------------------------- preprocessing

def preprocess(volume, sigma=BLUR_SIGMA, chunk=16, n_threads=2, slice_std=None):
    """Gaussian blur then min-max normalisation to [0, 1] (PickET's preprocessing).

    Blurred in z-chunks with a halo of 4 sigma (`blur.gaussian_slab`: the
    same as blurring the whole volume with scipy's 'reflect' boundary, to
    float32 rounding), so a memory-mapped input is read chunk by chunk.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    sigma : float
        Gaussian sigma in voxels.
    slice_std : (nz,) float array, optional
        Filled with the standard deviation of each normalised z-slice
        (`lamella_z_ranges`' profile), computed in the chunk threads.

    Returns
    -------
    (nz, ny, nx) float32 ndarray

    Raises
    ------
    ValueError
        If the volume is not 3D or is constant.

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32)
    >>> normalized = preprocess(volume)
    >>> normalized.dtype, float(normalized.min()), float(normalized.max())
    (dtype('float32'), 0.0, 1.0)
    """
    if np.ndim(volume) != 3:
        raise ValueError(f"tomogram must be 3D [z, y, x], got shape {np.shape(volume)}")
    nz = volume.shape[0]
    out = np.empty(volume.shape, np.float32)

    def blur(z0):
        part = gaussian_slab(volume, z0, min(nz, z0 + chunk), sigma, out=out[z0:z0 + chunk])
        # the extremes while the chunk is in cache, in this thread
        return float(part.min()), float(part.max())

    def normalize(z0):
        part = out[z0:z0 + chunk]
        part -= np.float32(lo)
        part /= np.float32(hi - lo)
        if slice_std is not None:
            slice_std[z0:z0 + len(part)] = [np.std(s) for s in part]

    with ThreadPoolExecutor(n_threads) as pool:
        extremes = np.array(list(pool.map(blur, range(0, nz, chunk))))
        # the tomogram is read once: its mapped file pages would otherwise count in
        # this process's memory as long as the map lives (1.2 GB at 1000 x 1000 x 300)
        release_pages(volume)
        lo, hi = extremes[:, 0].min(), extremes[:, 1].max()
        if not hi > lo:
            raise ValueError("tomogram is constant after blurring: nothing to segment")
        list(pool.map(normalize, range(0, nz, chunk)))
    return out


def lamella_z_ranges(normalized, margin=0, min_thickness=None, slice_std=None):
    """Fitting and picking z ranges from the slice profile of the lamella.

    The per-slice standard deviation of the blurred volume is high where there
    is sample and low in the empty reconstruction above and below it.  The
    slab is the run of slices around the profile's peak (5-slice smoothing)
    above ``floor + 0.2 (peak - floor)``, accepted only if no slice further out
    reaches half the peak height and the profile contrast is >= 30 %;
    otherwise the sample is taken to fill the volume.

    Parameters
    ----------
    normalized : (nz, ny, nx) array
        Output of `preprocess`.
    margin : int
        Slices added on both sides of the slab for picking (e.g. a particle
        radius, so particles straddling the slab edge keep their full mask).
    min_thickness : int, optional
        Smallest fitting range (default: 5 slices).
    slice_std : (nz,) array, optional
        The slices' standard deviations, when known (`preprocess` computes them).

    Returns
    -------
    fit_range, pick_range : tuple of int
        Inclusive (lo, hi) slice indices.  The fitting range is the central half
        of the slab (PickET's advice: fit on a central slab rich in sample).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> volume = rng.normal(0, 0.05, (60, 32, 32)).astype(np.float32)
    >>> volume[20:40] += rng.normal(0, 1.0, (20, 32, 32))   # the sample: slices 20-39
    >>> fit, pick = lamella_z_ranges(preprocess(volume), margin=3)
    >>> bool(abs(pick[0] - 17) <= 3 and abs(pick[1] - 42) <= 3), fit[0] >= pick[0]
    (True, True)
    """
    nz = normalized.shape[0]
    profile = np.asarray([np.std(s) for s in normalized] if slice_std is None else slice_std,
                         float)
    edge = int(2 * BLUR_SIGMA)
    if nz > 6 * edge:
        # the blur's reflecting boundary inflates the outermost slices' variance
        profile[:edge], profile[-edge:] = profile[edge], profile[-edge - 1]
    smooth = ndi.uniform_filter1d(profile, min(5, nz), mode="nearest")
    floor, peak = np.percentile(smooth, 5), smooth.max()
    lo, hi = 0, nz - 1
    if peak > 0 and (peak - floor) >= 0.3 * peak:
        top = int(np.argmax(smooth))
        core = smooth >= floor + 0.5 * (peak - floor)
        edge = smooth >= floor + 0.2 * (peak - floor)
        a = b = top
        while a > 0 and edge[a - 1]:
            a -= 1
        while b < nz - 1 and edge[b + 1]:
            b += 1
        outside = core.copy()
        outside[max(0, a - 3):b + 4] = False
        # one slab flanked by quiet slices; anything else (sample everywhere,
        # several layers) keeps the whole volume
        if not outside.any():
            lo, hi = a, b
    pick = (max(0, lo - int(margin)), min(nz - 1, hi + int(margin)))
    thickness = hi - lo + 1
    half = max(min_thickness or 5, thickness // 2) // 2
    centre = (lo + hi) // 2
    fit = (max(0, centre - half), min(nz - 1, centre + half))
    return fit, pick


# --------------------------------------------------------------------------- model

@dataclass
class PickETModel:
    """A fitted PickET classifier, reduced to what prediction needs.

    Both clusterers give each voxel a signed margin that is a quadratic
    function of a few linear projections of its features:

        y = projection @ features + offset,
        margin = sum_i y_i (quadratic_i y_i + linear_i) + constant,

    positive on the side of cluster 1.  KMeans: one projection, the distance
    difference (quadratic 0, linear 1).  GMM: the posterior log-odds of the
    two-component mixture in principal-component space, rewritten in the
    eigenbasis of its quadratic part, so a voxel costs P projections and an
    elementwise sum, with no matrix product per voxel.

    Attributes
    ----------
    mode, clusterer : str
    n : int
        Neighbourhood edge.
    projection : (P, d) ndarray
        Linear map applied to the (PickET) features of every voxel.
    offset : (P,) ndarray
        Added after the projection.
    quadratic, linear : (P,) ndarray
    constant : float
    gabor_filters : (F, n^3) ndarray or None
        The selected Gabor filters (Gabor mode).
    gmm : GaussianMixture or None
        The mixture in principal-component space (GMM; for reference).
    feature_scale : (d,) ndarray
        Per-feature weights applied before fitting (sqrt(2) for the FFT
        coefficients standing for a conjugate pair, else 1).
    info : dict
    """
    mode: str
    clusterer: str
    n: int
    projection: np.ndarray
    offset: np.ndarray
    quadratic: np.ndarray
    linear: np.ndarray
    constant: float
    gabor_filters: np.ndarray = None
    gmm: object = None
    feature_scale: np.ndarray = None
    info: dict = field(default_factory=dict)

    def margin_from_projection(self, proj):
        """Signed margin (positive: cluster 1) from projected features (P, ...).

        ``proj`` is ``projection @ features`` without the offset.
        """
        shape = proj.shape[1:]
        proj = proj.reshape(len(proj), -1)
        offset, a, b = (v.astype(np.float32)[:, None]
                        for v in (self.offset, self.quadratic, self.linear))
        out = np.empty(proj.shape[1], np.float32)
        step = 16384            # blocks of all P projections that stay in cache
        y, factor = np.empty((2, len(proj), min(step, proj.shape[1])), np.float32)
        for start in range(0, proj.shape[1], step):
            block = proj[:, start:start + step]
            m = block.shape[1]
            np.add(block, offset, out=y[:, :m])
            np.multiply(y[:, :m], a, out=factor[:, :m])
            factor[:, :m] += b
            y[:, :m] *= factor[:, :m]
            np.sum(y[:, :m], axis=0, out=out[start:start + m])
        out += np.float32(self.constant)
        return out.reshape(shape)

    def predict_features(self, features):
        """Cluster labels (0/1) of explicit PickET feature rows (M, d)."""
        f = np.asarray(features, np.float32) * self.feature_scale
        proj = (self.projection @ f.T).astype(np.float32)
        return (self.margin_from_projection(proj) > 0).astype(np.uint8)


def _gmm_log_odds_form(gmm):
    """The posterior log-odds of a two-component full-covariance mixture as a sum of squares.

    log p(1 | z) - log p(0 | z) is quadratic in z.  Centred between the two
    means (u = z - (mu0 + mu1) / 2, delta = (mu1 - mu0) / 2) it reads
    -1/2 u'(L1 - L0)u + delta'(L1 + L0)u + c, L the precision matrices;
    with the eigendecomposition -1/2 (L1 - L0) = Q diag(q) Q' and y = Q'u this is
    sum_i y_i (q_i y_i + l_i) + c.

    Parameters
    ----------
    gmm : sklearn.mixture.GaussianMixture
        Fitted with 2 components and ``covariance_type='full'``.

    Returns
    -------
    rotation : (P, P) ndarray
        Q' (rows: eigenvectors).
    centre : (P,) ndarray
        (mu0 + mu1) / 2.
    quadratic, linear : (P,) ndarray
    constant : float
    """
    (mu0, mu1), (p0, p1) = gmm.means_, gmm.precisions_
    centre, delta = (mu0 + mu1) / 2, (mu1 - mu0) / 2
    difference = p1 - p0
    quadratic, vectors = np.linalg.eigh(-0.5 * (difference + difference.T) / 2)
    linear = vectors.T @ ((p1 + p0) @ delta)
    log_det = [np.log(np.diag(c)).sum() for c in gmm.precisions_cholesky_]
    constant = (np.log(gmm.weights_[1] / gmm.weights_[0]) + log_det[1] - log_det[0]
                - 0.5 * delta @ difference @ delta)
    return vectors.T, centre, quadratic, linear, float(constant)


def fit_model(windows, n, mode, clusterer, seed=0, gmm_components=None, gabor_filters=None):
    """Fit PickET's two-class clusterer on sampled neighbourhoods.

    Parameters
    ----------
    windows : (M, n^3) array
        Flattened neighbourhoods of the normalised volume (`sample_windows`).
    mode : {'FFT', 'Gabor', 'intensities'}
    clusterer : {'KMeans', 'GMM'}
    seed : int
    gmm_components : int, optional
        Principal components for the GMM (default: ``GMM_VARIANCE_KEPT[mode]``
        of the variance, between 2 and ``GMM_MAX_COMPONENTS[mode]``).
    gabor_filters : (F, n^3) array, optional
        Gabor mode: the filters to use (default: PickET's selection from the
        bank on these windows, `features.select_gabor_filters`).

    Returns
    -------
    PickETModel

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((24, 48, 48))
    >>> volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    >>> for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:  # four dark balls, radius 4
    ...     volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 16] -= 1.0
    >>> centres = np.argwhere(np.ones(volume.shape, bool))[::7]
    >>> windows = pf._sample_windows(preprocess(volume), centres, 5)
    >>> model = fit_model(windows, 5, "intensities", "KMeans")
    >>> model.clusterer, model.projection.shape          # one projection: KMeans is linear
    ('KMeans', (1, 125))
    """
    mode, clusterer = pf.check_feature_mode(mode), check_clusterer(clusterer)
    if len(windows) < 10:
        raise ValueError(f"only {len(windows)} neighbourhoods to fit the clusterer on")
    gabor = None
    if mode == "Gabor" and gabor_filters is not None:
        gabor = np.asarray(gabor_filters, np.float32)
    elif mode == "Gabor":
        bank, _ = pf.gabor_bank(n)
        gabor = bank[pf.select_gabor_filters(windows, bank, NUM_GABOR_FEATURES)]
    features = pf.window_features(windows, n, mode, gabor)
    scale = np.ones(features.shape[1], np.float32)
    if mode == "FFT":
        scale = np.sqrt(pf._fft_half_indices(n)[1]).astype(np.float32)
    features = features * scale
    info = {"n_fit": len(features), "n_features": features.shape[1]}
    if clusterer == "KMeans":
        # single precision, as the prediction: measured 1.5-2.5x faster than
        # float64 with the same iterations and centres to 1e-6
        # one BLAS thread: k-means++'s distance products otherwise wake
        # OpenBLAS's threads, which spin afterwards and take the cores from the
        # OpenMP threads of Lloyd's iterations (scikit-learn limits BLAS there
        # only): fit medians 0.13-0.15 s -> 0.04-0.05 s, same centres
        with _thread_pools().limit(limits=1, user_api="blas"):
            km = KMeans(n_clusters=2, random_state=seed, n_init=1).fit(features)
        c0, c1 = km.cluster_centers_.astype(np.float64)
        projection = (2 * (c1 - c0))[None]
        offset = np.array([c0 @ c0 - c1 @ c1])
        info["centers"] = km.cluster_centers_.astype(np.float64)
        return PickETModel(mode, clusterer, n, projection, offset, np.zeros(1), np.ones(1), 0.0,
                           gabor, None, scale, info)
    features = features.astype(np.float64)
    pca = PCA(random_state=seed).fit(features)
    if gmm_components is None:
        kept = np.cumsum(pca.explained_variance_ratio_)
        gmm_components = int(np.searchsorted(kept, GMM_VARIANCE_KEPT[mode]) + 1)
        gmm_components = int(np.clip(gmm_components, 2, GMM_MAX_COMPONENTS[mode]))
    gmm_components = min(int(gmm_components), features.shape[1])
    components = pca.components_[:gmm_components]
    z = (features - pca.mean_) @ components.T
    gmm = GaussianMixture(n_components=2, covariance_type="full", random_state=seed,
                          reg_covar=1e-6).fit(z)
    info["pca_components"] = gmm_components
    info["variance_kept"] = float(pca.explained_variance_ratio_[:gmm_components].sum())
    rotation, centre, quadratic, linear, constant = _gmm_log_odds_form(gmm)
    # y = rotation @ (components @ (f - pca mean) - centre)
    projection = rotation @ components
    offset = -(rotation @ (components @ pca.mean_ + centre))
    return PickETModel(mode, clusterer, n, projection, offset, quadratic, linear, constant,
                       gabor, gmm, scale, info)


@functools.lru_cache(maxsize=1)
def _thread_pools():
    """The process's native thread pools (BLAS, OpenMP), found once.

    ``threadpool_limits`` looks them up on every call (~10 ms: it scans the
    loaded libraries), which was a tenth of a whole prediction on small tomograms.
    """
    return ThreadpoolController()


class GridVolume:
    """A volume on the step grid seen at every voxel (nearest grid voxel), slab by slab.

    ``GridVolume(grid, shape, step)[z0:z1]`` is the (z1 - z0, ny, nx) array
    whose voxel (z, y, x) holds the grid voxel nearest to it; nothing
    volume-sized is made, so a label volume of a stage-2 result is written at
    the tomogram's size slab by slab (`formats.mrc.write_mrc_slabs`).

    Parameters
    ----------
    grid : (gz, gy, gx) array
        ``grid_shape(shape, step)``.
    shape : (nz, ny, nx)
        The volume's shape.
    step : int
    z_range : (lo, hi), optional
        Inclusive slices outside which the volume reads 0 (the picking range:
        a grid slice also stands for the slice next to it, which may be outside).

    Examples
    --------
    >>> grid = np.arange(8).reshape(2, 2, 2)
    >>> full = GridVolume(grid, (3, 4, 4), 2)
    >>> full.shape, full[0:1][0].tolist()
    ((3, 4, 4), [[0, 1, 1, 1], [2, 3, 3, 3], [2, 3, 3, 3], [2, 3, 3, 3]])
    """

    def __init__(self, grid, shape, step, z_range=None):
        self.shape, self.step = tuple(int(s) for s in shape), int(step)
        self.z_range = (0, self.shape[0] - 1) if z_range is None else tuple(z_range)
        if tuple(grid.shape) != grid_shape(self.shape, self.step):
            raise ValueError(f"grid of shape {grid.shape} is not the step-{step} grid of "
                             f"{self.shape}")
        self.grid, self.dtype, self.ndim = grid, grid.dtype, 3
        # voxel i -> nearest grid voxel (i + step // 2) // step, the last one at the end
        self._index = [np.minimum((np.arange(n) + self.step // 2) // self.step, g - 1)
                       for n, g in zip(self.shape, grid.shape)]

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, z):
        if not isinstance(z, slice):
            raise TypeError("GridVolume is read by z-slices: volume[z0:z1]")
        iz, iy, ix = (self._index[0][z],) + tuple(self._index[1:])
        out = np.asarray(self.grid[iz[:, None, None], iy[None, :, None], ix[None, None, :]])
        zs = np.arange(self.shape[0])[z]
        out[(zs < self.z_range[0]) | (zs > self.z_range[1])] = 0
        return out


def _grid_rows(z_range, step):
    """Inclusive grid slices (lo, hi) whose voxel slice lies in the inclusive ``z_range``."""
    lo, hi = z_range
    return -(-int(lo) // step), int(hi) // step


def predict_margin(normalized, model, z_range, out, chunk=None, n_threads=2, combine=None,
                   step=1, also=()):
    """Signed cluster-1 margin of every voxel in a z range, by z-chunks.

    Each chunk is padded on its own (`features.pad_chunk`): no padded copy of
    the volume is ever made.  With ``step`` > 1 the margin is computed on the
    grid of voxels whose indices are multiples of ``step`` only (exactly the
    margin of those voxels, at ~1 / step^3 of the cost).

    Parameters
    ----------
    normalized : (nz, ny, nx) array
        The preprocessed volume (`preprocess`).
    model : PickETModel
    z_range : (lo, hi)
        Inclusive slice range to classify.
    out : float32 ndarray
        (nz, ny, nx), or `grid_shape` of it for ``step`` > 1 (grid voxel i is
        voxel step i); written in place for the slices of ``z_range``.
    chunk : int, optional
        Grid slices per chunk (default 12 / step: 12 was the fastest measured
        for every mode on 512 x 512 slices with 2 threads).
    n_threads : int
    combine : {None, 'min'}
        None: ``out`` receives the margin; 'min': ``out`` becomes the smaller of
        itself and the margin (a second clusterer refining the first).
    step : int
        Grid step (voxels).
    also : sequence of (PickETModel, out), optional
        More FFT models evaluated in the same pass, each into its own array:
        the magnitudes are the pass's cost, each model's projections almost
        nothing (FFT mode only).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((24, 48, 48))
    >>> volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    >>> for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:  # four dark balls, radius 4
    ...     volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 16] -= 1.0
    >>> normalized = preprocess(volume)
    >>> centres = np.argwhere(np.ones(volume.shape, bool))[::7]
    >>> model = fit_model(pf._sample_windows(normalized, centres, 5), 5, "intensities", "KMeans")
    >>> margin = np.zeros(volume.shape, np.float32)
    >>> _ = predict_margin(normalized, model, (0, 23), margin)
    >>> inside = (margin[12, 12, 12] > 0, margin[12, 24, 24] > 0)  # a ball centre, the solvent
    >>> inside[0] != inside[1]                                     # opposite sides
    True
    """
    n, h = model.n, model.n // 2
    step = int(step)
    models, outs = [model] + [m for m, _ in also], [out] + [o for _, o in also]
    for o in outs:
        if o.shape != grid_shape(normalized.shape, step):
            raise ValueError(f"margin array of shape {o.shape} does not hold the step-{step} "
                             f"grid of a {normalized.shape} volume")
    if also and any(m.mode != "FFT" or m.n != n for m in models):
        raise ValueError("only FFT models of one neighbourhood size share a pass")
    lo, hi = _grid_rows(z_range, step)          # grid slices whose voxel is in the range
    chunk = chunk or max(1, 12 // step)
    # fold the feature weights into the projections: features are computed unweighted
    projections = [(m.projection * m.feature_scale[None]).astype(np.float32) for m in models]
    # prediction needs a few linear combinations of the features, never the
    # features themselves: for intensities and Gabor one correlation kernel per
    # row of the projection, for FFT magnitudes the blocked matrix product
    # the margin is reduced block by block (FFT) or kernel by kernel (the
    # others): the P projections of a whole chunk are never held (P x 48 MB
    # per chunk and thread on 1000 x 1000 slices)
    if model.mode == "FFT":
        # the models' projections stacked: one matrix product per block
        bounds = np.cumsum([0] + [len(r) for r in projections])
        stacked = np.concatenate(projections)

        def reduce(proj):
            return np.stack([m.margin_from_projection(proj[a:b])
                             for m, a, b in zip(models, bounds[:-1], bounds[1:])])

        def chunk_margin(block):
            return pf._project_fft_magnitudes(block, n, stacked, reduce=reduce, step=step,
                                              outputs=len(models))
    else:
        kernels = pf._window_kernels(projections[0], model.mode, n, model.gabor_filters)
        # the kernel spectra of the common chunk shape, on all threads, before
        # the chunks share them
        shape = pf._transform_shape((step * (min(chunk, hi - lo + 1) - 1) + 1 + 2 * h,)
                                    + tuple(s + 2 * h for s in normalized.shape[1:]))
        cache = {shape: pf._kernel_spectra(kernels, shape, workers=n_threads)}
        offset, quadratic, linear = (np.asarray(v, np.float32)
                                     for v in (model.offset, model.quadratic, model.linear))

        def chunk_margin(block):
            margin = np.full(grid_shape([s - 2 * h for s in block.shape], step),
                             model.constant, np.float32)

            def accumulate(p, y):
                # margin += y (quadratic y + linear), y = response + offset
                y += offset[p]
                factor = y * quadratic[p]
                factor += linear[p]
                y *= factor
                np.add(margin, y, out=margin)
            pf._correlate_kernels(block, kernels, cache=cache, consume=accumulate, step=step)
            return margin[None]

    def run(g0):
        g1 = min(hi + 1, g0 + chunk)
        margins = chunk_margin(pf.pad_chunk(normalized, step * g0, step * (g1 - 1) + 1, n))
        for o, margin in zip(outs, margins):
            if combine == "min":
                np.minimum(o[g0:g1], margin, out=o[g0:g1])
            else:
                o[g0:g1] = margin

    starts = list(range(lo, hi + 1, chunk))
    # one BLAS thread per chunk thread.  Set once, here: the limit is process-wide,
    # and entering and leaving it from the worker threads, interleaved, left the
    # process with one BLAS thread after prediction
    with _thread_pools().limit(limits=1), ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(run, starts))
    return out


# --------------------------------------------------------------------------- cluster choice

def choose_particle_cluster(normalized, labels, z_range, particle_diameter=None):
    """Decide which of the two clusters holds the particles.

    Two pieces of evidence, both independent of the contrast convention:

    1. component statistics (when the particle diameter is known): the particle
       class splits into many compact components of about a particle's volume,
       the solvent class into few large ones.  Each class scores the number of
       its 6-connected components with a volume between 0.1x and 8x the
       expected particle volume; a class scoring at least 1.5x the other wins;
    2. contrast polarity: particles are the class whose mean intensity lies
       further from the median of the volume (the solvent level, since solvent
       fills most of a tomogram), whichever sign the contrast has.

    When the two contrasts are within ``AMBIGUOUS_CONTRAST`` of each other,
    any majority of particle-sized components decides (the 1.5x margin is
    waived).

    Parameters
    ----------
    normalized : (nz, ny, nx) array
        Preprocessed volume.
    labels : (nz, ny, nx) bool or uint8 array
        Cluster-1 membership.
    z_range : (lo, hi)
        Inclusive slices that were classified (statistics come from a central
        slab of at most 16 M voxels of it).
    particle_diameter : float, optional
        Voxels.

    Returns
    -------
    cluster : int
        0 or 1.
    evidence : dict
        The statistics behind the choice (for the log).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((24, 48, 48))
    >>> volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    >>> for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:  # four dark balls, radius 4
    ...     volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 16] -= 1.0
    >>> normalized = preprocess(volume)
    >>> labels = normalized > 0.45                 # class 1 = the bright solvent here
    >>> cluster, evidence = choose_particle_cluster(normalized, labels, (0, 23), 9)
    >>> cluster                                    # the balls are class 0
    0
    """
    lo, hi = z_range
    # a central slab of at most ~16 M voxels tells the classes apart as well as
    # the whole range and keeps the two labellings cheap
    ny, nx = normalized.shape[1:]
    depth = int(min(hi - lo + 1, max(1, 16_000_000 // (ny * nx))))
    lo = (lo + hi + 1 - depth) // 2
    hi = lo + depth - 1
    vol = normalized[lo:hi + 1]
    lab = np.asarray(labels[lo:hi + 1], bool)
    median = float(np.median(vol[::2, ::4, ::4]))
    means = [float(vol[~lab].mean()) if (~lab).any() else median,
             float(vol[lab].mean()) if lab.any() else median]
    contrast = [abs(m - median) for m in means]
    evidence = {"median": median, "cluster_means": means, "fractions": [
        float(1 - lab.mean()), float(lab.mean())]}
    choice = int(np.argmax(contrast))
    evidence["rule"] = "contrast polarity"
    if particle_diameter:
        expected = np.pi / 6 * float(particle_diameter) ** 3
        counts = []
        for mask in (~lab, lab):
            comp, ncomp = ndi.label(mask)
            sizes = np.bincount(comp.ravel())[1:]
            counts.append(int(((sizes >= 0.1 * expected) & (sizes <= 8 * expected)).sum()))
            del comp
        evidence["plausible_components"] = counts
        # a contrast difference of a few percent says nothing (a class split
        # down the middle of the particles' intensity range): then even a
        # weaker majority of particle-sized components decides
        ambiguous = max(contrast) < AMBIGUOUS_CONTRAST * min(contrast)
        if max(counts) >= 3 and (max(counts) >= 1.5 * min(counts)
                                 or (ambiguous and max(counts) > min(counts))):
            choice = int(np.argmax(counts))
            evidence["rule"] = "component statistics"
    evidence["particle_cluster"] = choice
    return choice, evidence


# --------------------------------------------------------------------------- stage 1

@dataclass
class Segmentation:
    """Result of `segment_tomogram`.

    Attributes
    ----------
    mask : bool ndarray
        Particle voxels (False outside the picking z range), on the grid of
        step ``grid_step``: ``grid_shape(tomogram shape, grid_step)``, grid
        voxel (k, j, i) being tomogram voxel grid_step * (k, j, i).
    evidence : float32 ndarray
        Signed margin, positive on the particle side (0 outside the range),
        on the same grid.
    model : PickETModel
    particle_cluster : int
        Which cluster (0 = the one KMeans/GMM called 0) is the particle class.
    fit_range, pick_range : (lo, hi)
        Inclusive slices of the tomogram.
    info : dict
    grid_step : int
        1: every voxel.
    gold_beads : GoldBeads or None
        Beads found in the picking range (positions and radii in voxels of the
        tomogram), cut out of the mask (`beads.find_gold_beads`); None when
        not looked for.
    membranes : bool ndarray or None
        Voxels within `membranes.MEMBRANE_REACH` of a membrane's mid-surface
        (`membranes.find_membranes`), on the mask's grid; stage 2 tells
        membrane pieces from particles with it.  None when not looked for.
    """
    mask: np.ndarray
    evidence: np.ndarray
    model: PickETModel
    particle_cluster: int
    fit_range: tuple
    pick_range: tuple
    info: dict = field(default_factory=dict)
    grid_step: int = 1
    gold_beads: GoldBeads = None
    membranes: np.ndarray = None


@dataclass
class _Stage1Inputs:
    """What every PickET workflow on one tomogram shares (`_prepare_stage1`).

    Attributes
    ----------
    normalized : (nz, ny, nx) float32 ndarray
        Blurred, min-max normalised volume.
    n : int
        Neighbourhood edge.
    fit_range, pick_range : (lo, hi)
    centres : (M, 3) int ndarray
        [z, y, x] of the sampled fitting neighbourhoods.
    windows : (M, n^3) float32 ndarray
        Those neighbourhoods, flattened.
    timings : dict
    """
    normalized: np.ndarray
    n: int
    fit_range: tuple
    pick_range: tuple
    centres: np.ndarray
    windows: np.ndarray
    timings: dict = field(default_factory=dict)


def _prepare_stage1(volume, neighborhood_size=5, max_fit_neighborhoods=MAX_FIT_NEIGHBORHOODS,
                    z_fit_range=None, z_pick_range=None, particle_diameter=None, seed=0,
                    n_threads=2):
    """Preprocessing, z ranges and fitting sample of one tomogram, for any workflow.

    The feature mode and the clusterer do not enter here, so several workflows
    (`segment_workflows`) share this work and give the same result as
    `segment_tomogram` run for each alone.  Parameters as `segment_tomogram`.

    Returns
    -------
    _Stage1Inputs
    """
    n = pf.check_neighborhood_size(neighborhood_size)
    if int(max_fit_neighborhoods) < 100:
        raise ValueError(f"max_fit_neighborhoods must be >= 100, got {max_fit_neighborhoods}")
    nz, ny, nx = np.shape(volume)
    if min(nz, ny, nx) < n:
        raise ValueError(f"tomogram of shape {np.shape(volume)} is smaller than the "
                         f"{n}^3 neighbourhood")
    for name, rng_ in (("z_fit_range", z_fit_range), ("z_pick_range", z_pick_range)):
        if rng_ is not None and not (0 <= rng_[0] <= rng_[1] < nz):
            raise ValueError(f"{name} {tuple(rng_)} is outside slices 0..{nz - 1}")
    t0 = time.perf_counter()
    slice_std = np.empty(nz)
    normalized = preprocess(volume, n_threads=n_threads, slice_std=slice_std)
    t1 = time.perf_counter()
    radius = int(np.ceil(particle_diameter / 2)) if particle_diameter else n // 2
    auto_fit, auto_pick = lamella_z_ranges(normalized, margin=radius, slice_std=slice_std)
    fit_range = tuple(z_fit_range) if z_fit_range is not None else auto_fit
    pick_range = tuple(z_pick_range) if z_pick_range is not None else auto_pick
    rng = np.random.default_rng(seed)
    n_slab = (fit_range[1] - fit_range[0] + 1) * ny * nx
    flat = rng.choice(n_slab, size=min(int(max_fit_neighborhoods), n_slab), replace=False)
    flat.sort()
    zz, yy, xx = np.unravel_index(flat, (fit_range[1] - fit_range[0] + 1, ny, nx))
    centres = np.column_stack([zz + fit_range[0], yy, xx])
    windows = pf._sample_windows(normalized, centres, n)
    return _Stage1Inputs(normalized, n, fit_range, pick_range, centres, windows,
                        {"preprocess_s": t1 - t0, "sample_s": time.perf_counter() - t1})


def segment_workflows(volume, workflows, **kwargs):
    """PickET stage 1 for several (feature mode, clusterer) pairs sharing their preparation.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    workflows : sequence of (feature_mode, clusterer)
    **kwargs
        `segment_tomogram` parameters (the same for every workflow).

    Yields
    ------
    (feature_mode, clusterer), Segmentation
        One at a time (each holds two volume-sized arrays), in the given order;
        each equals ``segment_tomogram(volume, feature_mode, clusterer, **kwargs)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((24, 48, 48))
    >>> volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    >>> for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:  # four dark balls, radius 4
    ...     volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 16] -= 1.0
    >>> pairs = [("intensities", "KMeans"), ("FFT", "GMM")]
    >>> for (mode, clusterer), seg in segment_workflows(volume, pairs, particle_diameter=9,
    ...                                                 max_fit_neighborhoods=5000):
    ...     print(mode, clusterer, bool(seg.mask[12, 34, 34]), bool(seg.mask[12, 24, 24]))
    intensities KMeans True False
    FFT GMM True False
    """
    prep_args = {k: kwargs[k] for k in ("neighborhood_size", "max_fit_neighborhoods",
                                        "z_fit_range", "z_pick_range", "particle_diameter",
                                        "seed", "n_threads") if k in kwargs}
    prepared = _prepare_stage1(volume, **prep_args)
    workflows = list(workflows)
    for i, (mode, clusterer) in enumerate(workflows):
        seg = segment_tomogram(volume, mode, clusterer, prepared=prepared, **kwargs)
        if i == len(workflows) - 1:
            # the preprocessed volume is not needed to localise: not held while
            # the caller localises the last one
            prepared = None
        yield (mode, clusterer), seg
        del seg


def grid_step_for(particle_diameter):
    """Grid step of stage 1 for particles of this diameter (voxels): 2 from `GRID_MIN_DIAMETER`.

    Examples
    --------
    >>> grid_step_for(16.0), grid_step_for(9.0), grid_step_for(None)
    (2, 1, 1)
    """
    return 2 if particle_diameter and float(particle_diameter) >= GRID_MIN_DIAMETER else 1


def segment_tomogram(volume, feature_mode="FFT", clusterer="KMeans", neighborhood_size=5,
                     max_fit_neighborhoods=MAX_FIT_NEIGHBORHOODS, z_fit_range=None,
                     z_pick_range=None, particle_cluster=-1, particle_diameter=None, seed=0,
                     n_threads=2,
                     gmm_components=None, prepared=None, grid_step=None,
                     gold_contrast=GOLD_CONTRAST, membranes=True):
    """PickET stage 1: the particle / background segmentation of one tomogram.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        Tomogram (may be a memory map).
    feature_mode : {'FFT', 'Gabor', 'intensities'}
    clusterer : {'KMeans', 'GMM'}
    neighborhood_size : int
        Odd window edge n (voxels).
    max_fit_neighborhoods : int
        Neighbourhoods drawn at random (with ``seed``) from the fitting range.
    z_fit_range, z_pick_range : (lo, hi) or None
        Inclusive slice ranges; None = from the slice profile (`lamella_z_ranges`).
    particle_cluster : int
        0 or 1 to force the particle class, -1 = automatic
        (`choose_particle_cluster`).  Cluster ids are those of the fitted
        clusterer, so they are reproducible for a given seed.
    particle_diameter : float, optional
        Expected particle diameter in voxels (automatic choices).
    seed : int
    n_threads : int
    gmm_components : int, optional
        See `fit_model`.
    prepared : _Stage1Inputs, optional
        `_prepare_stage1` of this volume with these parameters (shared between
        workflows); computed here when not given.
    grid_step : int, optional
        Classify only the voxels whose indices are multiples of it (the
        returned mask and evidence are that grid); default `grid_step_for`
        the particle diameter.
    gold_contrast : float
        Gold beads (objects this many times denser than the median particle,
        `beads.find_gold_beads`) are cut out of the mask and listed in
        ``gold_beads`` (needs the diameter); 0 = keep them in the mask.
    membranes : bool
        Find the membranes (`membranes.find_membranes`, needs the diameter):
        ``Segmentation.membranes``, which stage 2 uses to drop membrane pieces
        and to keep particles merged with a membrane.

    Returns
    -------
    Segmentation

    Raises
    ------
    ValueError
        On a bad mode, clusterer, neighbourhood size, z range or cluster id.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((24, 48, 48))
    >>> volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    >>> for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:  # four dark balls, radius 4
    ...     volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 16] -= 1.0
    >>> seg = segment_tomogram(volume, "Gabor", "GMM", particle_diameter=9,
    ...                        max_fit_neighborhoods=5000)
    >>> bool(seg.mask[12, 12, 12]), bool(seg.mask[12, 24, 24])    # ball centre, solvent
    (True, False)
    >>> seg.evidence.dtype, seg.pick_range
    (dtype('float32'), (3, 21))
    """
    feature_mode = pf.check_feature_mode(feature_mode)
    clusterer = check_clusterer(clusterer)
    if particle_cluster not in (-1, 0, 1):
        raise ValueError(f"particle cluster id must be -1 (automatic), 0 or 1, "
                         f"got {particle_cluster}")
    if prepared is None:
        prepared = _prepare_stage1(volume, neighborhood_size, max_fit_neighborhoods, z_fit_range,
                                  z_pick_range, particle_diameter, seed, n_threads)
    normalized, n = prepared.normalized, prepared.n
    fit_range, pick_range = prepared.fit_range, prepared.pick_range
    windows, centres = prepared.windows, prepared.centres
    step = grid_step_for(particle_diameter) if grid_step is None else int(grid_step)
    if step < 1:
        raise ValueError(f"grid step must be >= 1 voxel, got {grid_step}")
    timings = dict(prepared.timings)
    clock = [time.perf_counter()]

    def lap(name):
        clock.append(time.perf_counter())
        timings[name] = clock[-1] - clock[-2]

    model = fit_model(windows, n, feature_mode, clusterer, seed, gmm_components)

    def sample_labels():
        """The first clusterer's labels of the fitting neighbourhoods."""
        return model.predict_features(pf.window_features(windows, n, model.mode,
                                                         model.gabor_filters))

    splits = {}
    labels_fit = sample_labels() if model.mode == "FFT" else None
    if labels_fit is not None and min(np.mean(labels_fit == c) for c in (0, 1)) > \
            MAX_PARTICLE_FRACTION:
        # either class is too large for particles: the split clusterers of the
        # candidate classes are fitted now and applied in the same pass (FFT
        # magnitudes are the pass's cost; a second pass was a third of FFT x KMeans)
        for c in ((0, 1) if particle_cluster == -1 else (particle_cluster,)):
            sub = _split_model(prepared, model, labels_fit == c, seed, gmm_components)
            if sub is not None:
                splits[c] = (sub, np.zeros(grid_shape(normalized.shape, step), np.float32))
    lap("fit_s")

    margin = np.zeros(grid_shape(normalized.shape, step), np.float32)
    predict_margin(normalized, model, pick_range, margin, n_threads=n_threads, step=step,
                   also=list(splits.values()))
    lap("predict_s")
    lo, hi = _grid_rows(pick_range, step)
    labels = margin > 0
    labels[:lo] = False
    labels[hi + 1:] = False
    info = dict(model.info)
    if particle_cluster == -1:
        particle_cluster, evidence = choose_particle_cluster(
            normalized[::step, ::step, ::step], labels, (lo, hi),
            particle_diameter / step if particle_diameter else None)
        info["cluster_choice"] = evidence
    if particle_cluster == 0:
        np.negative(margin, out=margin)
        np.greater(margin, 0, out=labels)       # the mask, in the labels' buffer
    mask = labels
    fraction = float(mask[lo:hi + 1].mean())
    if fraction > MAX_PARTICLE_FRACTION:
        info["first_split"] = {"model": model.info, "particle_fraction": fraction}
        # the margin becomes the smaller of the two (a voxel is as much a
        # particle as its weaker evidence says), the mask its positive part
        if particle_cluster in splits:
            np.minimum(margin, splits[particle_cluster][1], out=margin)
        else:
            labels_fit = sample_labels() if labels_fit is None else labels_fit
            sub = _split_model(prepared, model, labels_fit == particle_cluster, seed,
                               gmm_components)
            if sub is not None:     # applied chunk by chunk: no second volume held
                predict_margin(normalized, sub, pick_range, margin, n_threads=n_threads,
                               combine="min", step=step)
        np.greater(margin[lo:hi + 1], 0, out=mask[lo:hi + 1])
    del splits
    mask[:lo] = False
    mask[hi + 1:] = False
    margin[:lo] = 0
    margin[hi + 1:] = 0
    lap("choose_cluster_s")
    beads = None
    if particle_diameter and gold_contrast:
        beads = find_gold_beads(normalized[lo * step:hi * step + 1:step, ::step, ::step],
                                mask[lo:hi + 1], particle_diameter / step, gold_contrast,
                                cut=True)
        beads.positions = (beads.positions + [0, 0, lo]) * step
        beads.radii = beads.radii * step
        lap("gold_s")
    band = None
    if particle_diameter and membranes:
        band = _membrane_band(normalized, mask, (lo, hi), particle_diameter, step, n_threads)
        info["membrane_fraction"] = float(band[lo:hi + 1].mean())
        lap("membranes_s")
    info["particle_fraction"] = float(mask[lo:hi + 1].mean())
    info["timings"] = timings
    info["n_predicted"] = int(np.prod(margin[lo:hi + 1].shape))
    return Segmentation(mask, margin, model, int(particle_cluster),
                        fit_range, pick_range, info, step, beads, band)


def _membrane_band(normalized, mask, rows, particle_diameter, step, n_threads):
    """`find_membranes` for a mask on the step grid, on a grid of step 2 at least.

    The sigma-2 blur leaves nothing finer than every second voxel, and a
    full-resolution tensor needed 8x the work and its slabs' halos 2 GB at
    1000 x 1000 x 300; on a finer mask grid the band is repeated to its voxels.
    """
    lo, hi = rows
    ratio = max(1, 2 // step)
    coarse = find_membranes(
        normalized[lo * step:hi * step + 1:step * ratio, ::step * ratio, ::step * ratio],
        mask[lo:hi + 1:ratio, ::ratio, ::ratio], particle_diameter, step * ratio, n_threads)
    band = np.zeros(mask.shape, bool)
    ny, nx = mask.shape[1:]
    for z0 in range(0, hi - lo + 1, 8 * ratio):        # a few slices at a time
        part = coarse[z0 // ratio:(z0 + 8 * ratio) // ratio]
        if ratio > 1:
            part = part.repeat(ratio, 0).repeat(ratio, 1)[:, :ny].repeat(ratio, 2)[:, :, :nx]
        band[lo + z0:lo + min(z0 + 8 * ratio, hi - lo + 1)] = part[:hi - lo + 1 - z0]
    return band


def _split_model(prepared, model, inside, seed, gmm_components):
    """The clusterer refitted on one class's fitting neighbourhoods, its particle half positive.

    Of the two halves, the one whose mean intensity (at the neighbourhood
    centres) departs more from the volume's median is the particles; the
    model is oriented so that its margin is positive there.  None when the
    class has fewer than 100 neighbourhoods or does not split.

    Parameters
    ----------
    prepared : _Stage1Inputs
    model : PickETModel
        The first clusterer.
    inside : (M,) bool
        The fitting neighbourhoods in the class (by ``model``'s own labels).
    """
    if inside.sum() < 100:
        return None
    windows = prepared.windows[inside]
    # the halves are told apart in the features that defined the class (the
    # same Gabor filters: their selection from the bank is half the fit's time)
    sub = fit_model(windows, model.n, model.mode, model.clusterer, seed, gmm_components,
                    model.gabor_filters)
    half = sub.predict_features(pf.window_features(windows, model.n, model.mode,
                                                   sub.gabor_filters)).astype(bool)
    if half.all() or not half.any():
        return None
    centre = windows[:, model.n ** 3 // 2]
    lo, hi = prepared.pick_range
    median = float(np.median(prepared.normalized[lo:hi + 1:2, ::4, ::4]))
    if abs(centre[~half].mean() - median) > abs(centre[half].mean() - median):
        sub = replace(sub, quadratic=-sub.quadratic, linear=-sub.linear,
                      constant=-sub.constant)
    return sub
