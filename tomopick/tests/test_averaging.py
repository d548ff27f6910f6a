"""Tests of tomopick.core.averaging: alignment, Fourier averaging, FSC and the initial model.

Particles are made from real structures in ../shared/data (the 80S ribosome
map EMD-3883, the D7 20S proteasome PDB 3J9I): each is the structure turned
by a random rotation and moved by up to 2 voxels, Fourier-filtered by a
+-60 degree missing wedge, with white noise restricted to the same wedge at a
given SNR (signal variance over noise variance in the box), as a tomogram's
subtomogram would be.
"""

import numpy as np
import pytest
import scipy.fft as sfft

from tomopick.core.alignment import align_box
from tomopick.core.averaging import (Aligner, FourierAverage, find_symmetry_frame, fsc,
                                     initial_model, low_pass, resolution)
from tomopick.core.averaging.average import full_grid
from tomopick.core.averaging.align import hermitian_weights
from tomopick.core.averaging.fsc import shell_index
from tomopick.core.averaging.initial_model import _align
from tomopick.core.formats import read_mrc
from tomopick.core.fourier import bandpass, soft_sphere, wedge_mask
from tomopick.core.resample import fourier_crop_to
from tomopick.core.rotations import angular_distance, uniform_rotations
from tomopick.core.simulate import random_rotations
from tomopick.core.rotations import angle_between, homogeneous
from tomopick.tests.shared_data import data_file

RIBOSOME = "emd3883_80S_ribosome_64px_8.66A.mrc"
PROTEASOME = "pdb_3j9i_20S_proteasome.pdb"
TILT = (-60.0, 60.0)


def ribosome(n=32):
    """EMD-3883 Fourier-cropped from 64^3 at 8.66 Å to n^3: (map, Å/voxel)."""
    volume = read_mrc(data_file(RIBOSOME)).astype(np.float32)
    volume = fourier_crop_to(volume, (n, n, n))
    return volume / volume.std(), 8.66 * 64 / n


def make_particles(truth, count, snr, seed, tilt=TILT, max_shift=2.0):
    """Subtomograms of ``truth``: (boxes, core poses [[R, t]])."""
    rng = np.random.default_rng(seed)
    n = truth.shape[0]
    rotations = random_rotations(count, rng)
    shifts = rng.uniform(-max_shift, max_shift, (count, 3))
    poses = homogeneous(rotations, shifts)
    wedge = wedge_mask((n,) * 3, tilt)
    boxes = np.empty((count, n, n, n), np.float32)
    for i, pose in enumerate(poses):
        # box(x) = truth(R^T (x - t)), so that aligned(r) = box(R r + t) = truth(r)
        clean = align_box(truth, np.linalg.inv(pose), "cubic")
        signal = sfft.irfftn(sfft.rfftn(clean) * wedge, s=clean.shape)
        noise = sfft.irfftn(sfft.rfftn(rng.standard_normal(clean.shape)) * wedge,
                            s=clean.shape)
        noise *= np.sqrt(signal.var() / snr / noise.var())
        boxes[i] = signal + noise
    return boxes, poses


