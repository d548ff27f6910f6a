"""Tests of tomopick.core.denoise: EED and Beltrami flow."""
import tracemalloc

import mrcfile
import numpy as np
import pytest
from scipy import ndimage as ndi

from tomopick.core import denoise
from tomopick.core.simulate import simulate_tomogram


# ----------------------------------------------------------------- references
def _scharr(a, axis):
    """Scharr derivative along `axis` (reflect borders), float64, for the reference."""
    smooth, deriv = np.array([3, 10, 3]) / 16.0, np.array([-1, 0, 1]) / 2.0
    for i in range(3):
        a = ndi.correlate1d(a, deriv if i == axis else smooth, axis=i, mode="reflect")
    return a


def _reference_eed_step(u, sigma, tau, k):
    """EED step written directly from the formulas (float64, whole volume)."""
    u = u.astype(np.float64)
    us = ndi.gaussian_filter(u, sigma, mode="reflect")
    g = [_scharr(us, axis) for axis in range(3)]
    gu = [_scharr(u, axis) for axis in range(3)]
    s = sum(c * c for c in g)
    with np.errstate(divide="ignore"):
        diffusivity = 1 - np.exp(-3.31488 / (s / k ** 2) ** 4)
    c = np.where(s > 0, (diffusivity - 1) / np.where(s > 0, s, 1), 0)
    dot = sum(a * b for a, b in zip(g, gu))
    div = sum(_scharr(c * dot * g[axis], axis) for axis in range(3))
    return u + tau * (ndi.laplace(u, mode="reflect") + div)


def _reference_beltrami_step(u, tau, beta2):
    u = np.pad(u.astype(np.float64), 1, mode="symmetric")
    grad2 = sum(((np.roll(u, -1, a) - np.roll(u, 1, a)) / 2) ** 2 for a in range(3))
    p = 1 / np.sqrt(1 + beta2 * grad2)
    div = 0
    for a in range(3):
        flux = (p + np.roll(p, -1, a)) / 2 * (np.roll(u, -1, a) - u)
        div = div + flux - np.roll(flux, 1, a)
    return (u + tau * p * div)[1:-1, 1:-1, 1:-1]


@pytest.fixture(scope="module")
def step_volume():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((23, 30, 28)).astype(np.float32)
    v += 3 * (np.arange(28) > 14)          # a plane edge across x
    return v


def test_eed_step_equals_formula_with_neumann_borders(step_volume):
    out = denoise.eed(step_volume, sigma=0.5, n_iter=1, lam=1.5, time_step=0.1)
    # reflecting the volume by 8 voxels makes every filter of the reference see
    # the half-sample symmetric extension that the scheme uses
    padded = np.pad(step_volume, 8, mode="symmetric")
    ref = _reference_eed_step(padded, 0.5, 0.1, 1.5)[8:-8, 8:-8, 8:-8]
    assert np.abs(out - step_volume).max() > 0.5
    assert np.abs(out - ref).max() < 2e-5       # float32 vs float64 rounding


def test_automatic_k_is_90_percent_quantile_of_smoothed_gradient(step_volume):
    ks = []
    denoise.eed(step_volume, sigma=0.7, n_iter=1, progress=lambda i, n, info: ks.append(info["K"]))
    padded = np.pad(step_volume.astype(np.float64), 8, mode="symmetric")
    smoothed = ndi.gaussian_filter(padded, 0.7, mode="reflect")
    grad2 = sum(_scharr(smoothed, axis) ** 2 for axis in range(3))[8:-8, 8:-8, 8:-8]
    # sampled on the voxels with even (z, y, x): the same grid for any slab split
    expected = np.sqrt(np.percentile(grad2[::2, ::2, ::2], 90))
    assert ks[0] == pytest.approx(expected, rel=1e-5)


