"""A first 3D model from subtomograms, without (or with) a starting reference.

The method follows EMAN2's ``e2spt_sgd`` ("tomo initial model") and adds
validation:

1. **Restarts** (without a reference): each starts from the average of a
   random batch of particles given random orientations (a blob with the
   particles' size and power), then visits the particles in random batches;
   every batch is aligned to the current model (`Aligner`: global search over
   a uniform rotation set on ``shrink``-downsampled boxes, FFT shifts, local
   refinement of the best poses) and averaged in Fourier space with its wedges
   (`FourierAverage`), and the model moves towards that batch average by a
   stochastic-gradient step (learning rate ``1 / t``, floored at
   ``batch_size / N``, so the first batches build the model and later ones
   refine it). The model is low-passed, masked by a soft sphere of the particle
   diameter and centred on its centre of mass after every step.
2. **Consistency**: every restart's model is aligned to every other; a
   restart's consistency is its mean score against the others (1 = identical
   up to a rotation and shift). The most consistent one is kept, so a single
   run stuck in a wrong local optimum does not become the answer.
3. **Symmetry** (not c1): without a reference the symmetry axes are searched:
   the frame ``Q`` that maximises the correlation of the model with its copies
   turned by the group's rotations (``Q S Q^T``), over a uniform rotation set
   reduced to the group's asymmetric unit, then refined locally. The model is
   turned into that frame (n-fold axis along z, two-fold along x: see
   `tomopick.core.rotations.symmetry_matrices`) and the symmetry imposed from
   then on. A given reference is taken to be in that frame already.
4. **Half sets**: the particles are split into two random halves refined
   independently from the kept model low-passed to ``lowpass`` (nothing beyond
   it is shared); their maps give the FSC and the resolution at 0.143. The
   final poses are refined on the full-size boxes (when shrunk), the maps are
   built at full size and the output is their joint average.

Poses follow core's convention: ``aligned(r) = box(R r + t)`` (see
`tomopick.core.alignment`), shifts in voxels of the input boxes. Everything is
deterministic for a given ``seed``.
"""
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from tomopick.core.alignment import align_box
from tomopick.core.averaging.align import Aligner
from tomopick.core.averaging.average import (FourierAverage, centre_of_mass_offset,
                                             low_pass)
from tomopick.core.averaging.fsc import HALF_MAP_THRESHOLD, fsc, resolution
from tomopick.core.fourier import (bandpass, fourier_pad_to, randomize_phases, soft_sphere,
                                   wedge_mask)
from tomopick.core.resample import fourier_crop_to
from tomopick.core.rotations import (homogeneous, local_rotations, rotation_angle,
                                     symmetry_matrices, uniform_rotations)


@dataclass
class Progress:
    """One step of `initial_model`, for a progress callback.

    Attributes
    ----------
    stage : str
        'restart k', 'consistency', 'symmetry', 'half-sets' or 'final'.
    iteration, total : int
        Iteration of that stage (1-based) and how many it has.
    score : float
        Mean alignment score of the particles in that iteration (NaN when none).
    message : str
        A line for a log.
    elapsed : float
        Seconds since `initial_model` started.
    """
    stage: str
    iteration: int
    total: int
    score: float
    message: str = ""
    elapsed: float = 0.0

    def __str__(self):
        text = f"[{self.elapsed:7.1f} s] {self.stage}: iteration {self.iteration}/{self.total}"
        if np.isfinite(self.score):
            text += f", mean score {self.score:.3f}"
        return text + (f" ({self.message})" if self.message else "")


