"""PickET: features equal PickET's window definitions, predictions equal the
clusterers', and the six workflows find the particles of a simulated tomogram."""
import numpy as np
import pytest
import scipy.ndimage as ndi
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from tomopick.core import picket as pk
from tomopick.core import picket_features as pf
from tomopick.core import picket_localize as pl
from tomopick.core.evaluate import evaluate_picks
from tomopick.core.picks import Picks
from tomopick.core.simulate import simulate_tomogram

N = 5


def _blobs(shape=(16, 20, 24), seed=0):
    """A small preprocessed volume with structure at several scales."""
    rng = np.random.default_rng(seed)
    vol = ndi.gaussian_filter(rng.normal(size=shape), 1.0)
    z, y, x = np.indices(shape)
    vol -= 2.0 * (((z - 8) ** 2 + (y - 10) ** 2 + (x - 12) ** 2) < 16)
    return pk.preprocess(vol.astype(np.float32))


# ----------------------------------------------------------- PickET's literal definitions
# Written the way PickET writes them (window by window, meshgrid in 'xy' order,
# numpy.fft.fftn + fftshift over all n^3 frequencies), independently of the module.

def picket_windows(volume, n):
    """PickET's view_as_windows neighbourhoods of the symmetrically padded volume."""
    padded = np.pad(volume, n // 2, mode="symmetric")
    view = np.lib.stride_tricks.sliding_window_view(padded, (n, n, n))
    return view.reshape(-1, n, n, n)


def picket_fft_features(windows):
    spectra = np.fft.fftshift(np.fft.fftn(windows, axes=(-3, -2, -1)), axes=(-3, -2, -1))
    return np.abs(spectra).reshape(len(windows), -1)


def picket_gabor_bank(n, num_sinusoids=10):
    half = n // 2
    sigma = half / 3
    z, y, x = np.meshgrid(*[np.arange(-half, half + 1)] * 3)
    gaussian = np.exp(-0.5 * ((x ** 2 + y ** 2 + z ** 2) / (2 * sigma ** 2)))
    z, y, x = np.meshgrid(*[np.linspace(0, n, n)] * 3)
    bank = []
    for fz in np.linspace(0, 0.5, num_sinusoids):
        for fy in np.linspace(0, 0.5, num_sinusoids):
            for fx in np.linspace(0, 0.5, num_sinusoids):
                wave = np.cos(2 * np.pi * (fz * z + fy * y + fx * x))
                bank.append((wave * gaussian).reshape(-1))
    return np.array(bank, dtype=np.float32)


# ----------------------------------------------------------- feature equivalence

def test_fft_filter_magnitudes_equal_picket_window_fft():
    u = _blobs()
    windows = picket_windows(u, N)
    reference = picket_fft_features(windows).reshape(-1, N, N, N)
    fast = pf.fft_magnitudes(pf.pad_volume(u, N), N)          # (63, nz, ny, nx)
    freqs, weights = pf.fft_half_indices(N)
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
    u = _blobs()
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
    u = _blobs()
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    selected = theirs[np.argsort(np.std(windows @ theirs.T, axis=0))[-64:]]
    ours_sel = ours[pf.select_gabor_filters(windows, ours, 64)]
    # the top-64 sets agree (as sets: filters tied in std may swap order)
    assert np.sqrt(((ours_sel[:, None] - selected[None]) ** 2).sum(2).min(1)).max() < 1e-5
    fast = pf.feature_volumes(u, N, "Gabor", ours_sel).reshape(64, -1).T
    reference = windows @ ours_sel.T
    assert np.abs(fast - reference).max() < 2e-5 * np.abs(reference).max()


@pytest.mark.parametrize("mode", ["FFT", "Gabor", "intensities"])
def test_kmeans_filter_prediction_equals_kmeans_predict_on_window_features(mode):
    u = _blobs()
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = pk.fit_model(windows[::4], N, mode, "KMeans", seed=3)
    margin = np.zeros(u.shape, np.float32)
    pk.predict_margin(pf.pad_volume(u, N), model, (0, u.shape[0] - 1), margin)
    features = pf.window_features(windows, N, mode, model.gabor_filters) * model.feature_scale
    km_labels = np.argmin(((features[:, None, :] - model.info["centers"][None]) ** 2)
                          .sum(axis=2), axis=1)
    fast = (margin.ravel() > 0).astype(int)
    # identical except where a voxel is equidistant to float precision
    assert (fast == km_labels).mean() > 0.9999


def test_fft_half_space_with_sqrt2_weights_gives_the_full_fft_kmeans():
    u = _blobs(seed=4)
    windows = picket_windows(u, N)
    full = picket_fft_features(windows).astype(np.float64)
    half = (pf.window_fft_magnitudes(windows.reshape(-1, N ** 3), N)
            * np.sqrt(pf.fft_half_indices(N)[1])).astype(np.float64)
    # every Euclidean distance is the same, so KMeans (same seed) labels agree
    d_full = ((full[:50, None] - full[None, 50:100]) ** 2).sum(2)
    d_half = ((half[:50, None] - half[None, 50:100]) ** 2).sum(2)
    assert np.allclose(d_full, d_half, rtol=1e-4)
    a = KMeans(2, random_state=0, n_init=1).fit_predict(full)
    b = KMeans(2, random_state=0, n_init=1).fit_predict(half)
    assert max((a == b).mean(), (a != b).mean()) > 0.999


@pytest.fixture(scope="module")
def phantom_slab():
    """Preprocessed central slab of a small phantom (particles, wedge, noise)."""
    ph = simulate_tomogram(shape=(48, 64, 64), n_particles=10, n_vesicles=0, snr=0.5, seed=3)
    return pk.preprocess(ph.tomogram)[12:36]


@pytest.mark.parametrize("mode", ["FFT", "Gabor", "intensities"])
def test_gmm_margin_is_the_mixtures_posterior_log_odds(mode, phantom_slab):
    u = phantom_slab
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = pk.fit_model(windows[::4], N, mode, "GMM", seed=0)
    margin = np.zeros(u.shape, np.float32)
    pk.predict_margin(pf.pad_volume(u, N), model, (0, u.shape[0] - 1), margin)
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
    model = pk.fit_model(windows[::4], N, mode, "GMM", seed=0)
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
    assert np.abs(pk.preprocess(vol, chunk=7) - whole).max() < 1e-5


def test_fast_features_cover_the_border_without_a_frame():
    u = _blobs()
    margin = np.zeros(u.shape, np.float32)
    windows = picket_windows(u, N).reshape(-1, N ** 3)
    model = pk.fit_model(windows[::3], N, "intensities", "KMeans")
    pk.predict_margin(pf.pad_volume(u, N), model, (0, u.shape[0] - 1), margin)
    # every voxel is classified: no unlabelled frame that PickET later turns into "particle"
    assert np.all(margin != 0)


# ----------------------------------------------------------- automation

def test_lamella_z_ranges_find_the_slab_and_keep_a_full_volume_whole():
    rng = np.random.default_rng(2)
    vol = rng.normal(0, 0.05, (60, 32, 32)).astype(np.float32)
    vol[20:41] += rng.normal(0, 1.0, (21, 32, 32)).astype(np.float32)     # the lamella
    u = pk.preprocess(vol)
    fit, pick = pk.lamella_z_ranges(u, margin=3)
    assert 14 <= pick[0] <= 20 and 40 <= pick[1] <= 46
    assert pick[0] < fit[0] <= fit[1] < pick[1] and 20 <= fit[0] and fit[1] <= 40
    uniform = pk.preprocess(rng.normal(size=(30, 32, 32)).astype(np.float32))
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


# ----------------------------------------------------------- phantom workflows

@pytest.fixture(scope="module")
def phantom():
    return simulate_tomogram(shape=(64, 96, 96), n_particles=20, n_vesicles=0, snr=0.5,
                             tilt_range=(-60, 60), thickness_gradient=True, seed=0)


WORKFLOWS = [(m, c) for m in ("FFT", "Gabor", "intensities") for c in ("KMeans", "GMM")]


def test_six_workflows_pick_the_phantom(phantom, capsys):
    diameter = float(np.median(phantom.particle_info["diameter"]))
    rows, best = [], 0.0
    for mode, clusterer in WORKFLOWS:
        seg = pk.segment_tomogram(phantom.tomogram, mode, clusterer,
                                  particle_diameter=diameter, max_fit_neighborhoods=30000)
        for localization in pl.LOCALIZATIONS:
            objects = pl.localize_particles(seg.mask, localization, diameter,
                                            evidence=seg.evidence)
            picks = Picks("phantom", objects["positions"], scores=objects["scores"])
            r = evaluate_picks(picks, phantom.particles, diameter / 2)
            rows.append((mode, clusterer, localization, len(picks),
                         r["one_to_one"]["f1"], r["any"]["f1"]))
            best = max(best, r["one_to_one"]["f1"])
            if localization == "watershed":
                # every workflow finds a good share of the particles
                assert r["any"]["f1"] > 0.5, (mode, clusterer, r["any"])
    with capsys.disabled():
        print("\nPickET workflows on a 64x96x96 phantom, SNR 0.5, wedge +-60, "
              f"{len(phantom.particles)} particles, radius {diameter / 2:.1f} voxels")
        for row in rows:
            print("  %-12s %-7s %-21s n=%3d  F1 one-to-one %.2f  any %.2f" % row)
    assert best >= 0.8


def test_picks_are_deterministic_scored_and_ranked(phantom):
    diameter = float(np.median(phantom.particle_info["diameter"]))
    args = dict(feature_mode="Gabor", clusterer="GMM", localization="watershed",
                particle_diameter=diameter, max_fit_neighborhoods=20000, seed=7,
                tomo_id="phantom")
    a, seg, objects = pk.picket_pick(phantom.tomogram, **args)
    b, _, _ = pk.picket_pick(phantom.tomogram, **args)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.scores, b.scores)
    assert np.all(np.diff(a.scores) <= 0)
    # true particles outrank the false ones: precision of the top half >= overall
    r_all = evaluate_picks(a, phantom.particles, diameter / 2)["one_to_one"]
    top = a.subset(np.arange(len(a) // 2))
    r_top = evaluate_picks(top, phantom.particles, diameter / 2)["one_to_one"]
    assert r_top["precision"] >= r_all["precision"]
    # the instance labels number the objects in pick order
    labels = objects["labels"]
    assert labels.max() == len(a)
    assert seg.mask[labels > 0].all()
    k = len(a) // 2
    z, y, x = np.nonzero(labels == k + 1)
    assert np.allclose((x.mean(), y.mean(), z.mean()), a.positions[k], atol=1e-6)


def test_particle_cluster_is_found_for_both_contrasts():
    for contrast in ("dark", "bright"):
        ph = simulate_tomogram(shape=(48, 80, 80), n_particles=12, n_vesicles=0, snr=1.0,
                               contrast=contrast, seed=11)
        diameter = float(np.median(ph.particle_info["diameter"]))
        seg = pk.segment_tomogram(ph.tomogram, "FFT", "KMeans", particle_diameter=diameter,
                                  max_fit_neighborhoods=20000)
        ijk = np.round(ph.particles.positions).astype(int)
        inside = seg.mask[ijk[:, 2], ijk[:, 1], ijk[:, 0]].mean()
        # particle centres fall in the chosen class far more often than voxels do
        assert inside > 0.5 and seg.info["particle_fraction"] < 0.25, (contrast, inside)


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


def test_prediction_leaves_the_process_thread_limits_as_they_were():
    from threadpoolctl import threadpool_info

    def limits():
        return sorted((i["internal_api"], i["filepath"], i["num_threads"])
                      for i in threadpool_info())

    before = limits()
    u = np.random.default_rng(0).random((40, 48, 48), np.float32)
    windows = pf.all_windows(u, N)[::11]
    for mode in ("FFT", "intensities"):
        model = pk.fit_model(windows, N, mode, "GMM", seed=0)
        margin = np.zeros(u.shape, np.float32)
        # many short chunks on several threads: the threads' turns interleave
        pk.predict_margin(pf.pad_volume(u, N), model, (0, u.shape[0] - 1), margin,
                          chunk=2, n_threads=3)
    # the limit is process-wide: a leftover 1 would slow every later BLAS call
    assert limits() == before


def test_crowded_cytoplasm_is_picked_with_the_defaults():
    # 70 ribosome-like particles of ~16 voxels in 64 x 128 x 128 (centres down
    # to 8 voxels apart), gold beads, an intensity drift across x and z, wedge
    # +-60, SNR 0.15: only the diameter is given.  Measured F1 0.95-0.96 on
    # seeds 0-2 (Gabor x GMM x watershed; on the crowded 128 x 256 x 256
    # lamella of bench_picket --lamellae this workflow went 0.80 -> 0.92 with
    # the automatic marker spacing and the faint / dense object filters)
    ph = simulate_tomogram(shape=(64, 128, 128), voxel_size=18.0, particle_classes=(4,),
                           n_particles=70, n_vesicles=0, n_gold=2, snr=0.15,
                           intensity_drift=1.5, seed=0)
    diameter = float(np.median(ph.particle_info["diameter"]))
    picks, _, objects = pk.picket_pick(ph.tomogram, "Gabor", "GMM", "watershed",
                                       particle_diameter=diameter,
                                       max_fit_neighborhoods=30000, tomo_id="phantom")
    result = evaluate_picks(picks, ph.particles, 6.0)["one_to_one"]
    assert result["f1"] >= 0.9, result
    # the spacing came from the data: between the bounds, about a blob radius
    assert 0.25 * diameter <= objects["min_distance"] <= 0.5 * diameter


def test_drift_is_a_linear_ramp_across_x_and_z():
    kwargs = dict(shape=(32, 40, 48), n_particles=4, n_vesicles=0, snr=None, seed=2)
    flat = simulate_tomogram(**kwargs).tomogram
    drift = simulate_tomogram(intensity_drift=2.0, **kwargs).tomogram
    ramp = (drift - flat).astype(np.float64)
    # linear in x and z, constant along y, peak-to-peak 2 signal standard deviations
    assert np.abs(ramp - ramp[:, :1]).max() < 1e-4 * np.abs(ramp).max()
    z, x = np.indices(ramp[:, 0].shape)
    design = np.column_stack([np.ones(z.size), z.ravel(), x.ravel()])
    coef, res, *_ = np.linalg.lstsq(design, ramp[:, 0].ravel(), rcond=None)
    assert res[0] < 1e-8 * (ramp ** 2).sum()
    assert abs(coef[1]) > 0 and abs(coef[2]) > 0
    with pytest.raises(ValueError, match="intensity_drift"):
        simulate_tomogram(intensity_drift=-1, **kwargs)


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