def test_beltrami_step_equals_formula(step_volume):
    out = denoise.beltrami_flow(step_volume, n_iter=1, time_step=0.1)
    # beta is 2 / (90 % quantile of |grad u| on the even-index voxel grid)
    padded = np.pad(step_volume.astype(np.float64), 1, mode="symmetric")
    grad2 = sum(((np.roll(padded, -1, a) - np.roll(padded, 1, a)) / 2) ** 2
                for a in range(3))[1:-1, 1:-1, 1:-1]
    k2 = np.percentile(grad2[::2, ::2, ::2], 90)
    ref = _reference_beltrami_step(step_volume, 0.1, denoise.BFLOW_EMBEDDING ** 2 / k2)
    assert np.abs(out - step_volume).max() > 0.1
    assert np.abs(out - ref).max() < 2e-5


@pytest.mark.parametrize("slab,tile,threads", [(1, (4, 5), 1), (3, (5, 7), 2), (4, (9, 30), 3),
                                                (7, (30, 9), 2), (100, None, 1)])
def test_slab_tile_and_thread_split_gives_identical_result(step_volume, slab, tile, threads):
    whole_eed = denoise.eed(step_volume, n_iter=4, slab_size=1000, tile=(1000, 1000))
    whole_bf = denoise.beltrami_flow(step_volume, n_iter=4, slab_size=1000, tile=(1000, 1000))
    eed = denoise.eed(step_volume, n_iter=4, slab_size=slab, tile=tile, n_threads=threads)
    bf = denoise.beltrami_flow(step_volume, n_iter=4, slab_size=slab, tile=tile,
                               n_threads=threads)
    np.testing.assert_array_equal(eed, whole_eed)     # automatic K uses global statistics
    np.testing.assert_array_equal(bf, whole_bf)


def test_eed_conserves_mean_grey_value(step_volume):
    out = denoise.eed(step_volume, n_iter=10)
    assert abs(float(out.mean(dtype=np.float64)) - float(step_volume.mean(dtype=np.float64))) \
        < 1e-5 * float(np.abs(step_volume).mean())


def test_time_step_above_bound_is_clamped_with_warning(step_volume):
    with pytest.warns(denoise.DenoiseWarning, match="clamped"):
        fast = denoise.eed(step_volume, n_iter=2, time_step=0.5)
    np.testing.assert_array_equal(fast, denoise.eed(step_volume, n_iter=2, time_step=1 / 6))
    with pytest.warns(denoise.DenoiseWarning, match="BFlow"):
        fast = denoise.beltrami_flow(step_volume, n_iter=2, time_step=0.3)
    np.testing.assert_array_equal(fast, denoise.beltrami_flow(step_volume, n_iter=2,
                                                              time_step=1 / 6))


def test_explicit_schemes_are_stable_and_damp_the_checkerboard_at_the_bound():
    # L2 stability: at the bound 1/6 the energy of any input never grows (the
    # checkerboard, the mode that wide central-difference stencils never damp, is the
    # neutral one there: the compact Laplacian maps it to -12 times itself); below the
    # bound it is damped, by a factor |1 - 12 tau| = 0.2 per step at tau = 0.1
    z, y, x = np.indices((16, 16, 16))
    checker = ((-1.0) ** (x + y + z)).astype(np.float32)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((16, 16, 16)).astype(np.float32)
    for volume in (checker, noise, checker + 3 * noise):
        for run in (lambda v: denoise.eed(v, n_iter=1, time_step=1 / 6),
                    lambda v: denoise.beltrami_flow(v, n_iter=1, time_step=1 / 6)):
            energy = [float(np.square(volume - volume.mean()).sum())]
            u = volume
            for _ in range(30):
                u = run(u)
                energy.append(float(np.square(u - u.mean()).sum()))
            assert all(b <= a * (1 + 1e-5) for a, b in zip(energy, energy[1:]))
    assert np.abs(denoise.eed(checker, n_iter=10, time_step=0.1)).mean() < 0.01


