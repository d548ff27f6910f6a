import numpy as np
import pytest
import scipy.ndimage as ndi

from tomopick.core.picket.blur import gaussian_slab


@pytest.mark.parametrize("mode", ["reflect", "nearest"])
@pytest.mark.parametrize("nz", [3, 11, 40])
def test_slabs_equal_scipy_blur_of_the_whole_volume(mode, nz):
    # slabs in the middle, at both faces, and a volume thinner than the
    # kernel's reach (the face boundary reflected more than once)
    volume = np.random.default_rng(nz).normal(size=(nz, 14, 17)).astype(np.float32)
    for sigma, truncate in ((2.0, 4.0), (1.3, 3.0)):
        whole = ndi.gaussian_filter(volume, sigma, mode=mode, truncate=truncate)
        slabs = {(0, nz), (0, min(nz, 4)), (nz // 2, nz), (nz // 3, max(nz // 3 + 1, nz - 2))}
        for z0, z1 in slabs:
            slab = gaussian_slab(volume, z0, z1, sigma, truncate=truncate, mode=mode)
            # float32 sums in another order than scipy's float64 ones
            np.testing.assert_allclose(slab, whole[z0:z1], rtol=0, atol=2e-6)


def test_writes_into_the_given_array_and_rejects_other_modes():
    volume = np.random.default_rng(0).normal(size=(10, 8, 8)).astype(np.float32)
    out = np.zeros((10, 8, 8), np.float32)
    assert gaussian_slab(volume, 0, 10, 1.0, out=out) is out
    np.testing.assert_allclose(out, ndi.gaussian_filter(volume, 1.0), atol=2e-6)
    with pytest.raises(ValueError, match="mode"):
        gaussian_slab(volume, 0, 10, 1.0, mode="wrap")


def test_hessians_are_numpys_second_differences_with_nearest_faces():
    from tomopick.core.picket.blur import hessian_at
    volume = np.random.default_rng(1).normal(size=(6, 7, 8))
    # the same field continued by its edge values, differenced with numpy
    padded = np.pad(volume, 1, mode="edge")
    first = np.gradient(padded)
    second = [[np.gradient(first[i], axis=j) for j in range(3)] for i in range(3)]
    points = np.argwhere(np.ones(volume.shape, bool))        # faces included
    got = hessian_at(volume, points, np.float64)
    # cross terms: numpy's central difference, along one axis, of its central
    # difference along another
    for i in range(3):
        for j in range(3):
            if i != j:
                np.testing.assert_allclose(got[:, i, j], second[i][j][tuple((points + 1).T)],
                                           atol=1e-12)
    assert np.allclose(got, got.transpose(0, 2, 1))
    # on the diagonal: f(x+1) - 2 f(x) + f(x-1), edge values beyond the faces
    np.testing.assert_allclose(got[:, 2, 2], (padded[1:-1, 1:-1, 2:] - 2 * volume
                                              + padded[1:-1, 1:-1, :-2]).ravel(), atol=1e-12)
