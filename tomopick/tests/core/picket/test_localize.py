"""Stage 2: objects of the particle mask, split, filtered and scored."""
import numpy as np
import scipy.ndimage as ndi

from tomopick.core.picket import localize as pl


def test_watershed_splits_touching_spheres_that_connected_components_merge():
    z, y, x = np.indices((40, 40, 60))
    mask = (((x - 22) ** 2 + (y - 20) ** 2 + (z - 20) ** 2) < 81) | \
           (((x - 38) ** 2 + (y - 20) ** 2 + (z - 20) ** 2) < 81)
    cc = pl.localize_particles(mask, "connected components", particle_diameter=18)
    ws = pl.localize_particles(mask, "watershed", particle_diameter=18)
    assert len(cc["positions"]) == 1
    assert len(ws["positions"]) == 2
    assert np.allclose(np.sort(ws["positions"][:, 0]), [22, 38], atol=1.0)


def test_size_filter_and_edge_slivers_are_dropped_but_edge_particles_kept():
    mask = np.zeros((40, 40, 40), bool)
    z, y, x = np.indices(mask.shape)
    mask[((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2) < 36] = True     # particle
    mask[((x - 3) ** 2 + (y - 30) ** 2 + (z - 10) ** 2) < 36] = True      # cut by x = 0
    mask[1, 1, 1] = True                                                   # noise voxel
    mask[:, :, 39] = True                                                  # face artefact
    out = pl.localize_particles(mask, "connected components", particle_diameter=12,
                                evidence=mask.astype(float))
    kept = out["positions"]
    assert len(kept) == 2
    assert np.allclose(kept[np.argsort(kept[:, 0])][1], (20, 20, 20), atol=0.01)
    assert abs(kept[:, 0].min() - 3.4) < 1.0                               # edge particle
    assert out["n_too_small"] == 1
    assert out["n_too_large"] + out["n_edge_slivers"] == 1
    assert np.allclose(out["scores"], out["volumes"])


def test_slab_by_slab_watershed_of_a_large_network_equals_the_whole_box(monkeypatch):
    rng = np.random.default_rng(5)
    z, y, x = np.indices((72, 40, 40))
    mask = np.zeros(z.shape, bool)
    # a chain of touching spheres of random radii winding through z: one component
    centre = np.array([20.0, 20.0, 6.0])
    while centre[2] < 66:
        r = rng.uniform(4, 6)
        mask |= ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) < r * r
        centre = centre + [rng.uniform(-3, 3), rng.uniform(-3, 3), 1.6 * r]
    assert ndi.label(mask)[1] == 1
    whole = pl.split_watershed(mask, 4)
    monkeypatch.setattr(pl, "SLAB_VOXELS", 20 * 40 * 40)       # slabs of ~20 slices
    slabs = pl.split_watershed(mask, 4)
    assert whole.max() == slabs.max() > 5
    # the same regions (up to renumbering)
    pairs = {(a, b) for a, b in zip(whole[mask], slabs[mask])}
    assert len(pairs) == whole.max()