def test_every_parameter_changes_the_result(step_volume):
    base = denoise.denoise(step_volume, "EED")
    for change in (dict(sigma=1.0), dict(n_iter=5), dict(lam=0.8), dict(time_step=0.05)):
        assert np.abs(denoise.denoise(step_volume, "EED", **change) - base).max() > 1e-3, change
    assert np.abs(denoise.denoise(step_volume, "EED", lam=0.8)
                  - denoise.denoise(step_volume, "EED", lam=3.0)).max() > 1e-3
    bflow = denoise.denoise(step_volume, "BFlow")
    assert np.abs(bflow - base).max() > 1e-3
    for change in (dict(n_iter_bflow=35), dict(time_step_bflow=0.05)):
        assert np.abs(denoise.denoise(step_volume, "BFlow", **change) - bflow).max() > 1e-3
    # the BFlow parameters do not leak into EED and vice versa
    np.testing.assert_array_equal(denoise.denoise(step_volume, "EED", n_iter_bflow=3), base)
    np.testing.assert_array_equal(denoise.denoise(step_volume, "BFlow", n_iter=3), bflow)


def test_progress_reports_every_iteration(step_volume):
    calls = []
    denoise.eed(step_volume, n_iter=3, progress=lambda i, n, info: calls.append((i, n, info)))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert all(c[2]["K"] > 0 for c in calls)


# ------------------------------------------------------------------- bad input
def test_nan_tomogram_is_rejected_with_a_clear_error():
    volume = np.full((8, 8, 8), np.nan, dtype=np.float32)
    for method in denoise.METHODS:
        with pytest.raises(ValueError, match="512 of 512 voxels are NaN"):
            denoise.denoise(volume, method)


def test_constant_tomogram_passes_through_unchanged():
    volume = np.full((8, 9, 10), 2.5, dtype=np.float32)
    for method in denoise.METHODS:
        out = denoise.denoise(volume, method)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out, volume)


def test_flat_volume_with_one_bright_voxel_gives_finite_output():
    # the 90 % gradient quantile is 0 here: K falls back to the non-zero gradients
    volume = np.zeros((12, 12, 12), dtype=np.float32)
    volume[6, 6, 6] = 1
    for method in denoise.METHODS:
        out = denoise.denoise(volume, method)
        assert np.isfinite(out).all() and out.max() < 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(lam=0), "lambda"), (dict(sigma=-1), "sigma"), (dict(n_iter=-1), "iterations"),
    (dict(time_step=0), "time step"), (dict(time_step=float("nan")), "time step")])
def test_invalid_eed_parameters_are_named(step_volume, kwargs, message):
    with pytest.raises(ValueError, match=message):
        denoise.eed(step_volume, **kwargs)


def test_unknown_method_is_named(step_volume):
    with pytest.raises(ValueError, match="'TV'"):
        denoise.denoise(step_volume, "TV")


