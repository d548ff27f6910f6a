"""Stage 1: predictions equal the clusterers', ranges and the particle class are found."""
import numpy as np
import pytest
import scipy.ndimage as ndi
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from tomopick.core import picket as pk
from tomopick.core.evaluate import evaluate_picks
from tomopick.core.picket import features as pf
from tomopick.core.picket import localize as pl
from tomopick.core.picket import segment as seg
from tomopick.core.simulate import simulate_tomogram
from tomopick.tests.core.picket.reference import N, blobs, picket_fft_features, picket_windows


@pytest.mark.parametrize("mode", ["FFT", "Gabor", "intensities"])
def test_kmeans_filter_prediction_equals_kmeans_predict_on_window_features(mode):
    u = blobs()
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = seg.fit_model(windows[::4], N, mode, "KMeans", seed=3)
    margin = np.zeros(u.shape, np.float32)
    seg.predict_margin(u, model, (0, u.shape[0] - 1), margin)
    features = pf.window_features(windows, N, mode, model.gabor_filters) * model.feature_scale
    km_labels = np.argmin(((features[:, None, :] - model.info["centers"][None]) ** 2)
                          .sum(axis=2), axis=1)
    fast = (margin.ravel() > 0).astype(int)
    # identical except where a voxel is equidistant to float precision
    assert (fast == km_labels).mean() > 0.9999


def test_fft_half_space_with_sqrt2_weights_gives_the_full_fft_kmeans():
    u = blobs(seed=4)
    windows = picket_windows(u, N)
    full = picket_fft_features(windows).astype(np.float64)
    half = (pf._window_fft_magnitudes(windows.reshape(-1, N ** 3), N)
            * np.sqrt(pf._fft_half_indices(N)[1])).astype(np.float64)
    # every Euclidean distance is the same, so KMeans (same seed) labels agree
    d_full = ((full[:50, None] - full[None, 50:100]) ** 2).sum(2)
    d_half = ((half[:50, None] - half[None, 50:100]) ** 2).sum(2)
    assert np.allclose(d_full, d_half, rtol=1e-4)
    a = KMeans(2, random_state=0, n_init=1).fit_predict(full)
    b = KMeans(2, random_state=0, n_init=1).fit_predict(half)
    assert max((a == b).mean(), (a != b).mean()) > 0.999


@pytest.mark.parametrize("mode", ["FFT", "Gabor", "intensities"])
def test_gmm_margin_is_the_mixtures_posterior_log_odds(mode, phantom_slab):
    u = phantom_slab
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = seg.fit_model(windows[::4], N, mode, "GMM", seed=0)
    margin = np.zeros(u.shape, np.float32)
    seg.predict_margin(u, model, (0, u.shape[0] - 1), margin)
    # the same voxels through scikit-learn: principal-component scores, then the mixture
    weighted = pf.window_features(windows, N, mode, model.gabor_filters) * model.feature_scale
    pca = PCA(random_state=0).fit(weighted[::4].astype(np.float64))
    scores = pca.transform(weighted.astype(np.float64))[:, :model.info["pca_components"]]
    proba = np.clip(model.gmm.predict_proba(scores), 1e-300, None)
    log_odds = np.log(proba[:, 1]) - np.log(proba[:, 0])
    finite = np.abs(log_odds) < 30          # beyond, the probabilities saturate
    error = np.abs(margin.ravel() - log_odds)[finite]
    print(f"{mode}: |margin - log-odds| max {error.max():.2e} over {finite.sum()} voxels")
    assert error.max() < 1e-2
    assert ((margin.ravel() > 0) == model.gmm.predict(scores)).mean() > 0.9999


@pytest.mark.parametrize("mode", ["FFT", "Gabor", "intensities"])
def test_gmm_on_principal_components_agrees_with_full_feature_gmm(mode, phantom_slab):
    u = phantom_slab
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = seg.fit_model(windows[::4], N, mode, "GMM", seed=0)
    features = pf.window_features(windows, N, mode, model.gabor_filters)
    full_features = features
    if mode == "FFT":      # PickET's GMM sees all n^3 magnitudes, duplicates included
        full_features = picket_fft_features(windows.reshape(-1, N, N, N))
    full = GaussianMixture(2, random_state=0).fit(full_features[::4].astype(np.float64))
    ref = full.predict(full_features.astype(np.float64))
    ours = model.predict_features(features)
    agreement = max((ref == ours).mean(), (ref != ours).mean())
    print(f"{mode}: GMM on {model.info['pca_components']} principal components agrees "
          f"with the full-feature GMM on {agreement:.3f} of the voxels")
    # measured 0.92 (FFT, 21 components), 0.90 (Gabor, 6), 0.91 (intensities, 12)
    assert agreement > 0.85


def test_chunked_blur_equals_whole_volume_blur():
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(40, 17, 19)).astype(np.float32)
    whole = ndi.gaussian_filter(vol, 2.0)
    whole = (whole - whole.min()) / (whole.max() - whole.min())
    assert np.abs(seg.preprocess(vol, chunk=7) - whole).max() < 1e-5


