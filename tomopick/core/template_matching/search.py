"""Template matching of a tomogram: coarse global search, local refinement, threshold, peaks.

Pipeline (one tile at a time; small tomograms are one tile):

1. High-contrast objects (gold beads) are found by `peaks.high_contrast_mask`,
   replaced by the tile's median and kept out of the search.
2. Coarse global search: the tile and template are Fourier-binned by ``b``
   (so the particle spans ~16 voxels), band-passed (the low-pass at least
   2.2 coarse voxels) and correlated (`correlate.Correlator`, FLCF) with
   every rotation of a uniform set at a coarse step (2.5 Crowther steps
   of the coarse resolution unless given), the template weighted by the
   missing wedge in the tomogram's frame. Optional random-phase correction:
   a phase-randomised template goes through the same rotations and its
   best score per voxel is subtracted.
3. Candidates: non-maximum suppression of the coarse map at a lenient
   threshold (the Gaussian threshold for ``10 x falsePositives``, at least
   20, expected false candidates).
4. Local refinement of every candidate: pattern search over local
   rotation grids with a halving step (twice on the binned data, then at
   full sampling down to half the fine step), each with a search over
   the positions within a few voxels, and a parabolic fit for sub-voxel
   position.
5. Statistical threshold: the refined score in standard deviations of the
   full-resolution score background (FLCF of random rotations over the
   whole tile), against `peaks.gaussian_threshold` for ``falsePositives``
   over the effective tests of the search (`peaks.effective_tests`:
   band-limited voxels x Crowther rotations of the asymmetric unit).
6. Greedy non-maximum suppression at half the particle diameter and
   ``max_picks``.

A naive search (every rotation at the fine step, full sampling) costs
``n_fine / n_coarse x b^3`` times the coarse search; see
benchmarks/bench_template_matching.py.
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage

from ..formats.mrc import release_pages
from ..fourier import bandpass, radial_power_spectrum, randomize_phases, soft_sphere, \
    soft_wedge, wedge_mask, whitening_filter
from ..resample import fourier_crop_to
from ..rotations import (angular_step_for, local_rotations, rotation_count, symmetry_order,
                         uniform_rotations)
from .correlate import (Correlator, condition_templates, local_scores, rotate_templates,
                        _box_points)
from .peaks import (effective_tests, gaussian_threshold, high_contrast_mask, local_maxima,
                    non_maximum_suppression)
from .template import crop_or_pad


@dataclass
class MatchResult:
    """Picks and maps of `match_template`.

    Attributes
    ----------
    positions : (N, 3) float ndarray
        (x, y, z) voxels of the tomogram, sub-voxel.
    rotations : (N, 3, 3) float ndarray
        Core convention: the template voxel at canonical offset r lies at
        ``position + R @ r``; ``R @ (0, 0, 1)`` is the template's z-axis.
    scores : (N,) ndarray
        Refined FLCF in standard deviations of the background.
    cc : (N,) ndarray
        Refined FLCF (1 = perfect match).
    threshold : float
        Score (sigma) a pick had to exceed.
    score_map : (nz, ny, nx) float32 or None
        Best coarse score per voxel (sigma), on the coarse grid repeated to
        full size; 0 where not searched.
    angle_map : (nz, ny, nx) int32 or None
        Index into ``coarse_rotations`` of the best coarse rotation; -1 where
        not searched.
    coarse_rotations : (M, 3, 3) ndarray
    stats : dict
        Counts, steps, timings and rates.
    """
    positions: np.ndarray
    rotations: np.ndarray
    scores: np.ndarray
    cc: np.ndarray
    threshold: float
    score_map: np.ndarray = None
    angle_map: np.ndarray = None
    coarse_rotations: np.ndarray = None
    stats: dict = field(default_factory=dict)


def _parabola_offset(m, c, p):
    denom = m - 2 * c + p
    if not np.isfinite(denom) or denom >= 0:
        return 0.0
    return float(np.clip(0.5 * (m - p) / denom, -0.5, 0.5))


def _cube(R, step):
    """27 rotations: R and its neighbours on a 3x3x3 grid of rotation vectors at ``step``."""
    return local_rotations(R, step * np.sqrt(3) + 1e-6, step)


class _Level:
    """Template, mask and filters at one sampling (full or binned)."""

    def __init__(self, template, mask, voxel, lowpass, highpass, tilt_range, whiten_profile):
        self.template = template
        self.mask = mask
        self.voxel = voxel
        self.lowpass = lowpass
        n = template.shape[0]
        box_filter = bandpass((n,) * 3, voxel, lowpass, highpass)
        if whiten_profile is not None:
            box_filter = box_filter * whitening_filter(*whiten_profile, (n,) * 3)
        if tilt_range is not None:
            box_filter = box_filter * soft_wedge((n,) * 3, tilt_range)
        self.box_filter = box_filter.astype(np.float32)
        # only the voxels the mask can reach (plus the interpolation margin) are rotated
        pts = _box_points(n)
        support = np.sqrt((pts ** 2).sum(0)) <= _mask_radius(mask) + 2
        self.points = pts[:, support]
        self.support = np.flatnonzero(support)

    def conditioned(self, rotations, template=None):
        n = self.template.shape[0]
        vals = rotate_templates(self.template if template is None else template, rotations,
                                order=1, points=self.points)
        rotated = np.zeros((len(vals), n ** 3), np.float32)
        rotated[:, self.support] = vals.reshape(len(vals), -1)
        rotated = rotated.reshape(len(vals), n, n, n)
        return condition_templates(rotated, self.mask, self.box_filter)


def _mask_radius(mask):
    """Largest distance (voxels) of a non-zero mask voxel from the centre element."""
    pts = _box_points(mask.shape[0])
    return float(np.sqrt((pts[:, mask.ravel() > 0] ** 2).sum(0)).max())


def _volume_filter(shape, voxel, lowpass, highpass, whiten_profile):
    f = bandpass(shape, voxel, lowpass, highpass)
    if whiten_profile is not None:
        f *= whitening_filter(*whiten_profile, shape)
    return f


def _allowed_region(shape, border, user_mask, excluded):
    allowed = np.zeros(shape, bool)
    b = [min(border, (s - 1) // 2) for s in shape]
    allowed[b[0]:shape[0] - b[0], b[1]:shape[1] - b[1], b[2]:shape[2] - b[2]] = True
    if user_mask is not None:
        allowed &= user_mask
    if excluded is not None:
        allowed &= ~excluded
    return allowed


def match_template(tomogram, voxel_size, template, mask, diameter, tilt_range=None,
                   lowpass=None, highpass=None, whiten=False, symmetry="c1",
                   angular_sampling=0.0, coarse_step=None, random_phase=False,
                   false_positives=1.0, max_picks=None, search_mask=None, mask_beads=True,
                   bead_sigma=14.0, max_tile_voxels=32_000_000, return_maps=True,
                   progress=None, seed=0, n_threads=None, score_out=None, angle_out=None):
    """Find and orient copies of a template in a tomogram.

    Parameters
    ----------
    tomogram : (nz, ny, nx) array of float (a memory map is fine)
        Particle density with the same polarity as ``template``.
    voxel_size : float
        Å per voxel of the tomogram and the template.
    template, mask : (n, n, n) arrays of float32
        From `template.prepare_template`: centre element ``n // 2``; the mask
        must be spherical (a soft sphere).
    diameter : float
        Particle diameter, Å (binning, rotation steps, peak spacing).
    tilt_range : (float, float) or None
        Tilt range (degrees) of the tomogram's missing wedge; None = no wedge.
    lowpass, highpass : float or None
        Å; lowpass None = 2.5 voxels (near Nyquist).
    whiten : bool
        Whiten both by the tomogram's radial power spectrum.
    symmetry : str
        Point group of the template (rotations over its asymmetric unit).
    angular_sampling : float
        Fine angular step, degrees; 0 = Crowther step ``lowpass / diameter``.
    coarse_step : float, optional
        Step of the global search, degrees.
    random_phase : bool
        Subtract the best score of a phase-randomised template per voxel.
    false_positives : float
        Expected false picks in the whole tomogram.
    max_picks : int, optional
    search_mask : (nz, ny, nx) array of bool, optional
        Search only where True.
    mask_beads : bool
        Exclude high-contrast objects (see `peaks.high_contrast_mask`).
    bead_sigma : float
        Robust sigma that marks a bead.
    max_tile_voxels : int
        Largest tile (voxels, overlap included); bounds the memory at about
        50 bytes per tile voxel (measured: 44 on one 4.2M-voxel tile, 53 on
        1.5M-voxel tiles), 1.6 GB with the default.
    return_maps : bool
        Build the full-size score and angle maps.
    progress : callable, optional
        ``progress(message)`` lines: rotations done, time left.
    seed : int
        Random phases and the background sample.
    n_threads : int, optional
        Threads for the FFTs and the refinement; default all cores.
    score_out, angle_out : (nz, ny, nx) arrays, optional
        Where to write the score and best-rotation maps (e.g. the memory
        maps of `tomopick.core.formats.create_mrc`, so that big tomograms
        never hold them in memory); they are then the result's maps.

    Returns
    -------
    MatchResult

    Raises
    ------
    ValueError
        For inconsistent shapes or parameters (named).

    Examples
    --------
    >>> from tomopick.core.rotations import angular_distance, euler_zxz_to_matrix
    >>> from tomopick.core.simulate import particle_template
    >>> from tomopick.core.template_matching import prepare_template, rotate_templates
    >>> voxel, diameter = 20.0, 260.0
    >>> t, m, _ = prepare_template(particle_template(1, voxel), voxel, voxel, diameter)
    >>> R = euler_zxz_to_matrix(30.0, 50.0, 70.0)
    >>> tomogram = np.zeros((28, 32, 32), np.float32)     # one copy centred at (17, 14, 13)
    >>> tomogram[4:23, 5:24, 8:27] = rotate_templates(t, R[None], order=3)[0]
    >>> result = match_template(tomogram, voxel, t, m, diameter, lowpass=45.0, coarse_step=30.0,
    ...                         mask_beads=False, return_maps=False, n_threads=1)
    >>> np.round(result.positions, 1).tolist(), f"{result.cc[0]:.2f}"
    ([[17.0, 14.0, 13.0]], '1.00')
    >>> bool(angular_distance(result.rotations[0], R) < result.stats["fine_step"] / 2)
    True
    """
    n_threads = int(n_threads or os.cpu_count() or 1)
    with scipy.fft.set_workers(n_threads):
        return _match_template(tomogram, voxel_size, template, mask, diameter, tilt_range,
                               lowpass, highpass, whiten, symmetry, angular_sampling,
                               coarse_step, random_phase, false_positives, max_picks,
                               search_mask, mask_beads, bead_sigma, max_tile_voxels,
                               return_maps, progress, seed, n_threads, score_out,
                               angle_out)


def _match_template(tomogram, voxel_size, template, mask, diameter, tilt_range, lowpass,
                    highpass, whiten, symmetry, angular_sampling, coarse_step, random_phase,
                    false_positives, max_picks, search_mask, mask_beads, bead_sigma,
                    max_tile_voxels, return_maps, progress, seed, n_threads, score_out,
                    angle_out):
    t_start = time.perf_counter()
    if tilt_range is not None:
        wedge_mask((2, 2, 2), tilt_range)          # a named error for a bad range
    tomogram_shape = tuple(int(s) for s in np.shape(tomogram))
    if len(tomogram_shape) != 3:
        raise ValueError(f"the tomogram must be 3D, got shape {tomogram_shape}")
    template = np.asarray(template, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    if template.shape != mask.shape or len(set(template.shape)) != 1:
        raise ValueError(f"template {template.shape} and mask {mask.shape} must be equal cubes")
    if search_mask is not None and tuple(np.shape(search_mask)) != tomogram_shape:
        raise ValueError(f"the search mask has shape {np.shape(search_mask)}, the tomogram "
                         f"{tomogram_shape}")
    if diameter <= 0 or voxel_size <= 0:
        raise ValueError(f"diameter and voxel size must be positive, got {diameter}, {voxel_size}")
    lowpass = float(lowpass) if lowpass else 2.5 * voxel_size
    if lowpass < 2 * voxel_size:
        lowpass = 2 * voxel_size
    order = symmetry_order(symmetry)
    diameter_vox = diameter / voxel_size

    # coarse sampling: the particle over ~16 voxels, the low-pass within its Nyquist
    b = max(1, int(diameter_vox // 16))
    lowpass_c = max(lowpass, 2.2 * b * voxel_size)
    fine_step = float(angular_sampling) if angular_sampling and angular_sampling > 0 \
        else angular_step_for(diameter, lowpass)
    coarse_step = float(coarse_step) if coarse_step else max(
        fine_step, min(30.0, 2.5 * angular_step_for(diameter, lowpass_c)))
    coarse_rotations = uniform_rotations(coarse_step, symmetry)

    # template box: a multiple of b whose quotient is odd (centre maps to centre)
    m_c = int(np.ceil(template.shape[0] / b))
    m_c += 1 - m_c % 2
    n_full = b * m_c
    template = crop_or_pad(template, n_full)
    mask = crop_or_pad(mask, n_full)

    # tiles over (y, x) with an overlap of one template box
    nz, ny, nx = tomogram_shape
    overlap = int(np.ceil(n_full / b)) * b
    side = int(np.sqrt(max_tile_voxels / max(nz, 1)))
    core = max(b * 8, (side - 2 * overlap) // b * b)
    starts_y = list(range(0, ny, core)) if ny > core + 2 * overlap else [0]
    starts_x = list(range(0, nx, core)) if nx > core + 2 * overlap else [0]
    tiles = []
    for y0 in starts_y:
        for x0 in starts_x:
            cy = (y0, ny if len(starts_y) == 1 else min(y0 + core, ny))
            cx = (x0, nx if len(starts_x) == 1 else min(x0 + core, nx))
            tiles.append((cy, cx))

    # search space of the whole tomogram: band-limited voxels x Crowther rotations
    n_search_vox = int(np.count_nonzero(search_mask)) if search_mask is not None \
        else int(np.prod(tomogram_shape))
    n_crowther = max(1, rotation_count(angular_step_for(diameter, lowpass)) // order)
    n_crowther_c = max(1, rotation_count(angular_step_for(diameter, lowpass_c)) // order)
    tests_fine = effective_tests(n_search_vox, voxel_size, lowpass, n_crowther)
    threshold = gaussian_threshold(tests_fine, false_positives)
    tests_c = effective_tests(n_search_vox / b ** 3, voxel_size * b, lowpass_c, n_crowther_c)
    threshold_c = gaussian_threshold(tests_c, max(20.0, 10.0 * false_positives))

    for name, out in (("score", score_out), ("angle", angle_out)):
        if out is not None and tuple(out.shape) != tomogram_shape:
            raise ValueError(f"the {name} map output has shape {tuple(out.shape)}, the tomogram "
                             f"{tomogram_shape}")
    score_map = score_out if score_out is not None else (
        np.zeros(tomogram_shape, np.float32) if return_maps else None)
    angle_map = angle_out if angle_out is not None else (
        np.full(tomogram_shape, -1, np.int32) if return_maps else None)
    all_pos, all_rot, all_cc, all_z = [], [], [], []
    stats = dict(coarse_step=coarse_step, fine_step=fine_step, binning=b, lowpass=lowpass,
                 coarse_lowpass=lowpass_c, n_coarse_rotations=len(coarse_rotations),
                 n_fine_rotations=max(1, rotation_count(fine_step) // order),
                 threshold_sigma=threshold, coarse_candidate_sigma=threshold_c,
                 n_tiles=len(tiles), tiles=[], n_candidates=0, n_beads_voxels=0,
                 coarse_seconds=0.0, refine_seconds=0.0, coarse_voxel_rotations=0.0,
                 n_refine_rotations=0, template_box=n_full)
    rng = np.random.default_rng(seed)
    total_rot = len(coarse_rotations) * len(tiles) * (2 if random_phase else 1)
    done_rot = [0]

    for ti, ((y0, y1), (x0, x1)) in enumerate(tiles):
        ty0, ty1 = max(0, y0 - overlap), min(ny, y1 + overlap)
        tx0, tx1 = max(0, x0 - overlap), min(nx, x1 + overlap)
        tile = np.array(tomogram[:, ty0:ty1, tx0:tx1], dtype=np.float32)   # a writable copy
        # a memory map's pages would stay resident tile after tile: the whole file
        release_pages(tomogram)
        user = None if search_mask is None else \
            np.asarray(search_mask[:, ty0:ty1, tx0:tx1], dtype=bool)
        res = _match_tile(tile, voxel_size, template, mask, b, diameter_vox, tilt_range,
                          lowpass, lowpass_c, highpass, whiten, coarse_rotations, coarse_step,
                          fine_step, random_phase, threshold_c, max_picks, user, mask_beads,
                          bead_sigma, rng, progress, done_rot, total_rot, t_start, n_threads)
        # keep what lies in this tile's core
        pos = res["positions"] + np.array([tx0, ty0, 0])
        own = ((pos[:, 0] >= x0 - 0.5) & (pos[:, 0] < x1 - 0.5)
               & (pos[:, 1] >= y0 - 0.5) & (pos[:, 1] < y1 - 0.5))
        all_pos.append(pos[own])
        all_rot.append(res["rotations"][own])
        all_cc.append(res["cc"][own])
        all_z.append(res["z"][own])
        sl = (slice(None), slice(y0 - ty0, y1 - ty0), slice(x0 - tx0, x1 - tx0))
        if score_map is not None:
            score_map[:, y0:y1, x0:x1] = res["score_map"][sl]
        if angle_map is not None:
            angle_map[:, y0:y1, x0:x1] = res["angle_map"][sl]
        for out in (score_map, angle_map):   # written to memory-mapped files: drop the pages
            release_pages(out)
        for key in ("n_candidates", "n_beads_voxels", "coarse_seconds", "refine_seconds",
                    "coarse_voxel_rotations", "n_refine_rotations"):
            stats[key] += res["stats"][key]
        stats["tiles"].append(dict(y=(y0, y1), x=(x0, x1), sigma_coarse=res["stats"]["sigma_c"],
                                   sigma_fine=res["stats"]["sigma_f"]))

    positions = np.concatenate(all_pos) if all_pos else np.zeros((0, 3))
    rotations = np.concatenate(all_rot) if all_rot else np.zeros((0, 3, 3))
    cc = np.concatenate(all_cc) if all_cc else np.zeros(0)
    z = np.concatenate(all_z) if all_z else np.zeros(0)
    above = z > threshold
    positions, rotations, cc, z = positions[above], rotations[above], cc[above], z[above]
    keep = non_maximum_suppression(positions, z, diameter_vox / 2)
    if max_picks:
        keep = keep[:int(max_picks)]
    stats["total_seconds"] = time.perf_counter() - t_start
    stats["rotations_per_second"] = (len(coarse_rotations) * len(tiles)
                                     / max(stats["coarse_seconds"], 1e-9))
    stats["voxel_rotations_per_second"] = (stats["coarse_voxel_rotations"]
                                           / max(stats["coarse_seconds"], 1e-9))
    stats["n_picks"] = int(len(keep))
    return MatchResult(positions=positions[keep], rotations=rotations[keep], scores=z[keep],
                       cc=cc[keep], threshold=threshold, score_map=score_map,
                       angle_map=angle_map, coarse_rotations=coarse_rotations, stats=stats)


def _match_tile(tile, voxel, template, mask, b, diameter_vox, tilt_range, lowpass, lowpass_c,
                highpass, whiten, coarse_rotations, coarse_step, fine_step, random_phase,
                threshold_c, max_picks, user_mask, mask_beads, bead_sigma, rng, progress,
                done_rot, total_rot, t_start, n_threads):
    shape0 = tile.shape
    n_full = template.shape[0]
    # pad to a multiple of b with the median (excluded from the search)
    med = np.float32(np.median(tile[::2, ::2, ::2]))
    padded_shape = tuple(int(np.ceil(s / b)) * b for s in shape0)
    if padded_shape != shape0:
        padded = np.full(padded_shape, med, np.float32)
        padded[:shape0[0], :shape0[1], :shape0[2]] = tile
        tile = padded
    beads = None
    if mask_beads:
        # smoothing over ~ a bead radius (25 Å) integrates the bead's excess
        # mass, which sets it apart from protein better than its peak voxel
        beads = high_contrast_mask(tile, sigma_threshold=bead_sigma,
                                   grow_threshold=bead_sigma / 2,
                                   smoothing=max(1.0, 25.0 / voxel))
        tile[beads] = med
        if beads.any():
            # no particle centre within a quarter diameter of a bead
            beads = ndimage.binary_dilation(beads, iterations=max(1, int(diameter_vox / 4)))
    user = np.zeros(padded_shape, bool)
    user[:shape0[0], :shape0[1], :shape0[2]] = True if user_mask is None else user_mask
    allowed = _allowed_region(padded_shape, max(1, n_full // 4), user, beads)
    whiten_profile = radial_power_spectrum(tile) if whiten else None

    # ---- coarse search on the binned tile -----------------------------------------
    t0 = time.perf_counter()
    shape_c = tuple(s // b for s in padded_shape)
    data_c = fourier_crop_to(tile, shape_c) if b > 1 else tile
    m_c = n_full // b
    tmpl_c = fourier_crop_to(template, (m_c,) * 3) if b > 1 else template
    mask_c = soft_sphere((m_c,) * 3, diameter_vox / 2 / b, edge=2.0) if b > 1 else mask
    # a frequency of f cycles per voxel is b f cycles per binned voxel
    prof_c = None if whiten_profile is None else (whiten_profile[0] * b, whiten_profile[1])
    level_c = _Level(tmpl_c, mask_c, voxel * b, lowpass_c, highpass, tilt_range, prof_c)
    corr_c = Correlator(data_c, _volume_filter(shape_c, voxel * b, lowpass_c, highpass, prof_c),
                        mask_c)
    # fourier_crop_to maps full index b*i + off to coarse index i (centre to centre)
    offs = [(b * m) // 2 - b * (m // 2) for m in shape_c]
    allowed_c = allowed[offs[0]::b, offs[1]::b, offs[2]::b][:shape_c[0], :shape_c[1], :shape_c[2]]
    best = np.full(shape_c, -np.inf, np.float32)
    best_idx = np.zeros(shape_c, np.int32)
    best_rand = np.full(shape_c, -np.inf, np.float32) if random_phase else None
    tmpl_rand = randomize_phases(tmpl_c, seed=int(rng.integers(1 << 31))) if random_phase \
        else None
    sum_sq, count = 0.0, 0
    sample = allowed_c.copy()
    batch = 4
    last_report = time.perf_counter()
    upd = np.empty(shape_c, bool)
    for start in range(0, len(coarse_rotations), batch):
        rots = coarse_rotations[start:start + batch]
        for k, cc in enumerate(corr_c.scores(level_c.conditioned(rots))):
            np.greater(cc, best, out=upd)
            np.copyto(best_idx, np.int32(start + k), where=upd)
            np.maximum(best, cc, out=best)
            if (start + k) % 8 == 0:
                # the background's spread from every 8th rotation (it is the
                # same statistic for every rotation)
                vals = cc[sample]
                sum_sq += float(np.dot(vals, vals))
                count += vals.size
        if random_phase:
            for cc in corr_c.scores(level_c.conditioned(rots, tmpl_rand)):
                np.maximum(best_rand, cc, out=best_rand)
        done_rot[0] += len(rots) * (2 if random_phase else 1)
        now = time.perf_counter()
        if progress and (now - last_report > 10 or done_rot[0] == total_rot):
            last_report = now
            elapsed = now - t_start
            left = elapsed / max(done_rot[0], 1) * (total_rot - done_rot[0])
            progress(f"rotations {done_rot[0]}/{total_rot} searched, {elapsed:.0f} s elapsed, "
                     f"about {left:.0f} s left for the global search")
    sigma_c = float(np.sqrt(sum_sq / max(count, 1)))
    score_c = best - best_rand if random_phase else best
    score_c = score_c / np.float32(max(sigma_c, 1e-30))
    score_c[~allowed_c] = 0
    coarse_seconds = time.perf_counter() - t0

    # ---- candidates -------------------------------------------------------------------
    max_cand = None if not max_picks else max(4 * int(max_picks), 50)
    cand_c, _ = local_maxima(score_c, diameter_vox / 2 / b * 0.75, threshold_c, allowed_c,
                             max_cand)

    # ---- full-resolution correlator, background sigma ------------------------------
    t1 = time.perf_counter()
    level_f = _Level(template, mask, voxel, lowpass, highpass, tilt_range, whiten_profile)
    corr_f = Correlator(tile, _volume_filter(padded_shape, voxel, lowpass, highpass,
                                             whiten_profile), mask)
    # the background's spread at full sampling, from three rotations drawn at random
    every = uniform_rotations(coarse_step)
    probe = every[rng.choice(len(every), 3, replace=False)]
    sq, cnt = 0.0, 0
    for cc in corr_f.scores(level_f.conditioned(probe)):
        vals = cc[allowed]
        sq += float(np.dot(vals, vals))
        cnt += vals.size
    sigma_f = float(np.sqrt(sq / max(cnt, 1)))

    # ---- local refinement ------------------------------------------------------------
    def refine(c):
        xc, yc, zc = (int(v) for v in c)
        R = coarse_rotations[best_idx[zc, yc, xc]]
        pos = np.array([xc, yc, zc])
        n_rot = 0
        # two levels on the binned data
        for rots in (lambda R: local_rotations(R, coarse_step, coarse_step / 2),
                     lambda R: _cube(R, coarse_step / 4)):
            cand_rots = rots(R)
            sc = local_scores(corr_c.filtered, corr_c.inv_norm, pos,
                              level_c.conditioned(cand_rots), 1)
            n_rot += len(cand_rots)
            k, dz, dy, dx = np.unravel_index(np.argmax(sc), sc.shape)
            R = cand_rots[k]
            pos = pos + np.array([dx, dy, dz]) - 1
        # full sampling, halving the step down to half the fine step
        pos_f = pos * b + np.array(offs[::-1])
        step = coarse_step / 8
        shift = b
        while True:
            cand_rots = _cube(R, step)
            sc = local_scores(corr_f.filtered, corr_f.inv_norm, pos_f,
                              level_f.conditioned(cand_rots), shift)
            n_rot += len(cand_rots)
            k, dz, dy, dx = np.unravel_index(np.argmax(sc), sc.shape)
            R = cand_rots[k]
            best_sc = sc[k]
            centre = np.array([dz, dy, dx])
            pos_f = pos_f + np.array([dx, dy, dz]) - shift
            if step <= 0.6 * fine_step:
                break
            step /= 2
            shift = 1
        # sub-voxel: parabola through the best voxel and its neighbours, per axis
        sub = np.zeros(3)
        for axis in range(3):
            c0 = centre[axis]
            if 0 < c0 < best_sc.shape[axis] - 1:
                idx = list(centre)
                vals = []
                for d in (-1, 0, 1):
                    idx[axis] = c0 + d
                    vals.append(best_sc[tuple(idx)])
                sub[axis] = _parabola_offset(*vals)
        position = pos_f + sub[::-1]
        return position, R, float(best_sc[tuple(centre)]), n_rot

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        refined = list(pool.map(refine, cand_c))
    refine_seconds = time.perf_counter() - t1
    positions = np.array([r[0] for r in refined], float).reshape(-1, 3)
    rotations = np.array([r[1] for r in refined], float).reshape(-1, 3, 3)
    cc = np.array([r[2] for r in refined], float)
    n_refine = int(sum(r[3] for r in refined))
    inside = np.ones(len(positions), bool)
    if len(positions):
        ip = np.clip(np.round(positions).astype(int), 0, np.array(padded_shape[::-1]) - 1)
        inside = allowed[ip[:, 2], ip[:, 1], ip[:, 0]]
    positions, rotations, cc = positions[inside], rotations[inside], cc[inside]
    z = cc / max(sigma_f, 1e-30)
    if progress:
        progress(f"{len(cand_c)} candidates refined with {n_refine} local rotations in "
                 f"{refine_seconds:.0f} s")

    out = dict(positions=positions, rotations=rotations, cc=cc, z=z,
               stats=dict(n_candidates=len(cand_c), coarse_seconds=coarse_seconds,
                          refine_seconds=refine_seconds, n_refine_rotations=n_refine,
                          coarse_voxel_rotations=float(np.prod(shape_c)) * len(coarse_rotations),
                          n_beads_voxels=int(beads.sum()) if beads is not None else 0,
                          sigma_c=sigma_c, sigma_f=sigma_f))
    sl = (slice(0, shape0[0]), slice(0, shape0[1]), slice(0, shape0[2]))
    if b > 1:
        rep = lambda a: np.repeat(np.repeat(np.repeat(a, b, 0), b, 1), b, 2)   # noqa: E731
        out["score_map"] = rep(score_c.astype(np.float32))[sl]
        idx = np.where(allowed_c, best_idx, -1).astype(np.int32)
        out["angle_map"] = rep(idx)[sl]
    else:
        out["score_map"] = score_c.astype(np.float32)[sl]
        out["angle_map"] = np.where(allowed_c, best_idx, -1).astype(np.int32)[sl]
    return out
