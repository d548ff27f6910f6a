"""tomopick.core.learned: filter stack, classifier, persistence, detection on phantoms.

Phantoms hold four free particle classes, gold beads and a vesicle with
membrane proteins (SNR 0.5, missing wedge, CTF). The picker is trained on 10
ribosomes and 10 other things (beads, rods, trimers, membrane proteins) of one
phantom and scored on phantoms with other seeds.
"""
import dataclasses
import json

import numpy as np
import pytest

from tomopick.core import simulate
from tomopick.core.evaluate import evaluate_picks, match_picks
from tomopick.core.learned import (LearnedPicker, ModelFileError, feature_names, features_at,
                                   pick, working_volume)
from tomopick.core.learned.features import slab_features, symmetric_eigenvalues
from tomopick.core.picks import Picks
from tomopick.core.resample import fourier_crop_to

RIBOSOME, TRIMER, ROD, RING, MEMBRANE_PROTEIN = 4, 1, 2, 3, 5
GOLD = 0            # class id given to the beads in the scored truth
VOXEL = 10.0
SHAPE = (64, 128, 128)


def phantom(seed, shape=SHAPE, n_particles=48, snr=0.5):
    return simulate.simulate_tomogram(shape=shape, voxel_size=VOXEL, n_particles=n_particles,
                                      n_vesicles=1, n_gold=6, snr=snr, seed=seed)


def examples(ph, n=10):
    """n ribosomes and n others (3 beads, 3 rods, 2 trimers, 2 membrane proteins)."""
    p = ph.particles
    positives = p.positions[p.group_ids == RIBOSOME][:n]
    negatives = np.array([g["center"] for g in ph.gold[:3]]
                         + list(p.positions[p.group_ids == ROD][:3])
                         + list(p.positions[p.group_ids == TRIMER][:2])
                         + list(p.positions[p.group_ids == MEMBRANE_PROTEIN][:2]))
    return positives, negatives


def ribosome_diameter(ph):
    return float(np.median(ph.particle_info["diameter"][ph.particles.group_ids == RIBOSOME]))


def scored(detection, ph, diameter):
    """One-to-one scores for the ribosomes, and the fraction of each class picked."""
    p = ph.particles
    truth = Picks("t", p.positions[p.group_ids == RIBOSOME], voxel_size=VOXEL)
    result = evaluate_picks(Picks("t", detection.positions, voxel_size=VOXEL), truth,
                            diameter / 2)["one_to_one"]
    everything = Picks("t", np.concatenate([p.positions, [g["center"] for g in ph.gold]]),
                       np.concatenate([p.group_ids, np.full(len(ph.gold), GOLD)]),
                       voxel_size=VOXEL)
    per_class = evaluate_picks(Picks("t", detection.positions, voxel_size=VOXEL), everything,
                               diameter / 2)["per_class"]
    fractions = {c: v["one_to_one"]["recall"] for c, v in per_class.items()}
    return result, fractions


@pytest.fixture(scope="module")
def trained():
    train = phantom(1)
    diameter = ribosome_diameter(train)
    picker = LearnedPicker.create(diameter * VOXEL, VOXEL, seed=0)
    positives, negatives = examples(train)
    picker.add_examples(train.tomogram, VOXEL, positives, negatives)
    picker.fit()
    return picker, diameter


@pytest.fixture(scope="module")
def unseen():
    return phantom(2)