def _balls(shape, centres, radius):
    z, y, x = np.indices(shape)
    mask = np.zeros(shape, bool)
    for cx, cy, cz in centres:
        mask |= (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius ** 2
    return mask, (z, y, x)


def test_a_ball_is_kept_a_disc_of_its_volume_dropped_and_a_touching_pair_split():
    # particles of diameter 12: three single balls, a pair with centres 10
    # apart (one component, twice the mass), a disc 4 voxels thick with the
    # volume of a ball (radius 8.5: pi 8.5^2 4 = 908 ~ 4/3 pi 6^3 = 905)
    singles = [(20, 20, 24), (50, 20, 24), (80, 20, 24)]
    mask, (z, y, x) = _balls((48, 64, 140), singles + [(105, 20, 24), (115, 20, 24)], 6)
    disc = ((x - 30) ** 2 + (y - 48) ** 2 <= 8.5 ** 2) & (z >= 22) & (z <= 25)
    mask |= disc
    assert abs(disc.sum() / mask[:, :, :35][:, :30].sum() - 1) < 0.1   # same volume as a ball
    out = pl.localize_particles(mask, "connected components", particle_diameter=12,
                                evidence=mask.astype(np.float32))
    found = out["positions"][np.argsort(out["positions"][:, 0])]
    assert np.allclose(found, singles + [(105, 20, 24), (115, 20, 24)], atol=1.0)
    assert out["n_flat"] == 1 and out["n_split"] == 1
    # a ball measures its own diameter along every principal axis
    assert np.allclose(out["widths"][:3], 12, atol=0.6)
    # without the filters the disc is a pick and the pair one pick between the two
    plain = pl.localize_particles(mask, "connected components", particle_diameter=12,
                                  evidence=mask.astype(np.float32), min_flatness=0,
                                  min_blobness=0, split_mass_factor=0)
    assert len(plain["positions"]) == 5
    assert np.any(np.all(np.abs(plain["positions"] - (110, 20, 24)) < 1, axis=1))


def test_pieces_of_a_membrane_are_dropped_by_their_blobness():
    # three particles (diameter 12) and a vesicle: a spherical membrane 7
    # voxels thick of radius 24 (4 particle diameters across), which the
    # watershed cuts into particle-sized pieces, not flat by their own moments
    singles = [(16, 16, 30), (16, 56, 30), (16, 96, 30)]
    mask, (z, y, x) = _balls((60, 112, 136), singles, 6)
    r = np.sqrt((x - 90.0) ** 2 + (y - 56.0) ** 2 + (z - 30.0) ** 2)
    mask |= np.abs(r - 24) <= 3.5
    evidence = mask.astype(np.float32)
    out = pl.localize_particles(mask, "watershed", particle_diameter=12, evidence=evidence)
    assert np.allclose(out["positions"][np.argsort(out["positions"][:, 1])], singles, atol=0.5)
    assert out["n_sheets"] >= 5
    without = pl.localize_particles(mask, "watershed", particle_diameter=12, evidence=evidence,
                                    min_blobness=0)
    # the membrane's pieces pass every other filter
    assert len(without["positions"]) >= 3 + out["n_sheets"]
    assert np.all(pl.object_blobness(mask, out["labels"], [1, 2, 3], 12) > 0.9)


def test_evidence_gives_a_flat_distance_ridge_one_marker():
    # a rod of radius 3 and length 30: its distance map is a flat ridge along
    # the axis, on which the distance alone puts a marker every min_distance
    z, y, x = np.indices((12, 12, 40))
    rod = ((y - 6) ** 2 + (z - 6) ** 2 <= 9) & (x >= 5) & (x < 35)
    alone = pl.split_watershed(rod, min_distance=4)
    evidence = np.exp(-((x - 20.0) ** 2) / 200.0).astype(np.float32) * rod
    tied = pl.split_watershed(rod, min_distance=4, evidence=evidence)
    assert alone.max() >= 3
    assert tied.max() == 1 and np.array_equal(tied > 0, rod)


def test_blobness_does_not_depend_on_the_slabs():
    z, y, x = np.indices((30, 40, 60))
    mask = ((x - 15) ** 2 + (y - 20) ** 2 + (z - 15) ** 2 <= 36)          # a ball
    mask |= (abs(z - 15) <= 2) & (abs(y - 20) < 15) & (x > 30) & (x < 58)   # a sheet
    labels, n = ndi.label(mask)
    whole = pl.object_blobness(mask, labels, [1, 2], 12)
    for slab in (40 * 60, 7 * 40 * 60):              # one slice, seven slices at a time
        assert np.array_equal(pl.object_blobness(mask, labels, [1, 2], 12, slab_voxels=slab),
                              whole)
    ball, sheet = whole if labels[15, 20, 15] == 1 else whole[::-1]
    assert ball > 0.9 and sheet < pl.SHEET_BLOBNESS
