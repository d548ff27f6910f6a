"""Denoising MRC files: geometry kept, streaming memory (tomopick.core.denoise.files)."""
import tracemalloc

import mrcfile
import numpy as np
import pytest

from tomopick.core import denoise


def _write(path, data, voxel=(7.5, 7.5, 7.5), origin=(-120.0, 33.0, 4.5)):
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel
        mrc.header.origin = origin
    return path


def test_denoise_file_keeps_geometry_and_equals_in_memory_result(tmp_path, step_volume):
    src = _write(tmp_path / "in.mrc", step_volume)
    info = denoise.denoise_file(src, tmp_path / "out.mrc", "EED", n_iter=3, slab_size=5,
                                n_threads=2)
    with mrcfile.open(str(tmp_path / "out.mrc")) as mrc:
        np.testing.assert_array_equal(mrc.data, denoise.eed(step_volume, n_iter=3))
        assert mrc.data.dtype == np.float32
        assert tuple(float(v) for v in mrc.voxel_size.tolist()) == (7.5, 7.5, 7.5)
        origin = mrc.header.origin
        assert (float(origin.x), float(origin.y), float(origin.z)) == (-120.0, 33.0, 4.5)
        assert np.isclose(float(mrc.header.dmean), float(mrc.data.mean()), atol=1e-5)
        assert np.isclose(float(mrc.header.rms), float(mrc.data.std()), rtol=1e-4)
    assert info["origin"] == (-120.0, 33.0, 4.5) and not info["passed_through"]
    assert not (tmp_path / "out.mrc.part").exists()


def test_denoise_file_can_write_another_voxel_size(tmp_path, step_volume):
    src = _write(tmp_path / "in.mrc", step_volume)
    denoise.denoise_file(src, tmp_path / "out.mrc", "BFlow", n_iter_bflow=1, voxel_size=3.0)
    with mrcfile.open(str(tmp_path / "out.mrc")) as mrc:
        assert tuple(float(v) for v in mrc.voxel_size.tolist()) == (3.0, 3.0, 3.0)
        assert float(mrc.header.origin.x) == -120.0


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_denoise_file_rejects_nan_and_passes_constant_through(tmp_path):
    bad = _write(tmp_path / "nan.mrc", np.full((4, 5, 6), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="nan.mrc: 120 of 120 voxels are NaN"):
        denoise.denoise_file(bad, tmp_path / "out.mrc", "BFlow")
    assert not (tmp_path / "out.mrc").exists()
    flat = _write(tmp_path / "flat.mrc", np.full((4, 5, 6), -3, dtype=np.float32))
    info = denoise.denoise_file(flat, tmp_path / "out.mrc", "EED")
    assert info["passed_through"]
    with mrcfile.open(str(tmp_path / "out.mrc")) as mrc:
        assert (mrc.data == -3).all()


def test_denoise_file_peak_memory_is_about_one_volume(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((48, 160, 160)).astype(np.float32)    # 4.7 MiB
    src = _write(tmp_path / "big.mrc", volume)
    del volume
    tracemalloc.start()
    try:
        denoise.denoise_file(src, tmp_path / "out.mrc", "EED", n_iter=2, slab_size=8,
                             tile=(40, 40))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nbytes = 48 * 160 * 160 * 4
    # working volume + one slab of output + halo planes + ~12 padded tiles of 16 x 48 x 48
    assert peak < 1.45 * nbytes + 12 * 16 * 48 * 48 * 4 + 2**20, peak / nbytes
