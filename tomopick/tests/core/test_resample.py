"""Fourier cropping (tomopick.core.resample): exact on band-limited data, no aliasing."""
import numpy as np
import pytest

from tomopick.core.resample import fourier_crop, fourier_crop_to


def _cosine(shape, cycles, phase=0.3):
    """cos(2 pi sum_k cycles_k (i_k - n_k // 2) / n_k + phase): band-limited by construction."""
    grids = np.meshgrid(*[(np.arange(n) - n // 2) / n for n in shape], indexing="ij")
    return np.cos(2 * np.pi * sum(c * g for c, g in zip(cycles, grids)) + phase)


@pytest.mark.parametrize("old,new", [((32, 30, 28), (16, 15, 14)), ((33, 31, 29), (20, 17, 11)),
                                     ((24, 24, 24), (24, 12, 7))])
def test_band_limited_volume_is_resampled_exactly_about_the_centre_voxel(old, new):
    # a few cycles per box, below every new Nyquist: the crop is the same
    # continuous function sampled on the coarser grid, centre on centre
    cycles = (2, -3, 1)
    volume = 1.5 + _cosine(old, cycles) + 0.5 * _cosine(old, (1, 1, -2), phase=-1.0)
    expected = 1.5 + _cosine(new, cycles) + 0.5 * _cosine(new, (1, 1, -2), phase=-1.0)
    out = fourier_crop_to(volume, new)
    assert out.dtype == np.float32 and out.shape == new
    np.testing.assert_allclose(out, expected, atol=2e-5)       # float32 rounding only


def test_frequencies_beyond_the_new_nyquist_are_removed_not_aliased():
    # 12 cycles per 32 voxels exceed the Nyquist of 16 voxels (8): dropped, so
    # only the mean is left; decimation (every other voxel) would alias them to 4
    volume = 2.0 + _cosine((32, 32, 32), (12, 0, 0))
    out = fourier_crop_to(volume, (16, 16, 16))
    np.testing.assert_allclose(out, 2.0, atol=1e-5)
    assert np.abs(volume[::2, ::2, ::2] - 2.0).max() > 0.9


def test_mean_is_kept_and_a_feature_moves_in_proportion_to_the_centre():
    z, y, x = np.indices((64, 64, 64), dtype=float) - 32
    blob = np.exp(-0.5 * ((x - 8) ** 2 + y ** 2 + (z + 12) ** 2) / 3.0 ** 2)
    out = fourier_crop(blob, 2)
    assert out.shape == (32, 32, 32)
    assert out.mean() == pytest.approx(blob.mean(), rel=1e-5)
    weights = np.clip(out, 0, None)
    centroid = [(np.indices(out.shape)[k] * weights).sum() / weights.sum() - 16 for k in range(3)]
    np.testing.assert_allclose(centroid, [-6, 0, 4], atol=0.01)   # offsets (z, y, x) halved


def test_only_the_given_axes_of_a_stack_are_cropped_each_item_as_alone():
    rng = np.random.default_rng(0)
    stack = rng.standard_normal((3, 16, 16, 16)).astype(np.float32)
    out = fourier_crop_to(stack, (8, 8, 8), axes=(1, 2, 3))
    assert out.shape == (3, 8, 8, 8)
    for item, cropped in zip(stack, out):
        np.testing.assert_allclose(cropped, fourier_crop_to(item, (8, 8, 8)), atol=1e-6)


def test_factor_one_copies_and_shapes_follow_the_rounded_factor():
    volume = np.arange(27.0).reshape(3, 3, 3)
    same = fourier_crop(volume, 1)
    np.testing.assert_array_equal(same, volume)
    assert same is not volume
    assert fourier_crop(np.zeros((40, 30, 21)), 3).shape == (13, 10, 7)


def test_growing_or_mismatched_shapes_and_factors_below_one_are_errors():
    with pytest.raises(ValueError, match=">= 1"):
        fourier_crop(np.zeros((8, 8, 8)), 0.5)
    with pytest.raises(ValueError, match="cannot Fourier-crop"):
        fourier_crop_to(np.zeros((8, 8, 8)), (9, 8, 8))
    with pytest.raises(ValueError, match="cannot Fourier-crop"):
        fourier_crop_to(np.zeros((8, 8, 8)), (4, 4))


@pytest.mark.parametrize("shape,binning,slab", [((24, 32, 40), 2, 8), ((33, 50, 51), 2, 3),
                                                ((30, 45, 17), 3, 4), ((40, 40, 40), 4, 40)])
def test_streamed_binning_equals_the_whole_volume_crop_of_the_mean_padded_volume(
        tmp_path, shape, binning, slab):
    # fourier_bin crops one axis at a time on slabs of a memory map; the result
    # must be the one-shot crop of the volume padded (far end) with its mean,
    # Nyquist convention included, to float32 rounding
    from tomopick.core.formats.mrc import read_mrc, write_mrc
    from tomopick.core.resample import binned_shape, fourier_bin

    rng = np.random.default_rng(1)
    volume = (2.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    new = binned_shape(shape, binning)
    padded = np.full([m * binning for m in new], volume.mean(dtype=np.float64), np.float32)
    padded[:shape[0], :shape[1], :shape[2]] = volume
    expected = fourier_crop_to(padded, new)
    write_mrc(tmp_path / "v.mrc", volume, 1.0)
    out = fourier_bin(read_mrc(tmp_path / "v.mrc", mmap=True), binning, slab=slab)
    assert out.dtype == np.float32 and out.shape == new
    np.testing.assert_allclose(out, expected, atol=1e-5 * np.abs(expected).max())
    # and the voxel n // 2 of the padded volume is still the one landing on m // 2
    spike = np.zeros(shape, np.float32)
    spike[tuple(m * binning // 2 for m in new)] = 1
    peak = np.unravel_index(fourier_bin(spike, binning, slab=slab).argmax(), new)
    assert peak == tuple(m // 2 for m in new)


@pytest.mark.parametrize("shape,new", [((33, 31, 29), (20, 17, 11)), ((16, 40, 9), (16, 13, 9)),
                                       ((10, 12, 14), (10, 12, 14))])
def test_slab_wise_crop_of_a_memory_map_equals_the_one_shot_crop(tmp_path, shape, new):
    from tomopick.core.formats.mrc import read_mrc, write_mrc
    from tomopick.core.resample import fourier_crop_slabs

    volume = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    write_mrc(tmp_path / "v.mrc", volume, 1.0)
    out = fourier_crop_slabs(read_mrc(tmp_path / "v.mrc", mmap=True), new, slab=5)
    assert out.dtype == np.float32 and out.shape == new
    np.testing.assert_allclose(out, fourier_crop_to(volume, new), atol=2e-6)
    with pytest.raises(ValueError, match="cannot Fourier-crop"):
        fourier_crop_slabs(volume, (shape[0] + 1,) + shape[1:])