# ------------------------------------------------------------ filter stack
def test_closed_form_eigenvalues_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3, 3))
    a = a + a.transpose(0, 2, 1)
    a[:5] = np.eye(3) * 2.0                             # a triple eigenvalue
    entries = [a[:, i, j] for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
    # the closed form loses about sqrt(machine epsilon) at a triple eigenvalue
    np.testing.assert_allclose(symmetric_eigenvalues(*entries).T, np.linalg.eigvalsh(a),
                               atol=1e-6)


def test_slabs_with_halo_equal_the_whole_volume_stack():
    rng = np.random.default_rng(3)
    work = rng.normal(size=(40, 24, 24)).astype(np.float32)
    scales = (1.0, 2.0)
    whole = slab_features(work, 0, 40, scales)
    parts = np.concatenate([slab_features(work, z, min(40, z + 7), scales)
                            for z in range(0, 40, 7)], axis=1)
    assert whole.shape == (len(feature_names(scales)), 40, 24, 24)
    np.testing.assert_allclose(parts, whole, atol=1e-4 * np.abs(whole).max())
    zyx = np.array([[3, 4, 5], [39, 0, 23]])
    np.testing.assert_allclose(features_at(work, zyx, scales), whole[:, zyx[:, 0], zyx[:, 1],
                                                                      zyx[:, 2]].T, atol=1e-5)


def test_working_grid_maps_positions_both_ways_and_back_onto_the_tomogram():
    volume = np.zeros((30, 50, 70), np.float32)
    volume[15, 25, 35] = 1
    work, grid = working_volume(volume + np.random.default_rng(0).normal(
        scale=1e-3, size=volume.shape).astype(np.float32), 10.0, 25.0)
    assert work.shape == (12, 20, 28)
    assert abs(float(work.mean())) < 1e-5 and abs(float(work.std()) - 1) < 1e-4
    xyz = np.array([[3.5, 47.0, 21.25]])
    np.testing.assert_allclose(grid.to_tomogram(grid.to_working(xyz)), xyz)
    assert grid.upsample(np.ones(work.shape)).shape == volume.shape
    with pytest.raises(ValueError, match="coarser than the model's working voxel size"):
        working_volume(volume, 30.0, 25.0)


# ------------------------------------------------------------------ picking
def test_ten_examples_pick_the_class_on_another_phantom_and_leave_the_others(trained, unseen):
    picker, diameter = trained
    detection = pick(picker, unseen.tomogram, VOXEL)
    result, fractions = scored(detection, unseen, diameter)
    print(f"one-to-one {result}; fraction picked per class {fractions}")
    assert result["f1"] >= 0.85, result
    assert fractions[RIBOSOME] >= 0.85
    assert fractions[GOLD] == 0
    for other in (TRIMER, ROD, RING, MEMBRANE_PROTEIN):
        assert fractions[other] <= 0.2, fractions
    # sub-voxel positions: matched picks lie within a sixth of a diameter of the truth
    truth = unseen.particles.positions[unseen.particles.group_ids == RIBOSOME]
    _, _, distance = match_picks(detection.positions, truth, diameter / 2)
    assert np.median(distance) < diameter / 6
    assert detection.automatic and 0.2 <= detection.threshold < 0.9
    assert detection.score_map.shape == SHAPE and detection.score_map.dtype == np.float32


def test_threshold_and_max_picks_are_obeyed(trained, unseen):
    picker, _ = trained
    detection = pick(picker, unseen.tomogram, VOXEL, threshold=0.05, max_picks=7)
    assert len(detection.positions) == 7 and not detection.automatic
    assert np.all(np.diff(detection.scores) <= 0)
    assert np.all(detection.scores >= 0.05)


def test_a_tomogram_at_another_voxel_size_is_picked_in_its_own_voxels(trained, unseen):
    picker, diameter = trained
    binned = fourier_crop_to(unseen.tomogram, tuple(n // 2 for n in SHAPE))
    detection = pick(picker, binned, 2 * VOXEL)
    truth = unseen.particles.positions[unseen.particles.group_ids == RIBOSOME] / 2
    result = evaluate_picks(Picks("t", detection.positions), Picks("t", truth),
                            diameter / 4)["one_to_one"]
    assert result["f1"] >= 0.8, result


def test_one_round_of_corrections_raises_f1_on_a_third_phantom():
    # a first round whose negatives miss a look-alike class (beads and membrane
    # proteins only): it picks trimers too, as a user's first try might
    first = phantom(1)
    p = first.particles
    diameter = ribosome_diameter(first)
    picker = LearnedPicker.create(diameter * VOXEL, VOXEL, seed=0)
    picker.add_examples(first.tomogram, VOXEL, p.positions[p.group_ids == RIBOSOME][:10],
                        [g["center"] for g in first.gold[:5]]
                        + list(p.positions[p.group_ids == MEMBRANE_PROTEIN][:5]))
    picker.fit()
    second, third = (phantom(seed, shape=(64, 192, 192), n_particles=100) for seed in (2, 3))
    before, fractions_before = scored(pick(picker, third.tomogram, VOXEL), third, diameter)
    # the user's corrections on the second phantom: up to 5 false picks (away from
    # every ribosome) become negatives, up to 5 missed ribosomes positives
    detection = pick(picker, second.tomogram, VOXEL)
    truth = second.particles.positions[second.particles.group_ids == RIBOSOME]
    i, j, _ = match_picks(detection.positions, truth, diameter / 2)
    false = detection.positions[np.setdiff1d(np.arange(len(detection.positions)), i)]
    false = false[np.linalg.norm(false[:, None] - truth[None], axis=2).min(axis=1) > diameter / 2]
    missed = truth[np.setdiff1d(np.arange(len(truth)), j)]
    assert len(false) >= 3 and len(missed) >= 1, (len(false), len(missed))
    retrained = dataclasses.replace(picker, n_examples=dict(picker.n_examples), estimator=None)
    # corrections, not every particle of the second phantom: no background drawn there
    retrained.add_examples(second.tomogram, VOXEL, missed[:5], false[:5], background=False)
    retrained.fit()
    assert retrained.n_examples == {"positives": 10 + len(missed[:5]),
                                    "negatives": 10 + len(false[:5])}
    after, fractions_after = scored(pick(retrained, third.tomogram, VOXEL), third, diameter)
    print(f"corrections: {len(missed[:5])} misses, {len(false[:5])} false picks; F1 "
          f"{before['f1']:.3f} -> {after['f1']:.3f}; false picks {before['fp']} -> "
          f"{after['fp']}; fraction picked per class {fractions_before} -> {fractions_after}")
    assert after["f1"] >= before["f1"] + 0.05, (before, after)
    assert after["fp"] < before["fp"]


# ------------------------------------------------------------- persistence
def test_saved_model_reloads_to_identical_scores_and_is_versioned(trained, unseen, tmp_path):
    picker, _ = trained
    path = tmp_path / "model.npz"
    picker.save(path)
    again = LearnedPicker.load(path)
    assert again.n_examples == {"positives": 10, "negatives": 10}
    assert again.scales == picker.scales and again.working_voxel_size == picker.working_voxel_size
    crop = unseen.tomogram[:, :64, :64]
    np.testing.assert_array_equal(pick(again, crop, VOXEL).score_map,
                                  pick(picker, crop, VOXEL).score_map)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    assert header["format"] == "tomopick-learned-picker" and header["version"] == 1
    header["version"] = 2
    np.savez(tmp_path / "future.npz", **dict(arrays, header=np.array(json.dumps(header))))
    with pytest.raises(ModelFileError, match=r"future.npz: model format version 2"):
        LearnedPicker.load(tmp_path / "future.npz")
    with pytest.raises(ModelFileError, match=r"model not found: .*missing.npz"):
        LearnedPicker.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not a model")
    with pytest.raises(ModelFileError, match="junk.npz: not a readable"):
        LearnedPicker.load(tmp_path / "junk.npz")


def test_bad_examples_are_named():
    volume = np.random.default_rng(0).normal(size=(32, 48, 48)).astype(np.float32)
    picker = LearnedPicker.create(120.0, 10.0)
    picker.add_examples(volume, 10.0, [[20, 20, 16]])
    with pytest.raises(ValueError, match="at least 2 positive examples, got 1"):
        picker.fit()
    with pytest.raises(ValueError, match=r"positive pick 1 at \(60.0, 20.0, 16.0\) lies outside "
                                         r"the 48x48x32 tomogram"):
        picker.add_examples(volume, 10.0, [[20, 20, 16], [60, 20, 16]])
    with pytest.raises(ValueError, match="diameter must be positive"):
        LearnedPicker.create(0, 10.0)


def test_training_is_deterministic_for_a_seed():
    ph = phantom(5, shape=(48, 96, 96), n_particles=24)
    positives, negatives = examples(ph, 5)
    maps = []
    for _ in range(2):
        picker = LearnedPicker.create(ribosome_diameter(ph) * VOXEL, VOXEL, seed=7)
        picker.add_examples(ph.tomogram, VOXEL, positives, negatives)
        maps.append(pick(picker.fit(), ph.tomogram, VOXEL).score_map)
    np.testing.assert_array_equal(maps[0], maps[1])