# ------------------------------------------------------------- phantom quality
def _cc(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def phantom():
    """SNR 0.5 tomogram (wedge, CTF) with one spherical vesicle, and analysis helpers."""
    ph = simulate_tomogram(shape=(64, 96, 96), n_particles=6, n_vesicles=1, snr=0.5, seed=1)
    zz, yy, xx = np.indices(ph.tomogram.shape)
    background = ndi.binary_erosion(ph.sample_mask(), iterations=4)
    for pos, diameter in zip(ph.particles.positions, ph.particle_info["diameter"]):
        background &= ((xx - pos[0]) ** 2 + (yy - pos[1]) ** 2 + (zz - pos[2]) ** 2
                       > (diameter / 2 + 4) ** 2)
    ves = ph.vesicles[0]
    center, radius = np.asarray(ves["center"]), float(np.mean(ves["semi_axes"]))
    rr = np.sqrt((xx - center[0]) ** 2 + (yy - center[1]) ** 2 + (zz - center[2]) ** 2)
    background &= np.abs(rr - radius) > ves["thickness"] + 6
    assert background.mean() > 0.2
    sigmas = np.arange(0.4, 6.0, 0.1)
    noise = np.array([_background_noise(ndi.gaussian_filter(ph.tomogram, s), background)
                      for s in sigmas])
    return dict(ph=ph, background=background, center=center, radius=radius,
                gauss_noise=(sigmas, noise), outputs={})


def _background_noise(volume, background):
    """Std of the high-pass residual in structure-free ice: the noise left by a filter."""
    return float((volume - ndi.gaussian_filter(volume, 3))[background].std())


def _denoised(phantom, method, **params):
    key = (method,) + tuple(sorted(params.items()))
    if key not in phantom["outputs"]:
        phantom["outputs"][key] = denoise.denoise(phantom["ph"].tomogram, method, **params)
    return phantom["outputs"][key]


def _matched_gaussian(phantom, filtered):
    """Gaussian of the tomogram leaving the same background noise as `filtered`.

    This is "matched smoothing": both filters remove as much noise from
    structure-free ice, so what differs is how much structure survives.
    """
    sigmas, noise = phantom["gauss_noise"]
    sigma = float(np.interp(-_background_noise(filtered, phantom["background"]), -noise, sigmas))
    return sigma, ndi.gaussian_filter(phantom["ph"].tomogram, sigma)


def _membrane_profile(volume, center, radius):
    """Mean radial profile across the vesicle membrane (400 rays, +-8 voxels)."""
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(400, 3))
    dirs /= np.linalg.norm(dirs, axis=1)[:, None]
    offsets = np.arange(-8, 8.01, 0.5)
    pts = center[None, None] + (radius + offsets)[None, :, None] * dirs[:, None, :]
    samples = ndi.map_coordinates(volume, pts[..., ::-1].reshape(-1, 3).T, order=1)
    return samples.reshape(len(dirs), len(offsets)).mean(axis=0)


@pytest.mark.parametrize("method,params", [("EED", dict(n_iter=20)), ("BFlow", {})])
def test_phantom_correlation_beats_input_and_matched_gaussian(phantom, method, params):
    noisy, clean = phantom["ph"].tomogram, phantom["ph"].clean
    out = _denoised(phantom, method, **params)
    sigma, gauss = _matched_gaussian(phantom, out)
    cc_in, cc_out, cc_gauss = _cc(noisy, clean), _cc(out, clean), _cc(gauss, clean)
    # measured: EED 0.472 vs Gaussian(1.98) 0.457, BFlow 0.455 vs Gaussian(4.49) 0.431,
    # input 0.196; the margins are ~5 times the spread over noise seeds of the difference
    assert cc_out > cc_in + 0.2
    assert cc_out > cc_gauss + 0.01, (sigma, cc_out, cc_gauss)


@pytest.mark.parametrize("method,params,min_ratio", [("EED", {}, 1.6), ("BFlow", {}, 1.08)])
def test_membrane_stays_sharper_than_with_matched_gaussian(phantom, method, params, min_ratio):
    center, radius = phantom["center"], phantom["radius"]
    out = _denoised(phantom, method, **params)
    sigma, gauss = _matched_gaussian(phantom, out)
    p_out = _membrane_profile(out, center, radius)
    p_gauss = _membrane_profile(gauss, center, radius)
    # contrast of the bilayer profile (dark leaflets vs. surroundings) and its steepest slope;
    # measured ratios: EED 2.17 / 2.9, BFlow 1.16 / 1.42
    assert np.ptp(p_out) > min_ratio * np.ptp(p_gauss), sigma
    assert np.abs(np.diff(p_out)).max() > min_ratio * np.abs(np.diff(p_gauss)).max()


def test_default_eed_smooths_background_like_its_nominal_gaussian(phantom):
    # in flat regions EED is linear diffusion: time n_iter * tau = 1 <-> sigma = sqrt(2)
    sigma, _ = _matched_gaussian(phantom, _denoised(phantom, "EED"))
    assert abs(sigma - np.sqrt(2.0)) < 0.15


# -------------------------------------------------------------------- files
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