def test_lamella_z_ranges_find_the_slab_and_keep_a_full_volume_whole():
    rng = np.random.default_rng(2)
    vol = rng.normal(0, 0.05, (60, 32, 32)).astype(np.float32)
    vol[20:41] += rng.normal(0, 1.0, (21, 32, 32)).astype(np.float32)     # the lamella
    u = seg.preprocess(vol)
    fit, pick = pk.lamella_z_ranges(u, margin=3)
    assert 14 <= pick[0] <= 20 and 40 <= pick[1] <= 46
    assert pick[0] < fit[0] <= fit[1] < pick[1] and 20 <= fit[0] and fit[1] <= 40
    uniform = seg.preprocess(rng.normal(size=(30, 32, 32)).astype(np.float32))
    assert pk.lamella_z_ranges(uniform)[1] == (0, 29)


def test_parse_z_range_reads_inclusive_ranges_and_rejects_bad_text():
    assert pk.parse_z_range("") is None
    assert pk.parse_z_range(" 40-120 ", nz=200) == (40, 120)
    for bad in ("40", "a-b", "50-40", "10-300"):
        with pytest.raises(ValueError, match="z range"):
            pk.parse_z_range(bad, nz=200)


def test_bad_parameters_are_named():
    vol = np.random.default_rng(0).normal(size=(16, 16, 16))
    with pytest.raises(ValueError, match="odd"):
        pk.segment_tomogram(vol, neighborhood_size=4)
    with pytest.raises(ValueError, match="feature mode"):
        pk.segment_tomogram(vol, feature_mode="wavelets")
    with pytest.raises(ValueError, match="clusterer"):
        pk.segment_tomogram(vol, clusterer="DBSCAN")
    with pytest.raises(ValueError, match="particle cluster"):
        pk.segment_tomogram(vol, particle_cluster=2)
    with pytest.raises(ValueError, match="z_pick_range"):
        pk.segment_tomogram(vol, z_pick_range=(5, 16))
    with pytest.raises(ValueError, match="watershed"):
        pl.localize_particles(np.ones((8, 8, 8), bool), "watershed")


def test_particle_cluster_is_found_for_both_contrasts():
    for contrast in ("dark", "bright"):
        ph = simulate_tomogram(shape=(48, 80, 80), n_particles=12, n_vesicles=0, snr=1.0,
                               contrast=contrast, seed=11)
        diameter = float(np.median(ph.particle_info["diameter"]))
        seg = pk.segment_tomogram(ph.tomogram, "FFT", "KMeans", particle_diameter=diameter,
                                  max_fit_neighborhoods=20000)
        # the mask is on the segmentation's grid: grid voxel k is voxel step k
        ijk = np.round(ph.particles.positions / seg.grid_step).astype(int)
        ijk = np.minimum(ijk, np.array(seg.mask.shape[::-1]) - 1)
        inside = seg.mask[ijk[:, 2], ijk[:, 1], ijk[:, 0]].mean()
        # particle centres fall in the chosen class far more often than voxels do
        assert inside > 0.5 and seg.info["particle_fraction"] < 0.25, (contrast, inside)


def test_prediction_leaves_the_process_thread_limits_as_they_were():
    from threadpoolctl import threadpool_info

    def limits():
        return sorted((i["internal_api"], i["filepath"], i["num_threads"])
                      for i in threadpool_info())

    before = limits()
    u = np.random.default_rng(0).random((40, 48, 48), np.float32)
    windows = pf._all_windows(u, N)[::11]
    for mode in ("FFT", "intensities"):
        model = seg.fit_model(windows, N, mode, "GMM", seed=0)
        margin = np.zeros(u.shape, np.float32)
        # many short chunks on several threads: the threads' turns interleave
        seg.predict_margin(u, model, (0, u.shape[0] - 1), margin,
                          chunk=2, n_threads=3)
    # the limit is process-wide: a leftover 1 would slow every later BLAS call
    assert limits() == before


def test_workflows_sharing_stage_one_equal_separate_runs(phantom):
    diameter = float(np.median(phantom.particle_info["diameter"]))
    kwargs = dict(particle_diameter=diameter, max_fit_neighborhoods=20000, seed=4)
    workflows = [("intensities", "KMeans"), ("Gabor", "GMM")]
    shared = dict(pk.segment_workflows(phantom.tomogram, workflows, **kwargs))
    assert list(shared) == workflows
    for mode, clusterer in workflows:
        alone = pk.segment_tomogram(phantom.tomogram, mode, clusterer, **kwargs)
        seg = shared[(mode, clusterer)]
        assert np.array_equal(seg.mask, alone.mask)
        assert np.array_equal(seg.evidence, alone.evidence)
        # both localisations from the one segmentation, as picket_pick gives them
        for loc in pl.LOCALIZATIONS:
            picks, _ = pk.localize_segmentation(seg, loc, diameter, tomo_id="phantom")
            ref, _, _ = pk.picket_pick(phantom.tomogram, mode, clusterer, loc,
                                       tomo_id="phantom", **kwargs)
            assert np.array_equal(picks.positions, ref.positions) and len(picks) > 0


