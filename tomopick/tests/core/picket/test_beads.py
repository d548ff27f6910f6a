"""Gold beads are found, cut out of the PickET mask, and never invented."""
import numpy as np
import pytest

from tomopick.core import picket as pk
from tomopick.core.evaluate import evaluate_picks
from tomopick.core.picket.beads import find_gold_beads
from tomopick.core.formats import read_mrc
from tomopick.core.simulate import simulate_tomogram
from tomopick.tests.shared_data import data_file

WORKFLOWS = [(m, c) for m in ("FFT", "Gabor", "intensities") for c in ("KMeans", "GMM")]


@pytest.fixture(scope="module")
def gold_lamella():
    # 40 ribosome-like particles of ~16 voxels and four 10 nm beads (radius
    # 2.8 voxels) near the surfaces, 64 x 128 x 128, wedge +-60, SNR 0.15
    return simulate_tomogram(shape=(64, 128, 128), voxel_size=18.0, particle_classes=(4,),
                             n_particles=40, n_vesicles=0, n_gold=4, snr=0.15, seed=0)


@pytest.mark.parametrize("mode, clusterer", [("Gabor", "GMM"), ("FFT", "KMeans")])
def test_beads_are_found_and_cut_out(gold_lamella, mode, clusterer):
    ph = gold_lamella
    diameter = float(np.median(ph.particle_info["diameter"]))
    truth = np.array([g["center"] for g in ph.gold])
    segs = {gc: pk.segment_tomogram(ph.tomogram, mode, clusterer, particle_diameter=diameter,
                                    max_fit_neighborhoods=30000, gold_contrast=gc)
            for gc in (0, pk.segment.GOLD_CONTRAST)}
    beads = segs[pk.segment.GOLD_CONTRAST].gold_beads
    assert segs[0].gold_beads is None
    # every bead, at its place and size (measured: within 0.4 voxel, radii 2.5-3.0)
    assert len(beads) == len(truth)
    distance = np.linalg.norm(beads.positions[:, None] - truth[None], axis=2)
    assert np.all(distance.min(axis=1) < 1.0), distance.min(axis=1)
    assert len(set(distance.argmin(axis=1))) == len(truth)
    assert np.allclose(beads.radii, ph.gold[0]["radius"], atol=0.6), beads.radii
    assert np.all(beads.contrast > pk.segment.GOLD_CONTRAST)
    # no particle centre fits closer than a particle radius: nothing of the mask
    # is left there (measured: the nearest voxel 8.7 voxels from a centre)
    seg = segs[pk.segment.GOLD_CONTRAST]
    z, y, x = np.nonzero(seg.mask)
    voxels = np.column_stack([x, y, z]) * seg.grid_step
    nearest = np.linalg.norm(voxels[:, None] - truth[None], axis=2).min()
    assert nearest > diameter / 2, nearest
    # connected components no longer lose the particles the beads' halos touch
    # nor pick halo fragments (measured, seed 0: Gabor GMM 0.71 -> 0.95, FFT
    # KMeans 0.83 -> 0.96; seeds 1-3: +0.10 to +0.24), the watershed keeps its F1
    f1 = {(gc, loc): evaluate_picks(pk.localize_segmentation(s, loc, diameter,
                                                             tomo_id="phantom")[0],
                                    ph.particles, diameter / 2)["one_to_one"]["f1"]
          for gc, s in segs.items() for loc in pk.LOCALIZATIONS}
    with_, without = pk.segment.GOLD_CONTRAST, 0
    assert f1[with_, "connected components"] > f1[without, "connected components"] + 0.1, f1
    assert f1[with_, "connected components"] >= 0.9, f1
    assert f1[with_, "watershed"] >= max(0.95, f1[without, "watershed"] - 0.02), f1


def test_no_bead_is_invented(phantom):
    # no gold in this phantom: no workflow's mask, good or noisy, yields a bead
    diameter = float(np.median(phantom.particle_info["diameter"]))
    for mode, clusterer in WORKFLOWS:
        seg = pk.segment_tomogram(phantom.tomogram, mode, clusterer,
                                  particle_diameter=diameter, max_fit_neighborhoods=20000)
        assert len(seg.gold_beads) == 0, (mode, clusterer, seg.gold_beads)


@pytest.mark.parametrize("diameter", [10, 14])
def test_no_bead_in_a_real_tomogram_without_gold(diameter):
    # a real cryo-ET crop (a microtubule in ice, 36 x 206 x 94 at 10.52 A,
    # density bright): its densest spots are protein, whatever the workflow.
    # (With a 6-voxel diameter, wrong for it, the KMeans workflows report one
    # bead at 2.3-2.4 median particle peaks: the microtubule wall's densest spot.)
    volume = read_mrc(data_file("real_tomogram_crop_microtubule_13pf_10.52A.mrc"))
    for mode, clusterer in WORKFLOWS:
        seg = pk.segment_tomogram(np.asarray(volume, np.float32), mode, clusterer,
                                  particle_diameter=diameter, max_fit_neighborhoods=20000)
        assert len(seg.gold_beads) == 0, (mode, clusterer, seg.gold_beads)


def test_a_noise_mask_yields_no_bead():
    # a mask of noise blobs has a low median peak: the particles then look
    # like beads, but far too many of them to be beads
    rng = np.random.default_rng(0)
    z, y, x = np.indices((48, 96, 96))
    volume = rng.normal(0, 0.01, z.shape).astype(np.float32)
    centres = rng.uniform([8, 8, 8], [88, 88, 40], (30, 3))
    for cx, cy, cz in centres:
        volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= 16] -= 0.2
    noise_mask = volume < np.quantile(volume, 0.3)
    cut = noise_mask.copy()
    beads = find_gold_beads(volume, cut, particle_diameter=8, cut=True)
    assert len(beads) == 0 and np.array_equal(cut, noise_mask)
    with pytest.raises(ValueError, match="differ in shape"):
        find_gold_beads(volume, noise_mask[1:], particle_diameter=8)
