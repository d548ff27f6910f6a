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
