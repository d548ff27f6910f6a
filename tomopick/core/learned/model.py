"""The voxel classifier of learned picking: training examples, training, persistence.

Training voxels (working grid, `tomopick.core.learned.features`) come from the
user's examples:

- positives: voxels within `POSITIVE_RADIUS` diameters of a positive pick
  (label 1),
- negatives: voxels within `NEGATIVE_RADIUS` diameters of a negative pick
  (label 0: gold, ice, membrane, the wrong particle),
- shell: voxels between `SHELL_RADII` diameters from a positive pick (and no
  nearer to any other; label 0). They teach centre against rim, so each
  particle gives one peak at its centre and touching particles stay apart.
- background: voxels drawn at random farther than `BACKGROUND_EXCLUSION`
  diameters from every positive (label 0). They teach "everything else";
  a few land on particles nobody picked, which the trees absorb as noise.

Each group gets a fixed share of the total sample weight (`GROUP_WEIGHTS`), so
ten negative picks count as much as thousands of background voxels.

The classifier is scikit-learn's RandomForestClassifier (100 trees) with fixed
hyper-parameters and seed, chosen against gradient-boosted trees
(HistGradientBoostingClassifier, 150 iterations) in
``benchmarks/bench_learned_picking.py``: on 128 x 256 x 256 phantoms both
reach the same F1 (0.945); the forest trains 2.5x slower (~10 s for 10 + 10
examples) but applies 4x faster, and applying is what runs on every
tomogram.

Persistence (``model.npz``, format version `FORMAT_VERSION`): the *training
examples* and the settings, not the fitted trees, so nothing is unpickled::

    header       JSON string: {"format": "tomopick-learned-picker",
                  "version": 1, "diameter_A", "working_voxel_size_A",
                  "scales", "feature_names", "classifier": {...},
                  "seed", "n_examples": {...}}
    features     (N, F) float32   feature vectors of the training voxels
    labels       (N,) int8        1 particle, 0 not
    groups       (N,) int8        0 background, 1 positive, 2 negative, 3 shell

Loading refits the classifier on the stored examples with the stored settings
(deterministic, about a second); retraining appends new examples and refits.
"""
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from threadpoolctl import threadpool_limits

from ..atomic import save_npz
from .features import (SCALE_FRACTIONS, WORKING_DIAMETER, feature_names, features_at,
                       working_volume)

FORMAT = "tomopick-learned-picker"
FORMAT_VERSION = 1
POSITIVE_RADIUS = 0.2       # diameters around a positive pick labelled particle
NEGATIVE_RADIUS = 0.3       # diameters around a negative pick labelled not-particle
SHELL_RADII = (0.4, 0.55)   # diameters: the rim around a positive labelled not-centre
BACKGROUND_EXCLUSION = 0.6  # background voxels lie farther than this from positives
BACKGROUND_PER_POSITIVE = 8  # background voxels drawn per positive voxel
BACKGROUND, POSITIVE, NEGATIVE, SHELL = 0, 1, 2, 3
#: shares of the total sample weight of each group (renormalised over those present)
GROUP_WEIGHTS = {POSITIVE: 0.5, SHELL: 0.15, NEGATIVE: 0.15, BACKGROUND: 0.2}
CLASSIFIERS = ("rf", "hgb")


class ModelFileError(ValueError):
    """A model file that is missing, unreadable or from an incompatible version."""


def _make_classifier(name="rf", seed=0, n_threads=2):
    """The scikit-learn classifier of learned picking, with fixed hyper-parameters.

    Parameters
    ----------
    name : {'rf', 'hgb'}
        'rf': RandomForestClassifier (the default); 'hgb':
        HistGradientBoostingClassifier (kept for the benchmark's comparison).
    seed : int
    n_threads : int
        Threads of the random forest (gradient boosting uses OpenMP's).
    """
    if name == "hgb":
        # no early stopping: it would hold out a random validation split
        return HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
            l2_regularization=1.0, early_stopping=False, random_state=seed)
    if name == "rf":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=3, max_features="sqrt",
                                      n_jobs=n_threads, random_state=seed)
    raise ValueError(f"unknown classifier {name!r}; use one of {CLASSIFIERS}")


def _ball(radius):
    """Integer offsets (dz, dy, dx) within ``radius`` voxels (at least the centre)."""
    r = int(np.floor(radius))
    grid = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1].reshape(3, -1).T
    return grid[(grid ** 2).sum(axis=1) <= max(radius, 0) ** 2]


