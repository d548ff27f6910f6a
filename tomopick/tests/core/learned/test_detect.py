"""tomopick.core.learned.detect on phantoms: F1 per class, threshold, voxel size, corrections."""
import dataclasses

import numpy as np

from tomopick.core.evaluate import evaluate_picks, match_picks
from tomopick.core.learned import LearnedPicker, pick
from tomopick.core.picks import Picks
from tomopick.core.resample import fourier_crop_to

from .phantoms import (GOLD, MEMBRANE_PROTEIN, RIBOSOME, RING, ROD, SHAPE, TRIMER, VOXEL,
                       phantom, ribosome_diameter, scored)


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


