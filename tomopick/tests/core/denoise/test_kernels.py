"""One step of each scheme against its formulas; stability (tomopick.core.denoise.kernels)."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from tomopick.core import denoise


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