def _voxels_near(centres_xyz, radius, shape):
    """Unique in-volume [z, y, x] voxels within ``radius`` of (x, y, z) centres."""
    if len(centres_xyz) == 0:
        return np.zeros((0, 3), int)
    centres = np.rint(np.asarray(centres_xyz, float)[:, ::-1]).astype(int)
    voxels = (centres[:, None, :] + _ball(radius)[None]).reshape(-1, 3)
    inside = np.all((voxels >= 0) & (voxels < np.array(shape)), axis=1)
    return np.unique(voxels[inside], axis=0)


def _training_voxels(shape, positives, negatives, diameter, rng, background=True):
    """Working-grid voxels to train on, with their group.

    Parameters
    ----------
    shape : (mz, my, mx)
        Working-grid shape.
    positives, negatives : (P, 3), (Q, 3) arrays
        Picks, (x, y, z) working voxels.
    diameter : float
        Particle diameter, working voxels.
    rng : numpy.random.Generator
    background : bool
        Draw background voxels (False when the positives are corrections,
        not every particle of the tomogram: unpicked particles would be
        drawn as background).

    Returns
    -------
    zyx : (N, 3) ndarray of int
    groups : (N,) ndarray of int8
        `POSITIVE`, `NEGATIVE`, `SHELL` or `BACKGROUND`.
    """
    pos = _voxels_near(positives, POSITIVE_RADIUS * diameter, shape)
    shell = _voxels_near(positives, SHELL_RADII[1] * diameter, shape)
    if len(shell):
        distance, _ = cKDTree(np.asarray(positives, float)).query(shell[:, ::-1])
        shell = shell[distance > SHELL_RADII[0] * diameter]
    neg = _voxels_near(negatives, NEGATIVE_RADIUS * diameter, shape)
    if len(pos) and len(neg):
        # a voxel claimed by both (overlapping picks) is left out of both
        both = {tuple(v) for v in pos} & {tuple(v) for v in neg}
        if both:
            keep = lambda v: np.array([tuple(x) not in both for x in v], bool)  # noqa: E731
            pos, neg = pos[keep(pos)], neg[keep(neg)]
    n_background = BACKGROUND_PER_POSITIVE * max(len(pos), 1) if background else 0
    candidates = np.column_stack([rng.integers(0, n, 3 * n_background) for n in shape])
    if len(positives) and len(candidates):
        distance, _ = cKDTree(np.asarray(positives, float)).query(candidates[:, ::-1])
        candidates = candidates[distance > BACKGROUND_EXCLUSION * diameter]
    drawn = candidates[:n_background]
    zyx = np.concatenate([pos, neg, shell, drawn]).astype(int)
    groups = np.concatenate([np.full(len(pos), POSITIVE), np.full(len(neg), NEGATIVE),
                             np.full(len(shell), SHELL),
                             np.full(len(drawn), BACKGROUND)]).astype(np.int8)
    return zyx, groups


@dataclass
class TrainingSet:
    """Feature vectors of training voxels, their labels and groups."""
    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    @staticmethod
    def empty(n_features):
        return TrainingSet(np.zeros((0, n_features), np.float32), np.zeros(0, np.int8),
                           np.zeros(0, np.int8))

    def __len__(self):
        return len(self.labels)

    def extended(self, other):
        return TrainingSet(np.concatenate([self.features, other.features]),
                           np.concatenate([self.labels, other.labels]),
                           np.concatenate([self.groups, other.groups]))

    def weights(self):
        """Sample weights giving each group its `GROUP_WEIGHTS` share."""
        weights = np.zeros(len(self), np.float64)
        present = {g: share for g, share in GROUP_WEIGHTS.items() if np.any(self.groups == g)}
        total = sum(present.values())
        for group, share in present.items():
            rows = self.groups == group
            weights[rows] = share / total / rows.sum()
        return weights * len(self)


