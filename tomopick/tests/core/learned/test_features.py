"""tomopick.core.learned.features: eigenvalues, slabs with halo, the working grid."""
import numpy as np
import pytest

from tomopick.core.learned import feature_names, features_at, working_volume
from tomopick.core.learned.features import block_bounds, block_features, symmetric_eigenvalues


def test_closed_form_eigenvalues_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3, 3))
    a = a + a.transpose(0, 2, 1)
    a[:5] = np.eye(3) * 2.0                             # a triple eigenvalue
    entries = [a[:, i, j] for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
    # the closed form loses about sqrt(machine epsilon) at a triple eigenvalue
    np.testing.assert_allclose(symmetric_eigenvalues(*entries).T, np.linalg.eigvalsh(a),
                               atol=1e-6)


def test_blocks_with_halo_equal_the_whole_volume_stack():
    rng = np.random.default_rng(3)
    work = rng.normal(size=(40, 34, 30)).astype(np.float32)
    scales = (1.0, 2.0)
    whole = block_features(work, (slice(0, 40), slice(0, 34), slice(0, 30)), scales)
    assert whole.shape == (len(feature_names(scales)), 40, 34, 30)
    # blocks cut along every axis, inside and at the faces (halo of 14 voxels)
    blocks = block_bounds(work.shape, scales, memory_mb=1)
    assert len(blocks) > 8 and {b[1].stop for b in blocks} > {34}
    parts = np.zeros_like(whole)
    for block in blocks:
        parts[(slice(None),) + block] = block_features(work, block, scales)
    np.testing.assert_allclose(parts, whole, atol=1e-4 * np.abs(whole).max())
    zyx = np.array([[3, 4, 5], [39, 0, 29], [20, 17, 15]])
    np.testing.assert_allclose(features_at(work, zyx, scales, memory_mb=2),
                               whole[:, zyx[:, 0], zyx[:, 1], zyx[:, 2]].T, atol=1e-5)


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




def test_tomogram_is_read_and_its_map_written_slab_by_slab_as_if_whole(tmp_path):
    # the working volume of a memory-mapped tomogram is its whole-volume Fourier
    # crop, standardised; the map brought back is written into a memory-mapped
    # file slab by slab, equal to one whole-volume trilinear resampling
    import scipy.ndimage as ndi
    from tomopick.core.formats import create_mrc, read_mrc, write_mrc
    from tomopick.core.resample import fourier_crop_to

    rng = np.random.default_rng(5)
    volume = (3.0 + 2.0 * rng.normal(size=(21, 34, 45))).astype(np.float32)
    write_mrc(tmp_path / "t.mrc", volume, 10.0)
    work, grid = working_volume(read_mrc(tmp_path / "t.mrc", mmap=True), 10.0, 17.0)
    expected = fourier_crop_to(volume, (12, 20, 26))
    expected = (expected - expected.mean(dtype=np.float64)) / expected.std(dtype=np.float64)
    assert work.shape == (12, 20, 26)
    np.testing.assert_allclose(work, expected, atol=1e-5)
    scale = np.array(work.shape) / np.array(volume.shape)
    whole = ndi.affine_transform(work, np.diag(scale),
                                 offset=np.array([6, 10, 13]) - np.array([10, 17, 22]) * scale,
                                 output_shape=volume.shape, order=1, mode="nearest")
    with create_mrc(tmp_path / "map.mrc", volume.shape, 10.0) as mrc:
        assert grid.upsample(work, out=mrc.data, slab=4) is mrc.data
    np.testing.assert_allclose(read_mrc(tmp_path / "map.mrc"), whole, atol=1e-5)
    with pytest.raises(ValueError, match="output has shape"):
        grid.upsample(work, out=np.zeros((3, 3, 3), np.float32))
