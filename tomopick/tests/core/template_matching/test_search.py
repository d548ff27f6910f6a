"""Template matching (tomopick.core.template_matching), in the manner of pytom-match-pick's tests."""

import numpy as np
import pytest
import scipy.fft

from tomopick.core.evaluate import match_picks
from tomopick.core.fourier import bandpass, wedge_mask
from tomopick.core.rotations import angular_distance, symmetry_matrices, uniform_rotations
from tomopick.core.simulate import particle_template, random_rotations, simulate_tomogram
from tomopick.core.template_matching import (Correlator, match_template, prepare_template,
                                             rotate_templates)
from tomopick.core.template_matching.search import _Level
from tomopick.tests.shared_data import data_file

RIBOSOME = "emd3883_80S_ribosome_64px_8.66A.mrc"


def _paste(volume, template, R, position):
    """Add the template rotated by R with its centre at an integer voxel (x, y, z)."""
    rot = rotate_templates(template, R[None], order=3)[0]
    n = template.shape[0]
    x, y, z = position
    volume[z - n // 2:z - n // 2 + n, y - n // 2:y - n // 2 + n,
           x - n // 2:x - n // 2 + n] += rot


def test_rotated_template_in_empty_volume_is_found_and_oriented():
    voxel, diameter = 20.0, 260.0
    t, m, _ = prepare_template(particle_template(1, voxel), voxel, voxel, diameter)
    R = random_rotations(1, np.random.default_rng(7))[0]
    vol = np.zeros((40, 56, 48), np.float32)
    _paste(vol, t, R, (25, 31, 19))
    res = match_template(vol, voxel, t, m, diameter, lowpass=45.0, coarse_step=30.0,
                         mask_beads=False, return_maps=False)
    assert len(res.positions) == 1
    assert np.abs(res.positions[0] - (25, 31, 19)).max() < 0.5
    # orientation within half the (fine) angular step, score of a perfect match
    assert angular_distance(res.rotations[0], R) < res.stats["fine_step"] / 2
    assert res.cc[0] > 0.99


def test_symmetric_template_searches_the_asymmetric_unit():
    voxel = 20.0
    n = 21
    t = np.zeros((n, n, n), np.float32)
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    for k in range(4):      # four lobes about z (C4) and a cap above: C4, not higher
        cx, cy = 5 * np.cos(k * np.pi / 2 + 0.3), 5 * np.sin(k * np.pi / 2 + 0.3)
        t += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z + 1) ** 2) / 4.0)
        # a tail on each lobe breaks the mirror symmetry
        t += 0.6 * np.exp(-((x - cx + 2 * np.sin(k * np.pi / 2 + 0.3)) ** 2
                            + (y - cy - 2 * np.cos(k * np.pi / 2 + 0.3)) ** 2
                            + (z + 3) ** 2) / 2.0)
    t += np.exp(-(x ** 2 + y ** 2 + (z - 5) ** 2) / 5.0)
    diameter = 18 * voxel
    t, m, _ = prepare_template(t, voxel, voxel, diameter)
    R = random_rotations(1, np.random.default_rng(3))[0]
    vol = np.zeros((36, 48, 48), np.float32)
    _paste(vol, t, R, (22, 25, 18))
    res = match_template(vol, voxel, t, m, diameter, symmetry="c4", lowpass=45.0,
                         coarse_step=25.0, mask_beads=False, return_maps=False)
    n_c1 = len(uniform_rotations(25.0))
    assert abs(res.stats["n_coarse_rotations"] * 4 / n_c1 - 1) < 0.06
    assert np.abs(res.positions[0] - (22, 25, 18)).max() < 0.5
    assert angular_distance(res.rotations[0], R, "c4") < res.stats["fine_step"] / 2
    assert len(symmetry_matrices("c4")) == 4


def test_pure_noise_gives_about_false_positives_picks():
    # falsePositives = 1 per tomogram: over 6 noise tomograms the count of
    # picks is Poisson with mean ~6 if the false-alarm model holds; the
    # central 99 % of Poisson(6) is 1..13 (and the calibration constant is
    # known to ~30 %, mean 4..8, whose 99 % ranges stay within 0..15)
    from tomopick.core.formats.mrc import read_mrc
    ref = read_mrc(data_file(RIBOSOME))
    voxel, diameter = 25.0, 400.0
    t, m, _ = prepare_template(ref, 8.66, voxel, diameter)
    counts = []
    for seed in range(6):
        noise = np.random.default_rng(seed).standard_normal((40, 56, 56)).astype(np.float32)
        res = match_template(noise, voxel, t, m, diameter, tilt_range=(-60, 60), lowpass=60.0,
                             coarse_step=30.0, false_positives=1.0, return_maps=False)
        counts.append(len(res.positions))
    assert 1 <= sum(counts) <= 15, counts