@dataclass
class LearnedPicker:
    """A trained voxel classifier and the settings its features were computed with.

    Build one with `LearnedPicker.create`, add examples with `add_examples`
    (tomogram by tomogram), `fit`, then `tomopick.core.learned.detect.pick`.

    Attributes
    ----------
    diameter : float
        Particle diameter, Å.
    working_voxel_size : float
        Å per voxel of the working grid (the particle spans
        `WORKING_DIAMETER` voxels there).
    scales : tuple of float
        Filter scales, working voxels.
    classifier : str
        One of `CLASSIFIERS`.
    seed : int
    training : TrainingSet
    n_examples : dict
        Counts of positive and negative picks given so far.

    Examples
    --------
    >>> import os, tempfile
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.mgrid[:24, :32, :32]
    >>> volume = rng.normal(0, 0.3, (24, 32, 32)).astype(np.float32)
    >>> balls = [(8, 8, 8), (22, 10, 14), (10, 22, 12), (24, 24, 16)]
    >>> for cx, cy, cz in balls:
    ...     volume += (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= 16
    >>> picker = LearnedPicker.create(diameter=80.0, voxel_size=10.0)
    >>> picker.working_voxel_size, picker.scales, picker.n_features
    (10.0, (1.0, 2.0, 4.0), 30)
    >>> added = picker.add_examples(volume, 10.0, positives=balls[:2])
    >>> added.features.shape[1], int(added.labels.sum()) > 0, picker.n_examples
    (30, True, {'positives': 2, 'negatives': 0})
    >>> features = added.features[added.labels == 1][:1]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     picker.fit().save(os.path.join(d, "picker.npz"))
    ...     again = LearnedPicker.load(os.path.join(d, "picker.npz"))
    >>> bool(np.array_equal(again.predict_proba(features), picker.predict_proba(features)))
    True
    >>> bool(picker.predict_proba(features)[0] > 0.5)
    True
    """
    diameter: float
    working_voxel_size: float
    scales: tuple
    classifier: str = "rf"
    seed: int = 0
    training: TrainingSet = None
    n_examples: dict = field(default_factory=lambda: {"positives": 0, "negatives": 0})
    estimator: object = None
    fit_seconds: float = 0.0

    @staticmethod
    def create(diameter, voxel_size, classifier="rf", seed=0):
        """A new, untrained picker.

        Parameters
        ----------
        diameter : float
            Particle diameter, Å; > 0.
        voxel_size : float
            Å per voxel of the tomograms it will see first; the working grid
            is never finer than this.
        classifier : str
        seed : int

        Examples
        --------
        >>> LearnedPicker.create(240.0, 10.0).working_voxel_size
        20.0
        """
        if not diameter > 0:
            raise ValueError(f"the particle diameter must be positive, got {diameter} Å")
        if not voxel_size > 0:
            raise ValueError(f"the voxel size must be positive, got {voxel_size} Å")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {classifier!r}; use one of {CLASSIFIERS}")
        working = max(float(voxel_size), float(diameter) / WORKING_DIAMETER)
        d = float(diameter) / working
        scales = tuple(round(max(1.0, f * d), 3) for f in SCALE_FRACTIONS)
        picker = LearnedPicker(float(diameter), working, scales, classifier, int(seed))
        picker.training = TrainingSet.empty(picker.n_features)
        return picker

    @property
    def n_features(self):
        return len(feature_names(self.scales))

    @property
    def working_diameter(self):
        """Particle diameter in working voxels."""
        return self.diameter / self.working_voxel_size

    def add_examples(self, volume, voxel_size, positives, negatives=(), background=True,
                     n_threads=2):
        """Add the training voxels of one tomogram.

        Parameters
        ----------
        volume : (nz, ny, nx) array
            The tomogram (memory map welcome).
        voxel_size : float
            Å per voxel of ``volume``.
        positives, negatives : (P, 3), (Q, 3) arrays
            Picks (x, y, z) in voxels of ``volume``, bottom-left origin.
        background : bool
            Also draw background voxels away from the positives: True when
            the positives are all the particles of interest that were picked
            in this tomogram; False for a round of corrections (missed
            particles only), where the others are not known.

        Returns
        -------
        TrainingSet
            The examples added.

        Raises
        ------
        ValueError
            If a pick lies outside the volume.
        """
        from tomopick.core.picks import outside_volume

        positives = np.asarray(positives, float).reshape(-1, 3)
        negatives = np.asarray(negatives, float).reshape(-1, 3)
        size = np.shape(volume)[::-1]
        for name, picks in (("positive", positives), ("negative", negatives)):
            outside = np.nonzero(outside_volume(picks, size))[0]
            if len(outside):
                raise ValueError(f"{name} pick {outside[0]} at {tuple(picks[outside[0]])} lies "
                                 f"outside the {size[0]}x{size[1]}x{size[2]} tomogram")
        work, grid = working_volume(volume, voxel_size, self.working_voxel_size)
        # a seed per call keeps the background draw reproducible tomogram by tomogram
        rng = np.random.default_rng([self.seed, len(self.training)])
        zyx, groups = _training_voxels(work.shape, grid.to_working(positives),
                                       grid.to_working(negatives), self.working_diameter, rng,
                                       background)
        added = TrainingSet(features_at(work, zyx, self.scales, n_threads),
                            (groups == POSITIVE).astype(np.int8), groups)
        self.training = self.training.extended(added)
        self.n_examples = {"positives": self.n_examples["positives"] + len(positives),
                           "negatives": self.n_examples["negatives"] + len(negatives)}
        self.estimator = None
        return added

    def fit(self, n_threads=2):
        """Fit the classifier on every example so far (deterministic for the seed).

        Raises
        ------
        ValueError
            If fewer than two positive picks were given, or the examples hold
            no particle voxel or no other voxel.
        """
        if self.n_examples["positives"] < 2:
            raise ValueError("learned picking needs at least 2 positive examples, got "
                             f"{self.n_examples['positives']}")
        labels = self.training.labels
        if not np.any(labels == 1) or not np.any(labels == 0):
            raise ValueError("training needs particle voxels and non-particle voxels; got "
                             f"{int(np.sum(labels == 1))} and {int(np.sum(labels == 0))}")
        start = time.perf_counter()
        estimator = _make_classifier(self.classifier, self.seed, n_threads)
        # gradient boosting's OpenMP threads spin-wait for each other on a busy machine
        # (measured 20x slower with 2 than with 1); the forest uses its own n_jobs threads
        with threadpool_limits(1):
            estimator.fit(self.training.features, labels,
                          sample_weight=self.training.weights())
        self.estimator = estimator
        self.fit_seconds = time.perf_counter() - start
        return self

    def predict_proba(self, features):
        """Particle probability of (N, F) feature rows, float32."""
        if self.estimator is None:
            raise ValueError("the picker is not trained yet (call fit)")
        return self.estimator.predict_proba(features)[:, 1].astype(np.float32)

    # ------------------------------------------------------------ persistence
    def header(self):
        return {"format": FORMAT, "version": FORMAT_VERSION, "diameter_A": self.diameter,
                "working_voxel_size_A": self.working_voxel_size, "scales": list(self.scales),
                "feature_names": feature_names(self.scales),
                "classifier": {"name": self.classifier,
                               "params": {k: v for k, v in _make_classifier(
                                   self.classifier, self.seed).get_params().items()
                                   if isinstance(v, (int, float, str, bool, type(None)))}},
                "seed": self.seed, "n_examples": dict(self.n_examples),
                "group_weights": {str(k): v for k, v in GROUP_WEIGHTS.items()}}

    def save(self, path):
        """Write the picker to ``path`` (.npz, see the module doc), atomically."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_npz(path, compressed=True, header=np.array(json.dumps(self.header())),
                 features=self.training.features, labels=self.training.labels,
                 groups=self.training.groups)

    @staticmethod
    def load(path, fit=True, n_threads=2):
        """Read a picker written by `save` and refit it on its examples.

        Raises
        ------
        ModelFileError
            Naming the file when it is missing, unreadable, not a learned
            picker or from another format version.
        """
        if not os.path.isfile(path):
            raise ModelFileError(f"learned picking model not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {k: data[k] for k in ("features", "labels", "groups")}
        except (OSError, ValueError, KeyError) as err:
            raise ModelFileError(f"{path}: not a readable learned picking model ({err})") from None
        if header.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not a learned picking model "
                                 f"(format {header.get('format')!r})")
        if header.get("version") != FORMAT_VERSION:
            raise ModelFileError(f"{path}: model format version {header.get('version')!r}, this "
                                 f"tomopick reads version {FORMAT_VERSION}; train it again")
        scales = tuple(header["scales"])
        if (header.get("feature_names") != feature_names(scales)
                or arrays["features"].shape[1:] != (len(feature_names(scales)),)):
            raise ModelFileError(f"{path}: its features ({len(header.get('feature_names', []))}) "
                                 "are not those this tomopick computes; train it again")
        picker = LearnedPicker(header["diameter_A"], header["working_voxel_size_A"], scales,
                               header["classifier"]["name"], header["seed"],
                               TrainingSet(arrays["features"].astype(np.float32),
                                           arrays["labels"].astype(np.int8),
                                           arrays["groups"].astype(np.int8)),
                               dict(header["n_examples"]))
        if fit:
            picker.fit(n_threads)
        return picker