def test_second_clusterer_folds_into_the_margin_as_the_minimum():
    # the KMeans re-split refines the margin chunk by chunk (no second volume):
    # the result must be the voxelwise minimum of the two margins
    u = blobs(seed=2)
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    first = seg.fit_model(windows[::3], N, "FFT", "KMeans", seed=0)
    second = seg.fit_model(windows[1::3], N, "intensities", "GMM", seed=0)
    a, b = np.zeros(u.shape, np.float32), np.zeros(u.shape, np.float32)
    seg.predict_margin(u, first, (0, u.shape[0] - 1), a)
    seg.predict_margin(u, second, (0, u.shape[0] - 1), b)
    combined = a.copy()
    seg.predict_margin(u, second, (2, u.shape[0] - 3), combined, chunk=3, combine="min")
    # (other chunk sizes: other FFT lengths, float32 rounding)
    tol = 1e-5 * np.abs(b).max()
    assert np.abs(combined[2:-2] - np.minimum(a, b)[2:-2]).max() < tol
    assert np.array_equal(combined[:2], a[:2]) and np.array_equal(combined[-2:], a[-2:])
    assert (b < a).any() and (b > a).any()       # both margins matter somewhere


@pytest.mark.parametrize("mode,clusterer", [("FFT", "KMeans"), ("Gabor", "GMM"),
                                            ("intensities", "GMM")])
def test_grid_margin_is_the_full_margin_at_every_second_voxel(mode, clusterer):
    # odd sizes: the grid keeps the last voxel of an odd axis; a z range that
    # starts on an odd slice starts on the next grid slice
    u = blobs(seed=5)[:, :-1, :-3]
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = seg.fit_model(windows[::3], N, mode, clusterer, seed=0)
    full = np.zeros(u.shape, np.float32)
    seg.predict_margin(u, model, (0, u.shape[0] - 1), full)
    grid = np.zeros(seg.grid_shape(u.shape, 2), np.float32)
    seg.predict_margin(u, model, (3, u.shape[0] - 1), grid, chunk=2, step=2)
    tol = 1e-5 * np.abs(full).max()               # FFT lengths differ: float32 rounding
    assert np.abs(grid[2:] - full[4::2, ::2, ::2]).max() < tol
    assert not grid[:2].any()                      # slices 0 and 2 are outside the range
    with pytest.raises(ValueError, match="grid"):
        seg.predict_margin(u, model, (0, 3), full, step=2)


def test_segmentation_on_the_grid_picks_as_well_as_the_full_one(phantom):
    diameter = float(np.median(phantom.particle_info["diameter"]))
    kwargs = dict(particle_diameter=diameter, max_fit_neighborhoods=20000)
    for mode in ("FFT", "Gabor"):
        fine = pk.segment_tomogram(phantom.tomogram, mode, "GMM", grid_step=1, **kwargs)
        coarse = pk.segment_tomogram(phantom.tomogram, mode, "GMM", grid_step=2, **kwargs)
        assert coarse.grid_step == 2 and coarse.mask.shape == seg.grid_shape(fine.mask.shape, 2)
        # the same classifier: the grid is the full segmentation, subsampled
        assert np.array_equal(coarse.mask, fine.mask[::2, ::2, ::2])
        # with the same marker spacing (the automatic one varies by a voxel or
        # two on this small phantom, either way) the objects found on the grid
        # are the particles as often: measured F1 0.89 / 0.89 (FFT), 0.74 / 0.76
        # (Gabor); picks are in voxels of the tomogram either way
        f1 = [evaluate_picks(pk.localize_segmentation(s, "watershed", diameter, 8,
                                                      tomo_id="phantom")[0],
                             phantom.particles, diameter / 2)["one_to_one"]["f1"]
              for s in (fine, coarse)]
        assert f1[1] >= f1[0] - 0.05 and f1[1] >= 0.7, (mode, f1)


def test_fft_models_sharing_a_pass_give_their_own_margins():
    # the class-split clusterers of FFT workflows ride along the first pass
    u = blobs(seed=6)
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    first = seg.fit_model(windows[::3], N, "FFT", "KMeans", seed=0)
    second = seg.fit_model(windows[1::3], N, "FFT", "GMM", seed=0)
    alone = [np.zeros(seg.grid_shape(u.shape, 2), np.float32) for _ in range(2)]
    for model, out in zip((first, second), alone):
        seg.predict_margin(u, model, (0, u.shape[0] - 1), out, step=2)
    shared = [np.zeros_like(a) for a in alone]
    seg.predict_margin(u, first, (0, u.shape[0] - 1), shared[0], step=2,
                       also=[(second, shared[1])])
    for a, b in zip(alone, shared):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    assert not np.allclose(shared[0], shared[1])
    gabor = seg.fit_model(windows[::3], N, "Gabor", "KMeans", seed=0)
    with pytest.raises(ValueError, match="FFT"):
        seg.predict_margin(u, first, (0, 3), shared[0], step=2, also=[(gabor, shared[1])])