@dataclass
class InitialModel:
    """What `initial_model` found.

    Attributes
    ----------
    average : (n, n, n) ndarray of float32
        The model at the input voxel size: both half sets, symmetry imposed,
        low-passed to ``lowpass``, masked by a soft sphere; density positive.
    unfiltered : (n, n, n) ndarray of float32
        The same before the low-pass and the mask.
    half_maps : (2, n, n, n) ndarray of float32
        The independent half-set maps (unfiltered).
    matrices : (N, 4, 4) ndarray
        Pose of every particle (core convention), shifts in input voxels.
    scores : (N,) ndarray
        Final alignment score of every particle.
    half : (N,) ndarray of int
        Half set (0 or 1) of every particle.
    frequency, fsc : ndarrays
        The half-map FSC (frequency in 1/Å).
    resolution : float
        Å where the FSC falls below 0.143.
    consistency : (K,) ndarray
        Consistency of each restart (NaN with a single one).
    chosen_restart : int
    symmetry_frame : (3, 3) ndarray
        ``Q``: the symmetry axes found, in the frame of the kept restart
        (identity for c1 or with a reference).
    voxel_size : float
    """
    average: np.ndarray
    unfiltered: np.ndarray
    half_maps: np.ndarray
    matrices: np.ndarray
    scores: np.ndarray
    half: np.ndarray
    frequency: np.ndarray
    fsc: np.ndarray
    resolution: float
    consistency: np.ndarray
    chosen_restart: int
    symmetry_frame: np.ndarray
    voxel_size: float
    history: list = field(default_factory=list)