def align_to_truth(model, truth, voxel_size, lowpass, step=15.0):
    """Pose G of a model against the truth: model(G r + g) ~ truth(r)."""
    n = truth.shape[0]
    aligner = Aligner(model[None], np.ones((1, n, n, n // 2 + 1), np.float32), [0],
                      bandpass((n,) * 3, voxel_size, lowpass=lowpass), n / 4)
    aligner.set_reference(truth)
    matrices, _ = _align(aligner, np.array([0]), uniform_rotations(step), step, 3)
    return matrices[0]


def correlation(a, b, mask):
    a, b = (a - a.mean()) * mask, (b - b.mean()) * mask
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# ----------------------------------------------------------------- alignment

def test_alignment_recovers_pose_and_the_wedge_does_not_align_to_itself():
    truth, voxel_size = ribosome(24)
    n = truth.shape[0]
    boxes, poses = make_particles(truth, 12, snr=0.3, seed=3)
    wedge = np.broadcast_to(wedge_mask((n,) * 3, TILT), (n, n, n // 2 + 1)).astype(np.float32)
    # a reference that misses the same wedge (one particle's worth of Fourier space),
    # in its own frame: a plain correlation is drawn to poses that superpose the two
    # wedges, whatever the particle looks like
    reference = sfft.irfftn(sfft.rfftn(truth) * wedge, s=truth.shape).astype(np.float32)
    band = bandpass((n,) * 3, voxel_size, lowpass=40.0)
    step = 30.0
    rotations = uniform_rotations(step)
    errors, shift_errors = {}, {}
    for name, wedges, coverage in (("constrained", wedge, full_grid(wedge)),
                                   ("plain", np.ones_like(wedge), None)):
        aligner = Aligner(boxes, wedges[None], np.zeros(12, int), band, 4)
        aligner.set_reference(reference, coverage)
        found, scores = _align(aligner, np.arange(12), rotations, step, 2)
        errors[name] = angular_distance(found[:, :3, :3], poses[:, :3, :3])
        shift_errors[name] = np.linalg.norm(found[:, :3, 3] - poses[:, :3, 3], axis=1)
    # 23 Å voxels, 40 Å low-pass, SNR 0.3: a few degrees, under a voxel (measured
    # medians 3.6 deg, 0.5 voxel); the plain correlation puts half the particles
    # more than 40 deg off (measured)
    assert np.median(errors["constrained"]) < 6.0 and errors["constrained"].max() < 10.0
    assert np.median(shift_errors["constrained"]) < 0.75
    assert shift_errors["constrained"].max() < 1.5
    assert (errors["plain"] > 40).sum() >= 4


def test_fourier_average_fills_the_wedge_from_several_orientations():
    truth, voxel_size = ribosome(24)
    boxes, poses = make_particles(truth, 12, snr=1000.0, seed=4)
    n = truth.shape[0]
    wedge = np.broadcast_to(wedge_mask((n,) * 3, TILT), (n, n, n // 2 + 1))[None]
    acc = FourierAverage(n)
    acc.add(boxes, poses, wedge.astype(np.float32), np.zeros(12, int))
    average, coverage = acc.result()
    mask = soft_sphere((n,) * 3, n / 2 - 2)
    # wedge-weighted: the average is the truth; a plain mean of the aligned boxes is damped
    plain = np.mean([align_box(b, p) for b, p in zip(boxes, poses)], axis=0)
    assert correlation(average, truth, mask) > 0.97
    assert correlation(average, truth, mask) > correlation(plain, truth, mask) + 0.01
    # 12 random orientations leave no Fourier voxel (inside Nyquist) unmeasured
    inner = soft_sphere((n,) * 3, n / 2 - 1, edge=0) > 0
    assert coverage[inner].min() >= 1.0


def test_fsc_of_noisy_half_maps_follows_their_signal_to_noise_ratio():
    truth, voxel_size = ribosome(32)
    n = truth.shape[0]
    rng = np.random.default_rng(5)
    sigma = 1.0
    halves = [truth + sigma * rng.standard_normal(truth.shape) for _ in range(2)]
    frequency, curve = fsc(*halves, voxel_size)
    # expected per shell: S / (S + N), S the truth's power, N = sigma^2 n^3 per coefficient
    shells = shell_index(truth.shape)
    weight = np.broadcast_to(hermitian_weights(n), shells.shape)
    inside = shells <= n // 2
    signal = np.bincount(shells[inside], (weight * np.abs(sfft.rfftn(truth)) ** 2)[inside])
    count = np.bincount(shells[inside], weight[inside])
    expected = signal / (signal + sigma ** 2 * n ** 3 * count)
    # the measured curve scatters by about 1/sqrt(voxels per shell)
    deviation = np.abs(curve[1:] - expected[1:])
    assert np.all(deviation <= 3 / np.sqrt(count[1:]) + 0.02), deviation
    res = resolution(frequency, curve)
    assert res == pytest.approx(resolution(frequency, expected), rel=0.1)
    assert 2 * voxel_size < res < 10 * voxel_size
    assert resolution(*fsc(truth, truth, voxel_size)) == pytest.approx(2 * voxel_size)


def test_symmetry_frame_of_the_proteasome_is_its_seven_fold_axis():
    from tomopick.core.simulate import pdb_density
    volume = pdb_density(data_file(PROTEASOME), 10.0, 20.0)
    n = 32
    truth = np.zeros((n, n, n), np.float32)
    truth[:volume.shape[0], :volume.shape[1], :volume.shape[2]] = volume
    truth = _centred(truth)
    axis = _unique_inertia_axis(truth)
    rotation = random_rotations(1, np.random.default_rng(6))[0]
    turned = align_box(truth, homogeneous(rotation.T), "cubic")   # turned(r) = truth(R^T r)
    frame = find_symmetry_frame(turned, "d7", mask=soft_sphere((n,) * 3, 12))
    found = frame[:, 2]
    angle = min(angle_between(found, rotation @ axis), angle_between(-found, rotation @ axis))
    assert angle < 3.0


def _centred(volume):
    from tomopick.core.averaging import centre_of_mass_offset
    return align_box(volume, homogeneous(shift=centre_of_mass_offset(volume)), "cubic")


def _unique_inertia_axis(volume):
    """The principal axis (x, y, z) whose moment differs from the other two (a Cn/Dn axis)."""
    density = np.clip(volume, 0, None)
    n = volume.shape[0]
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2,) * 3, indexing="ij")
    coords = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(float)
    weights = density.ravel() / density.sum()
    centre = weights @ coords
    coords -= centre
    tensor = (coords * weights[:, None]).T @ coords
    values, vectors = np.linalg.eigh(tensor)
    gaps = [abs(values[0] - values[1]) + abs(values[0] - values[2]),
            abs(values[1] - values[0]) + abs(values[1] - values[2]),
            abs(values[2] - values[0]) + abs(values[2] - values[1])]
    return vectors[:, int(np.argmax(gaps))]


# ------------------------------------------------------------ initial model

@pytest.fixture(scope="module")
def ribosome_model():
    """Reference-free initial model of 50 ribosomes at SNR 0.1, wedge +-60."""
    truth, voxel_size = ribosome(32)
    boxes, poses = make_particles(truth, 50, snr=0.1, seed=1)
    progress = []
    # shrink 2 asked; the searches stay on 32^3, the size that still holds 40 Å
    result = initial_model(boxes, voxel_size, 300.0, tilt_ranges=[TILT], angular_step=30.0,
                           iterations=2, batch_size=12, lowpass=40.0, shrink=2.0, seed=0,
                           restarts=2, half_iterations=1, callback=progress.append)
    G = align_to_truth(result.unfiltered, truth, voxel_size, 40.0)
    return truth, voxel_size, poses, result, G, progress


def test_initial_model_correlates_with_the_truth_at_its_resolution(ribosome_model):
    truth, voxel_size, _, result, G, _ = ribosome_model
    n = truth.shape[0]
    mask = soft_sphere((n,) * 3, 150 / voxel_size + 1, edge=3)
    aligned = align_box(result.average, G, "cubic")
    # the model is low-passed to 40 Å: compare with the truth at the same resolution
    assert correlation(aligned, low_pass(truth, voxel_size, 40.0), mask) >= 0.8
    aligned = align_box(result.unfiltered, G, "cubic")
    at_resolution = [low_pass(v, voxel_size, result.resolution) for v in (aligned, truth)]
    assert correlation(*at_resolution, mask) >= 0.8


def test_initial_model_fsc_resolution_matches_the_truth(ribosome_model):
    truth, voxel_size, _, result, G, _ = ribosome_model
    n = truth.shape[0]
    mask = soft_sphere((n,) * 3, 150 / voxel_size + 1, edge=3)
    aligned = align_box(result.unfiltered, G, "cubic")
    frequency, curve = fsc(aligned, truth, voxel_size, mask=mask)
    truth_resolution = resolution(frequency, curve, 0.5)
    assert abs(result.resolution - truth_resolution) <= 0.2 * truth_resolution, \
        (result.resolution, truth_resolution)
    assert result.resolution < 60.0


def test_initial_model_orientations_match_the_truth(ribosome_model):
    truth, _, poses, result, G, progress = ribosome_model
    # box_i(R r + t) = model(r) = truth(G^T (r - g)) and box_i(x) = truth(R_i^T (x - t_i)):
    # the found R is R_i G^T
    errors = angular_distance(result.matrices[:, :3, :3], poses[:, :3, :3] @ G[:3, :3].T)
    assert np.median(errors) < 10.0, np.percentile(errors, [50, 90])
    # restarts agree, and the progress reached the caller every iteration
    assert result.consistency.min() > 0.9
    stages = [p.stage for p in progress]
    assert stages.count("restart 1/2") == 2 and stages.count("half-sets") == 2
    assert "searches on 32^3 boxes" in progress[0].message


def test_initial_model_is_deterministic_and_rejects_bad_input():
    truth, voxel_size = ribosome(16)
    boxes, _ = make_particles(truth, 8, snr=1.0, seed=2)
    kwargs = dict(tilt_ranges=[TILT], angular_step=45.0, iterations=1, batch_size=4,
                  lowpass=60.0, shrink=1.0, restarts=1, half_iterations=1, seed=7)
    first = initial_model(boxes, voxel_size, 300.0, **kwargs)
    second = initial_model(boxes, voxel_size, 300.0, **kwargs)
    np.testing.assert_array_equal(first.average, second.average)
    np.testing.assert_array_equal(first.matrices, second.matrices)
    with pytest.raises(ValueError, match="batch size 9"):
        initial_model(boxes, voxel_size, 300.0, **dict(kwargs, batch_size=9))
    with pytest.raises(ValueError, match="cannot parse the symmetry 'q5'"):
        initial_model(boxes, voxel_size, 300.0, symmetry="q5", **kwargs)
    with pytest.raises(ValueError, match="cubic"):
        initial_model(boxes[:, :, :, :15], voxel_size, 300.0, **kwargs)


def test_initial_model_finds_and_imposes_d7(tmp_path):
    from tomopick.core.simulate import pdb_density
    volume = pdb_density(data_file(PROTEASOME), 10.0, 20.0)
    n = 32
    truth = np.zeros((n, n, n), np.float32)
    truth[:volume.shape[0], :volume.shape[1], :volume.shape[2]] = volume
    truth = _centred(truth)
    truth /= truth.std()
    boxes, _ = make_particles(truth, 24, snr=0.5, seed=8)
    result = initial_model(boxes, 10.0, 200.0, tilt_ranges=[TILT], symmetry="d7",
                           angular_step=30.0, iterations=2, batch_size=8, lowpass=40.0,
                           shrink=2.0, restarts=1, half_iterations=1, seed=0)
    # the model's z-axis is the 7-fold axis: in the truth's frame it is G^T z
    G = align_to_truth(result.unfiltered, truth, 10.0, 40.0)
    axis = _unique_inertia_axis(truth)
    found = G[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    angle = min(angle_between(found, axis), angle_between(-found, axis))
    assert angle < 5.0
    # symmetric: turning by 360/7 about z leaves the model unchanged
    from tomopick.core.rotations import symmetry_matrices
    turned = align_box(result.unfiltered, homogeneous(symmetry_matrices("c7")[1]), "cubic")
    mask = soft_sphere((n,) * 3, 10)
    assert correlation(turned, result.unfiltered, mask) > 0.95


def test_initial_model_from_a_reference_keeps_its_frame():
    truth, voxel_size = ribosome(24)
    boxes, poses = make_particles(truth, 16, snr=0.5, seed=9)
    result = initial_model(boxes, voxel_size, 300.0, tilt_ranges=[TILT], reference=truth,
                           angular_step=30.0, batch_size=8, lowpass=50.0, shrink=1.0,
                           half_iterations=2, seed=1)
    # no restarts with a reference, and the model stays in the reference's frame:
    # compared with the truth directly, without aligning it first
    assert np.isnan(result.consistency).all()
    mask = soft_sphere((24,) * 3, 150 / voxel_size + 1, edge=3)
    assert correlation(result.average, low_pass(truth, voxel_size, 50.0), mask) > 0.8
    errors = angular_distance(result.matrices[:, :3, :3], poses[:, :3, :3])
    assert np.median(errors) < 10.0