def test_wedge_weighting_raises_the_true_peak_over_background():
    voxel, diameter = 20.0, 260.0
    t, m, _ = prepare_template(particle_template(1, voxel), voxel, voxel, diameter)
    R = random_rotations(1, np.random.default_rng(2))[0]
    shape = (48, 64, 64)
    rng = np.random.default_rng(4)
    clean = np.zeros(shape, np.float32)
    _paste(clean, t, R, (32, 30, 24))
    vol = clean + 1.2 * clean.std() * rng.standard_normal(shape).astype(np.float32)
    # a tomogram of a +-45 degree tilt series: the wedge is empty
    spec = scipy.fft.rfftn(vol) * wedge_mask(shape, (-45, 45))
    vol = scipy.fft.irfftn(spec, s=shape).astype(np.float32)

    def peak_over_background(tilt_range):
        level = _Level(t, m, voxel, 45.0, None, tilt_range, None)
        corr = Correlator(vol, bandpass(shape, voxel, 45.0), m)      # one FFT thread
        cc = next(corr.scores(level.conditioned(R[None])))
        far = np.ones(shape, bool)
        far[24 - 8:24 + 9, 30 - 8:30 + 9, 32 - 8:32 + 9] = False
        return cc[24, 30, 32] / cc[far].std()

    with_wedge, without = peak_over_background((-45, 45)), peak_over_background(None)
    assert with_wedge > 1.1 * without, (with_wedge, without)


def test_real_ribosomes_in_a_phantom_are_picked_and_oriented():
    from tomopick.core.formats.mrc import read_mrc
    from tomopick.core.simulate import map_particle_class
    path = data_file(RIBOSOME)
    voxel, diameter = 24.0, 400.0
    rib = map_particle_class("ribosome80S", path, None, voxel)
    ph = simulate_tomogram(shape=(48, 96, 96), voxel_size=voxel, n_particles=14, n_vesicles=0,
                           n_gold=3, tilt_range=(-60, 60), snr=0.1, seed=5,
                           particle_classes=[10, 10, 10, 1], extra_classes={10: rib})
    t, m, _ = prepare_template(read_mrc(path), 8.66, voxel, diameter, invert=True)
    res = match_template(ph.tomogram, voxel, t, m, diameter, tilt_range=(-60, 60),
                         lowpass=55.0, coarse_step=25.0, false_positives=1.0,
                         return_maps=False)
    truth = ph.particles.group_ids == 10
    i, j, _ = match_picks(res.positions, ph.particles.positions[truth], diameter / voxel / 4)
    f1 = 2 * len(i) / (len(res.positions) + truth.sum())
    assert f1 >= 0.9, (len(i), len(res.positions), truth.sum())
    err = angular_distance(res.rotations[i], ph.particles.matrices[truth][j, :3, :3])
    assert np.median(err) < 5.0, err
    for g in ph.gold:           # no pick on a bead
        assert np.all(np.linalg.norm(res.positions - g["center"], axis=1) > g["radius"] + 2)


def test_bad_references_are_named():
    with pytest.raises(ValueError, match="constant"):
        prepare_template(np.ones((16, 16, 16)), 10.0, 10.0, 100.0)
    with pytest.raises(ValueError, match="mask has shape"):
        prepare_template(np.random.rand(16, 16, 16), 10.0, 10.0, 100.0,
                         mask=np.ones((8, 8, 8)))
    with pytest.raises(ValueError, match="tilt_range"):
        t, m, _ = prepare_template(np.random.rand(16, 16, 16), 10.0, 10.0, 100.0)
        match_template(np.zeros((20, 20, 20), np.float32), 10.0, t, m, 100.0,
                       tilt_range=(-100, 60))


def test_tiles_give_the_same_picks_as_one_tile():
    voxel, diameter = 20.0, 260.0
    t, m, _ = prepare_template(particle_template(1, voxel), voxel, voxel, diameter)
    rng = np.random.default_rng(9)
    vol = 0.05 * rng.standard_normal((24, 80, 80)).astype(np.float32)
    rots = random_rotations(3, rng)
    # one particle in a tile's core, one across a tile border, one in another tile
    spots = [(18, 18, 12), (41, 22, 11), (60, 62, 12)]
    for R, p in zip(rots, spots):
        _paste(vol, t, R, p)
    kw = dict(lowpass=45.0, coarse_step=30.0, mask_beads=False, return_maps=True)
    one = match_template(vol, voxel, t, m, diameter, **kw)
    tiled = match_template(vol, voxel, t, m, diameter, max_tile_voxels=24 * 78 * 78, **kw)
    assert tiled.stats["n_tiles"] > 1
    assert len(one.positions) == len(tiled.positions) == 3
    i, j, d = match_picks(tiled.positions, one.positions, 0.5)
    assert len(i) == 3


def test_whitening_and_random_phase_correction_keep_the_true_pick():
    voxel, diameter = 20.0, 260.0
    t, m, _ = prepare_template(particle_template(1, voxel), voxel, voxel, diameter)
    R = random_rotations(1, np.random.default_rng(12))[0]
    rng = np.random.default_rng(13)
    vol = np.zeros((40, 56, 56), np.float32)
    _paste(vol, t, R, (28, 27, 20))
    vol += 0.8 * vol.std() * rng.standard_normal(vol.shape).astype(np.float32)
    plain = match_template(vol, voxel, t, m, diameter, lowpass=45.0, coarse_step=30.0,
                           mask_beads=False, return_maps=True)
    both = match_template(vol, voxel, t, m, diameter, lowpass=45.0, coarse_step=30.0,
                          whiten=True, random_phase=True, mask_beads=False, return_maps=True)
    for res in (plain, both):
        assert len(res.positions) == 1
        assert np.abs(res.positions[0] - (28, 27, 20)).max() < 1.0
        assert angular_distance(res.rotations[0], R) < res.stats["fine_step"]
    # the best score over rotations has a positive background (the maximum of
    # many draws); random-phase correction subtracts it: the map is centred
    searched = plain.angle_map >= 0
    assert np.median(plain.score_map[searched]) > 1.0
    assert abs(np.median(both.score_map[searched])) < 0.5