class _Scale:
    """The particles at one box size: boxes, wedges, band, mask."""

    def __init__(self, boxes, voxel_size, tilt_ranges, wedge_ids, diameter, lowpass,
                 max_shift, workers):
        self.n = n = boxes.shape[-1]
        self.voxel_size = voxel_size
        shape = (n, n, n)
        self.wedges = np.stack([np.ones((n, n, n // 2 + 1), np.float32) if tr is None else
                                np.broadcast_to(wedge_mask(shape, tr),
                                                (n, n, n // 2 + 1)).astype(np.float32)
                                for tr in tilt_ranges])
        self.wedge_ids = wedge_ids
        # frequencies up to the target resolution (never past 0.9 Nyquist); larger
        # than twice the particle only centre it
        self.lowpass = max(lowpass, 2.2 * voxel_size)
        self.band = bandpass(shape, voxel_size, lowpass=self.lowpass, highpass=2 * diameter)
        radius = diameter / 2 / voxel_size
        self.mask = soft_sphere(shape, radius + 1, edge=max(2.0, 0.1 * n))
        self.aligner = Aligner(boxes, self.wedges, wedge_ids, self.band, max_shift, workers)
        self.boxes = boxes
        self.workers = workers

    def average(self, particles, matrices):
        acc = FourierAverage(self.n)
        acc.add(self.boxes[particles], matrices, self.wedges, self.wedge_ids[particles],
                self.workers)
        return acc

    def reference(self, volume):
        """A map as a reference: low-passed, masked, unit variance."""
        ref = low_pass(volume, self.voxel_size, self.lowpass) * self.mask
        ref -= ref[self.mask > 0.5].mean()
        ref *= self.mask
        std = ref.std()
        return ref / std if std > 0 else ref


def initial_model(boxes, voxel_size, particle_diameter, tilt_ranges=None, wedge_ids=None,
                  symmetry="c1", reference=None, angular_step=30.0, iterations=5,
                  batch_size=12, lowpass=40.0, shrink=2.0, seed=0, restarts=3,
                  half_iterations=3, candidates=2, max_shift=None, workers=None,
                  callback=None):
    """Build a 3D model of a particle from its subtomograms.

    Parameters
    ----------
    boxes : (N, n, n, n) array
        Subtomograms of one cubic size, density positive (bright), roughly
        centred; normalised here (zero mean, unit variance each).
    voxel_size : float
        Å per voxel of the boxes.
    particle_diameter : float
        Å; the soft spherical mask of the model.
    tilt_ranges : list of (float, float) or None, optional
        The distinct missing wedges (min, max tilt in degrees, tilt axis y,
        beam z; see `tomopick.core.fourier.wedge_mask`); None or an entry None:
        complete Fourier sampling.
    wedge_ids : (N,) array of int, optional
        Which of ``tilt_ranges`` each box has; all 0 when omitted.
    symmetry : str, optional
        Point group: c1, cN, dN, t, o, i.
    reference : (n, n, n) array, optional
        Starting model on the boxes' grid, in the symmetry's canonical frame.
        Its phases beyond ``lowpass`` are randomised and it is low-passed, so it
        cannot impose its own fine detail; no restarts are run.
    angular_step : float, optional
        Degrees between rotations of the global search.
    iterations : int, optional
        Passes over all particles in each restart.
    batch_size : int, optional
        Particles per stochastic-gradient step (at most N).
    lowpass : float, optional
        Å: the resolution the alignment uses and the model is filtered to.
    shrink : float, optional
        Box downsampling (Fourier cropping) for the searches; 1 = none. Limited
        so that the search boxes still hold ``lowpass`` (1.1 x their Nyquist).
    seed : int, optional
    restarts : int, optional
        Independent reference-free runs compared for consistency.
    half_iterations : int, optional
        Refinement iterations of the two half sets.
    candidates : int, optional
        Best rotations of the global search refined locally, per particle.
    max_shift : float, optional
        Largest shift searched, input voxels; default a quarter of the box edge.
    workers : int, optional
        FFT threads (scipy.fft); all cores when None.
    callback : callable, optional
        Called with a `Progress` after every iteration of every stage.

    Returns
    -------
    InitialModel

    Raises
    ------
    ValueError
        Boxes not cubic, fewer than ``batch_size`` or than 4 particles, a
        symmetry that does not parse, a reference of another size, a shrink
        below 1, or non-positive sizes (each message names the value).

    Examples
    --------
    >>> from tomopick.core.alignment import align_box
    >>> from tomopick.core.rotations import angular_distance, homogeneous
    >>> from tomopick.core.simulate import random_rotations
    >>> z, y, x = np.mgrid[:16, :16, :16] - 8            # an asymmetric particle of 4 blobs
    >>> truth = sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    ...             for cx, cy, cz, s in [(0, 0, 0, 2.5), (4, 0, 0, 1.5), (0, 3, 0, 1.2),
    ...                                   (0, 0, -4, 1.0)]).astype(np.float32)
    >>> rng = np.random.default_rng(0)
    >>> poses = random_rotations(12, rng)              # box_i(R_i r) = truth(r)
    >>> boxes = np.stack([align_box(truth, homogeneous(R.T), "cubic") for R in poses])
    >>> boxes += rng.normal(0, 0.05, boxes.shape).astype(np.float32)
    >>> model = initial_model(boxes, 10.0, 140.0, reference=truth, angular_step=30.0,
    ...                       iterations=1, batch_size=4, shrink=1.0, half_iterations=1,
    ...                       workers=1)
    >>> model.average.shape, model.matrices.shape
    ((16, 16, 16), (12, 4, 4))
    >>> errors = angular_distance(model.matrices[:, :3, :3], poses)   # degrees
    >>> bool(errors.max() < 10)
    True
    """
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim != 4 or len(set(boxes.shape[1:])) != 1:
        raise ValueError(f"the subtomograms must be cubic boxes (N, n, n, n), got shape "
                         f"{boxes.shape}")
    count, n = len(boxes), boxes.shape[-1]
    if count < 4:
        raise ValueError(f"an initial model needs at least 4 subtomograms, got {count}")
    if not 1 <= batch_size <= count:
        raise ValueError(f"the batch size {batch_size} must be between 1 and the number of "
                         f"subtomograms ({count})")
    if voxel_size <= 0 or particle_diameter <= 0 or lowpass <= 0 or angular_step <= 0:
        raise ValueError(f"voxel size {voxel_size}, particle diameter {particle_diameter}, "
                         f"lowpass {lowpass} and angular step {angular_step} must be positive")
    if shrink < 1:
        raise ValueError(f"shrink must be >= 1, got {shrink}")
    group = symmetry_matrices(symmetry)          # raises on a bad string
    if reference is not None and np.shape(reference) != (n, n, n):
        raise ValueError(f"the reference has shape {np.shape(reference)}, the subtomograms "
                         f"({n}, {n}, {n})")
    tilt_ranges = [None] if tilt_ranges is None else list(tilt_ranges)
    wedge_ids = (np.zeros(count, int) if wedge_ids is None else np.asarray(wedge_ids, int))
    report = callback or (lambda progress: None)
    history = []

    started = time.perf_counter()

    def tell(progress):
        progress.elapsed = time.perf_counter() - started
        history.append(progress)
        report(progress)

    # zero mean, unit variance: every particle weighs the same in the averages
    boxes = boxes - boxes.mean(axis=(1, 2, 3), keepdims=True)
    boxes /= np.maximum(boxes.std(axis=(1, 2, 3), keepdims=True), 1e-12)
    m = max(8, int(round(n / shrink / 2)) * 2)  # even: the box centre stays a voxel
    # never so small that the search cannot reach the low-pass (Nyquist / 1.1): a
    # search at a coarser resolution lets particles settle on pseudo-symmetric mates
    needed = int(np.ceil(2.2 * n * voxel_size / lowpass / 2)) * 2
    m = min(max(m, needed), n)
    factor = n / m                                # input voxels per search voxel
    max_shift = n / 4 if max_shift is None else float(max_shift)
    small_boxes = boxes if m == n else fourier_crop_to(boxes, (m, m, m), axes=(1, 2, 3))
    small = _Scale(small_boxes, voxel_size * factor, tilt_ranges, wedge_ids,
                   particle_diameter, lowpass, max_shift / factor, workers)
    rng = np.random.default_rng(seed)
    tell(Progress("start", 1, 1, np.nan,
                  f"{count} subtomograms of {n}^3; searches on {m}^3 boxes "
                  f"({voxel_size * factor:.2f} Å/voxel)"))

    # --- 1. restarts (or the given reference) ------------------------------------
    if reference is not None:
        start = np.asarray(reference, np.float32)
        start = randomize_phases(start, voxel_size, beyond=lowpass, seed=seed)
        start = fourier_crop_to(start, (m, m, m)) if m != n else start
        models = [small.reference(start)]
        poses = [None]
        consistency = np.array([np.nan])
        search_symmetry = symmetry
    else:
        models, poses = [], []
        for k in range(restarts):
            model, matrices = _restart(small, k, restarts, iterations, batch_size, angular_step,
                                       candidates, np.random.default_rng([seed, k]), tell)
            models.append(model)
            poses.append(matrices)
        consistency = _consistency(small, models, angular_step, candidates, tell)
        search_symmetry = "c1"
    chosen = int(np.nanargmax(consistency)) if np.isfinite(consistency).any() else 0
    model, matrices = models[chosen], poses[chosen]

    # --- 2. symmetry axes --------------------------------------------------------
    frame = np.eye(3)
    if len(group) > 1 and reference is None:
        # searched on the full-size average of every particle at its restart pose: the
        # search-size model is limited to its coarser Nyquist
        poses_full = matrices.copy()
        poses_full[:, :3, 3] *= factor
        acc = FourierAverage(n)
        full_wedges = np.stack([np.ones((n, n, n // 2 + 1), np.float32) if tr is None else
                                np.broadcast_to(wedge_mask((n,) * 3, tr),
                                                (n, n, n // 2 + 1)).astype(np.float32)
                                for tr in tilt_ranges])
        acc.add(boxes, poses_full, full_wedges, wedge_ids, workers)
        full_mask = soft_sphere((n,) * 3, particle_diameter / 2 / voxel_size + 1,
                                edge=max(2.0, 0.1 * n))
        c1_map = low_pass(acc.result()[0], voxel_size, lowpass)
        frame = find_symmetry_frame(c1_map, symmetry, mask=full_mask)
        model = small.reference(align_box(model, homogeneous(frame)))
        # aligned(r) = box(R r + t) = model(r) in the old frame: compose with the turn
        matrices = matrices @ homogeneous(frame)
        tell(Progress("symmetry", 1, 1, np.nan,
                      f"{symmetry} axes found: n-fold axis along "
                      f"({', '.join(f'{v:+.3f}' for v in frame[:, 2])}) of the model"))
    if len(group) > 1:
        model = small.reference(_symmetrise(model, group))
        search_symmetry = symmetry

    # --- 3. half sets ------------------------------------------------------------
    rotations = uniform_rotations(angular_step, search_symmetry)
    half = np.zeros(count, int)
    half[rng.permutation(count)[count // 2:]] = 1
    matrices = np.empty((count, 4, 4)) if matrices is None else matrices.copy()
    scores = np.zeros(count)
    half_refs = [small.reference(low_pass(model, small.voxel_size, lowpass))] * 2
    for it in range(half_iterations):
        for h in (0, 1):
            members = np.flatnonzero(half == h)
            small.aligner.set_reference(half_refs[h])
            found, found_scores = _align(small.aligner, members, rotations, angular_step,
                                         candidates)
            matrices[members], scores[members] = found, found_scores
            acc = small.average(members, found)
            half_refs[h] = small.reference(acc.result(group)[0])
        tell(Progress("half-sets", it + 1, half_iterations, float(scores.mean())))
    # the halves may settle in frames a pseudo-symmetry apart (e.g. turned by 180 deg at
    # low resolution): bring the second onto the first before the FSC and the sum
    turn = _relative_pose(small, half_refs[1], half_refs[0], rotations, angular_step,
                          candidates)
    members = np.flatnonzero(half == 1)
    matrices[members] = matrices[members] @ turn
    half_refs[1] = small.reference(align_box(half_refs[1], turn))
    tell(Progress("half-sets", half_iterations, half_iterations, float(scores.mean()),
                  f"half 2 turned by {float(rotation_angle(turn)):.1f} deg onto half 1"))

    # --- 4. full size: local refinement, centring, maps ----------------------------
    full_matrices = matrices.copy()
    full_matrices[:, :3, 3] *= factor
    if m != n:
        full = _Scale(boxes, voxel_size, tilt_ranges, wedge_ids, particle_diameter, lowpass,
                      max_shift, workers)
        references = [full.reference(acc) for acc in
                      _half_maps(full, half, full_matrices, group)]
        turn = _relative_pose(full, references[1], references[0], rotations, angular_step,
                              candidates)
        members = np.flatnonzero(half == 1)
        full_matrices[members] = full_matrices[members] @ turn
        references[1] = full.reference(align_box(references[1], turn))
        moved = 0
        for h in (0, 1):
            members = np.flatnonzero(half == h)
            full.aligner.set_reference(references[h])
            # the coarse search again, now with the full-size frequencies: a particle
            # that settled on a pseudo-symmetric mate at the search size moves back
            coarse, _ = full.aligner.score_rotations(rotations, members)

            def final(row):
                i = members[row]
                current = full_matrices[i, :3, :3]
                here, _ = full.aligner.score_poses(i, current[None], subvoxel=False)
                best = int(np.argmax(coarse[row]))
                if coarse[row, best] > here[0]:
                    return full.aligner.refine(i, rotations[best][None], angular_step / 2,
                                               rounds=2) + (True,)
                return full.aligner.refine(i, current[None], angular_step / 4,
                                           rounds=1) + (False,)

            for i, (rotation, shift, score, jumped) in zip(
                    members, full.aligner.map(final, range(len(members)))):
                full_matrices[i] = homogeneous(rotation, shift)
                scores[i] = score
                moved += jumped
        tell(Progress("final", 1, 1, float(scores.mean()),
                      f"poses refined on {n}^3 boxes; {moved} moved to another coarse pose"))
    else:
        full = small
    maps = _half_maps(full, half, full_matrices, group)
    offset = centre_of_mass_offset((maps[0] + maps[1]) * full.mask)
    # centred(r) = map(r + c): every pose moves by the same shift
    full_matrices = full_matrices @ homogeneous(shift=offset)
    maps = _half_maps(full, half, full_matrices, group)
    frequency, curve = fsc(maps[0], maps[1], voxel_size, mask=full.mask)
    res = resolution(frequency, curve, HALF_MAP_THRESHOLD)
    unfiltered = 0.5 * (maps[0] + maps[1])
    average = low_pass(unfiltered, voxel_size, lowpass) * full.mask
    tell(Progress("final", 1, 1, float(scores.mean()),
                  f"FSC 0.143 resolution {res:.1f} Å"))
    return InitialModel(average=average.astype(np.float32), unfiltered=unfiltered,
                        half_maps=np.stack(maps), matrices=full_matrices, scores=scores,
                        half=half, frequency=frequency, fsc=curve, resolution=res,
                        consistency=consistency, chosen_restart=chosen,
                        symmetry_frame=frame, voxel_size=float(voxel_size), history=history)


def _align(aligner, members, rotations, step, candidates):
    """Global search then local refinement of some particles: (matrices, scores)."""
    scores, shifts = aligner.score_rotations(rotations, members)
    best = np.argsort(-scores, axis=1)[:, :candidates]
    refined = aligner.map(lambda row: aligner.refine(members[row], rotations[best[row]], step,
                                                     rounds=2), range(len(members)))
    matrices = np.array([homogeneous(rotation, shift) for rotation, shift, _ in refined])
    return matrices, np.array([score for _, _, score in refined])


def _relative_pose(scale, moving, fixed, rotations, step, candidates):
    """Pose M of one map against another: moving(M r) ~ fixed(r) (search-size voxels)."""
    n = scale.n
    aligner = Aligner(moving[None], np.ones((1, n, n, n // 2 + 1), np.float32), [0],
                      scale.band, n / 4, scale.workers)
    aligner.set_reference(fixed)
    matrices, _ = _align(aligner, np.array([0]), rotations, step, candidates)
    return matrices[0]


def _restart(small, k, restarts, iterations, batch_size, step, candidates, rng, tell):
    """One reference-free stochastic-gradient run: (model, poses)."""
    count = len(small.boxes)
    rotations = uniform_rotations(step)
    # the start: a random batch in random orientations
    batch = rng.choice(count, batch_size, replace=False)
    start = homogeneous(Rotation.random(batch_size, random_state=rng).as_matrix())
    model, coverage = small.average(batch, start).result()
    model = small.reference(model)
    coverage = np.minimum(coverage, 1.0)
    matrices = np.tile(np.eye(4), (count, 1, 1))
    floor = batch_size / count
    steps = 0
    for it in range(iterations):
        order = rng.permutation(count)
        batch_scores = []
        for batch in np.array_split(order, max(1, count // batch_size)):
            small.aligner.set_reference(model, coverage)
            found, scores = _align(small.aligner, batch, rotations, step, candidates)
            matrices[batch] = found
            batch_scores.append(scores)
            update, update_coverage = small.average(batch, found).result()
            steps += 1
            rate = max(floor, 1.0 / (steps + 1))
            model = (1 - rate) * model + rate * small.reference(update)
            coverage = (1 - rate) * coverage + rate * np.minimum(update_coverage, 1.0)
            model, matrices = _centred(small, model, matrices)
        tell(Progress(f"restart {k + 1}/{restarts}", it + 1, iterations,
                      float(np.concatenate(batch_scores).mean())))
    return model, matrices


def _centred(scale, model, matrices):
    """The model moved to its centre of mass, and the poses that follow it."""
    offset = centre_of_mass_offset(model * scale.mask)
    if np.linalg.norm(offset) < 0.5:
        return scale.reference(model), matrices
    shifted = align_box(model, homogeneous(shift=offset))
    return scale.reference(shifted), matrices @ homogeneous(shift=offset)


def _consistency(small, models, step, candidates, tell):
    """Mean alignment score of each model against the others (NaN for one model)."""
    k = len(models)
    if k < 2:
        return np.full(k, np.nan)
    n = small.n
    full = np.ones((1, n, n, n // 2 + 1), np.float32)
    rotations = uniform_rotations(step)
    pair = np.full((k, k), np.nan)
    for i in range(k):
        aligner = Aligner(np.stack(models), full, np.zeros(k, int), small.band, n / 4,
                          small.workers)
        aligner.set_reference(models[i])
        others = np.array([j for j in range(k) if j > i])
        if not len(others):
            continue
        _, scores = _align(aligner, others, rotations, step, candidates)
        pair[i, others] = pair[others, i] = scores
    consistency = np.nanmean(pair, axis=1)
    tell(Progress("consistency", 1, 1, float(consistency.mean()),
                  "restart consistency " + ", ".join(f"{c:.3f}" for c in consistency)))
    return consistency


def _symmetrise(volume, group):
    """Mean of a map over the rotations of a point group (about the box centre)."""
    return sum(align_box(volume, homogeneous(S)) for S in group) / len(group)


def find_symmetry_frame(model, symmetry, step=None, mask=None, workers=None):
    """The orientation of a point group's axes in a map.

    Parameters
    ----------
    model : (n, n, n) array
        A map of a symmetric particle, centred (e.g. on its centre of mass).
    symmetry : str
        c1, cN, dN, t, o or i.
    step : float, optional
        Degrees of the coarse search; default 8 for cyclic and dihedral
        groups, 12 for the others.
    mask : (n, n, n) array, optional
        Real-space mask for the correlations.
    workers : int, optional
        Unused (kept for signature symmetry with the searches).

    Returns
    -------
    Q : (3, 3) ndarray
        ``Q @ (0, 0, 1)`` is the group's z-axis (the n-fold axis of cN / dN)
        in the map, ``Q @ (1, 0, 0)`` its x-axis (the two-fold of dN):
        ``align_box(model, homogeneous(Q))`` has the axes of
        `tomopick.core.rotations.symmetry_matrices`.

    Examples
    --------
    >>> from tomopick.core.fourier import soft_sphere
    >>> v = soft_sphere((16, 16, 16), 3, center=(8, 8, 11)) + soft_sphere((16, 16, 16), 3, center=(8, 8, 5))
    >>> axis = find_symmetry_frame(v, "c6")[:, 2]      # a dumbbell along z
    >>> bool(abs(axis[2]) > 0.99)
    True
    """
    group = symmetry_matrices(symmetry)
    if len(group) == 1:
        return np.eye(3)
    model = np.asarray(model, np.float32)
    if mask is not None:
        model = model * mask
    step = step or (12.0 if symmetry.strip().lower() in ("t", "o", "i") else 8.0)
    n = model.shape[0]
    # the coarse search needs only the particle's outline: on at most 16^3 voxels
    coarse = model if n <= 16 else fourier_crop_to(model, (16, 16, 16))
    # one frame per symmetry class (Q and Q S describe the same axes)
    frames = uniform_rotations(step, symmetry)
    scores = np.array([_symmetry_score(coarse, Q, group) for Q in frames])
    best = frames[int(np.argmax(scores))]
    best_score = _symmetry_score(model, best, group)
    radius = step
    for _ in range(3):
        for Q in local_rotations(best, radius, radius / 2)[1:]:
            s = _symmetry_score(model, Q, group)
            if s > best_score:
                best, best_score = Q, s
        radius /= 2
    return best


def _symmetry_score(model, frame, group):
    """Mean correlation of a map with its copies turned by a group placed in a frame."""
    centred = model - model.mean()
    norm = float((centred * centred).sum())
    turned = [align_box(centred, homogeneous(frame @ S @ frame.T)) for S in group[1:]]
    return float(np.mean([(centred * t).sum() for t in turned]) / norm)


def _half_maps(scale, half, matrices, group):
    """The two half-set maps at one scale (symmetry imposed), unfiltered."""
    maps = []
    for h in (0, 1):
        members = np.flatnonzero(half == h)
        maps.append(scale.average(members, matrices[members]).result(group)[0])
    return maps


def _upsample(volume, n):
    """A search-size map on the full grid (Fourier zero-padding)."""
    return volume if volume.shape[0] == n else fourier_pad_to(volume, (n, n, n))
