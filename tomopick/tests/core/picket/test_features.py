"""PickET's features computed as filters equal PickET's window definitions."""
import numpy as np

from tomopick.core.picket import features as pf
from tomopick.core.picket import segment as seg
from tomopick.tests.core.picket.reference import N, blobs, picket_fft_features, picket_gabor_bank, picket_windows


def test_fft_filter_magnitudes_equal_picket_window_fft():
    u = blobs()
    windows = picket_windows(u, N)
    reference = picket_fft_features(windows).reshape(-1, N, N, N)
    fast = pf._fft_magnitudes(pf.pad_volume(u, N), N)          # (63, nz, ny, nx)
    freqs, weights = pf._fft_half_indices(N)
    assert len(freqs) == (N ** 3 + 1) // 2 and weights.sum() == N ** 3
    h = N // 2
    for row, (kz, ky, kx) in enumerate(freqs):
        # fftshift puts frequency k at index k + n//2
        ref = reference[:, kz + h, ky + h, kx + h].reshape(u.shape)
        partner = reference[:, -kz + h, -ky + h, -kx + h].reshape(u.shape)
        scale = np.abs(ref).max()
        assert np.abs(fast[row] - ref).max() <= 2e-6 * max(scale, 1) + 1e-5
        # the dropped half duplicates the kept one exactly (conjugate symmetry)
        assert np.allclose(partner, ref, atol=1e-5 * max(scale, 1))


def test_intensity_features_are_the_window_values():
    u = blobs()
    reference = picket_windows(u, N).reshape(-1, N ** 3)
    fast = pf.feature_volumes(u, N, "intensities").reshape(N ** 3, -1).T
    assert np.abs(fast - reference).max() < 1e-5


def test_gabor_bank_is_picket_bank_and_filter_responses_equal_window_products():
    ours, freqs = pf.gabor_bank(N)
    theirs = picket_gabor_bank(N)
    # same set of filters (PickET's meshgrid swaps the first two axes' names)
    assert ours.shape == theirs.shape == (1000, N ** 3)
    dist = ((ours[:, None, :] - theirs[None, :, :]) ** 2).sum(axis=2)
    assert np.sqrt(dist.min(axis=1)).max() < 1e-5
    assert np.sqrt(dist.min(axis=0)).max() < 1e-5
    u = blobs()
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    selected = theirs[np.argsort(np.std(windows @ theirs.T, axis=0))[-64:]]
    ours_sel = ours[pf.select_gabor_filters(windows, ours, 64)]
    # the top-64 sets agree (as sets: filters tied in std may swap order)
    assert np.sqrt(((ours_sel[:, None] - selected[None]) ** 2).sum(2).min(1)).max() < 1e-5
    fast = pf.feature_volumes(u, N, "Gabor", ours_sel).reshape(64, -1).T
    reference = windows @ ours_sel.T
    assert np.abs(fast - reference).max() < 2e-5 * np.abs(reference).max()


def test_fast_features_cover_the_border_without_a_frame():
    u = blobs()
    margin = np.zeros(u.shape, np.float32)
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = seg.fit_model(windows[::3], N, "intensities", "KMeans")
    seg.predict_margin(u, model, (0, u.shape[0] - 1), margin)
    # every voxel is classified: no unlabelled frame that PickET later turns into "particle"
    assert np.all(margin != 0)


def test_sampled_windows_and_chunks_are_those_of_the_padded_volume():
    # sampling and prediction never pad the whole volume: windows reaching past
    # a face, and chunks at either end, must still be PickET's symmetric padding
    u = blobs()
    nz, ny, nx = u.shape
    reference = picket_windows(u, N).reshape(nz, ny, nx, N ** 3)
    z, y, x = np.meshgrid([0, 1, 7, nz - 2, nz - 1], [0, 1, ny - 1], [0, 5, nx - 2, nx - 1],
                          indexing="ij")
    centres = np.column_stack([z.ravel(), y.ravel(), x.ravel()])
    expected = reference[z, y, x].reshape(-1, N ** 3)
    assert np.array_equal(pf._sample_windows(u, centres, N), expected)
    padded = pf.pad_volume(u, N)
    for z0, z1 in ((0, 3), (0, nz), (5, 9), (nz - 1, nz), (1, 2)):
        assert np.array_equal(pf.pad_chunk(u, z0, z1, N), padded[z0:z1 + N - 1])
