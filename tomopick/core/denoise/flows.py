"""Edge-enhancing diffusion and Beltrami flow of whole volumes (the public entry points).

The schemes are described in `tomopick.core.denoise.kernels`; the volume is
swept slab by slab and tile by tile by `tomopick.core.denoise.plan.Plan`.
Time steps above a scheme's bound are clamped to it with a
`DenoiseWarning`.
"""
import math
import warnings

import numpy as np

from tomopick.core.formats.mrc import release_pages

from .kernels import (BFLOW_HALO, SCHARR, _auto_k2, _bflow_gradient_samples, _bflow_step,
                      _eed_gradient_samples, _eed_halo, _eed_step, _gaussian_weights)
from .plan import Plan

#: the methods `denoise` knows, by name (a form keeps its own choice order)
METHODS = ("EED", "BFlow")
#: explicit stability bound of both schemes (see `tomopick.core.denoise.kernels`)
EED_MAX_TIME_STEP = 1.0 / 6.0
BFLOW_MAX_TIME_STEP = 1.0 / 6.0
#: Beltrami embedding scale in units of 1 / (90 % quantile of the input's |grad u|)
BFLOW_EMBEDDING = 2.0


class DenoiseWarning(UserWarning):
    """A parameter was adjusted (e.g. a time step clamped to its stability bound)."""


def clamp_time_step(time_step, method, warn=True):
    """Clamp a time step to the explicit stability bound of a method.

    The one owner of the clamp (the denoise protocol calls it with
    ``warn=False`` and logs the clamp itself: warnings are not thread-safe).

    Parameters
    ----------
    time_step : float
        Requested step (> 0).
    method : {'EED', 'BFlow'}
    warn : bool, optional
        Issue a `DenoiseWarning` when the step is clamped.

    Returns
    -------
    float
        ``time_step`` or the bound, whichever is smaller.

    Raises
    ------
    ValueError
        If the time step is not a positive finite number.

    Examples
    --------
    >>> clamp_time_step(0.1, "EED")
    0.1
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DenoiseWarning)
    ...     round(clamp_time_step(0.5, "BFlow"), 4)
    0.1667
    >>> clamp_time_step(0.5, "EED", warn=False) == EED_MAX_TIME_STEP
    True
    """
    tau = float(time_step)
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"{method} time step must be a positive number, got {time_step!r}")
    bound = EED_MAX_TIME_STEP if method == "EED" else BFLOW_MAX_TIME_STEP
    if tau > bound:
        if warn:
            warnings.warn(f"{method} time step {tau:g} exceeds the explicit stability bound "
                          f"{bound:.4f}; clamped to {bound:.4f}", DenoiseWarning,
                          stacklevel=3)
        return bound
    return tau


def check_volume(volume, name="tomogram"):
    """Check that a volume can be denoised; tell whether it is constant.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    name : str
        Used in error messages (e.g. the tsId).

    Returns
    -------
    bool
        True when all voxels are equal (such a volume is a fixed point of
        both flows and is passed through unchanged).

    Raises
    ------
    ValueError
        If the volume is not 3D or holds NaN/infinite voxels.

    Examples
    --------
    >>> check_volume(np.ones((2, 3, 4))), check_volume(np.arange(24.0).reshape(2, 3, 4))
    (True, False)
    >>> check_volume(np.full((2, 3, 4), np.nan), name="TS_01")
    Traceback (most recent call last):
        ...
    ValueError: TS_01: 24 of 24 voxels are NaN or infinite; cannot denoise
    """
    if volume.ndim != 3:
        raise ValueError(f"{name}: expected a 3D [z, y, x] volume, got shape {volume.shape}")
    lo, hi, bad = math.inf, -math.inf, 0
    for z0 in range(0, volume.shape[0], 16):
        block = np.asarray(volume[z0:z0 + 16])
        bmin, bmax = float(block.min()), float(block.max())
        if math.isfinite(bmin) and math.isfinite(bmax):
            lo, hi = min(lo, bmin), max(hi, bmax)
        else:
            bad += int(block.size - np.count_nonzero(np.isfinite(block)))
        release_pages(volume)
    if bad:
        raise ValueError(f"{name}: {bad} of {volume.size} voxels are NaN or infinite; "
                         "cannot denoise")
    return lo == hi


def _prepare(volume, out):
    if out is None:
        return np.array(volume, dtype=np.float32, order="C", copy=True)
    if out.dtype != np.float32 or out.shape != volume.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {volume.shape}")
    if out is not volume:
        for z0 in range(0, volume.shape[0], 16):
            out[z0:z0 + 16] = volume[z0:z0 + 16]
    return out


def eed(volume, sigma=0.5, n_iter=10, lam=-1.0, time_step=0.1, n_threads=1,
        slab_size=None, tile=None, progress=None, out=None):
    """Edge-enhancing anisotropic diffusion (Weickert) of a 3D volume.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        Any real dtype; may be a memory map (read slab by slab).
    sigma : float
        Gaussian pre-smoothing of the gradient that steers the diffusion
        tensor, voxels (>= 0; 0 = none).
    n_iter : int
        Iterations (>= 0).
    lam : float
        Contrast parameter K in grey values per voxel; < 0 = automatic
        (90 % quantile of ``|grad u_sigma|`` recomputed every iteration).
        Must not be 0.
    time_step : float
        Explicit step, clamped to 1/6 with a `DenoiseWarning`.
    n_threads : int
        Worker threads over the tiles of each slab; the result does not
        depend on it.
    slab_size : int, optional
        z-planes per slab (default 64).
    tile : (int, int), optional
        (y, x) size of the tiles a slab is cut into (default: padded tiles of
        about 4 MiB).  Neither changes the result.
    progress : callable, optional
        ``progress(iteration, n_iter, info)`` after every iteration; ``info``
        is a dict with ``K`` (the contrast parameter used).
    out : float32 array, optional
        Destination (may be ``volume`` itself for in-place filtering).

    Returns
    -------
    (nz, ny, nx) float32 ndarray
        The filtered volume (``out`` when given).

    Raises
    ------
    ValueError
        For NaN/infinite voxels or invalid parameters.

    Examples
    --------
    Noise on both sides of a step edge is smoothed away, the step is kept:

    >>> rng = np.random.default_rng(0)
    >>> volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    >>> volume[:, :, 8:] += 4
    >>> out = eed(volume, n_iter=5)
    >>> out.dtype, bool(out[:, :, :6].std() < 0.25 * volume[:, :, :6].std())
    (dtype('float32'), True)
    >>> round(float(out[:, :, 10:].mean() - out[:, :, :6].mean()))
    4
    """
    sigma, n_iter, lam = float(sigma), int(n_iter), float(lam)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"EED sigma must be >= 0 voxels, got {sigma}")
    if n_iter < 0:
        raise ValueError(f"EED number of iterations must be >= 0, got {n_iter}")
    if lam == 0 or not math.isfinite(lam):
        raise ValueError(f"EED lambda (K) must be > 0 (fixed) or < 0 (automatic), got {lam}")
    tau = clamp_time_step(time_step, "EED")
    n_threads = max(1, int(n_threads))
    constant = check_volume(volume)
    u = _prepare(volume, out)
    if constant or n_iter == 0:
        return u
    weights = _gaussian_weights(sigma)
    halo = _eed_halo(sigma)
    with Plan(u.shape, halo, n_threads, slab_size, tile) as plan:
        for it in range(n_iter):
            if lam > 0:
                k2 = lam * lam
            else:
                k2 = _auto_k2(plan.samples(
                    u, lambda pool, w, h, start: _eed_gradient_samples(pool, w, weights, h,
                                                                        start)))
                if k2 <= 0:        # no gradient left anywhere: the flow has stopped
                    break
            plan.update(u, lambda pool, w: _eed_step(pool, w, weights, tau, k2))
            if progress is not None:
                progress(it + 1, n_iter, {"K": math.sqrt(k2)})
    return u


def beltrami_flow(volume, n_iter=70, time_step=0.15, n_threads=1, slab_size=None,
                  tile=None, progress=None, out=None):
    """Beltrami flow (Laplace-Beltrami of the volume's graph) of a 3D volume.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        Any real dtype; may be a memory map.
    n_iter : int
        Iterations (>= 0).
    time_step : float
        Explicit step, clamped to 1/6 with a `DenoiseWarning`.
    n_threads, slab_size, tile, progress, out
        As in `eed`; ``info`` holds ``beta`` (the embedding scale, 1/grey).

    Returns
    -------
    (nz, ny, nx) float32 ndarray

    Raises
    ------
    ValueError
        For NaN/infinite voxels or invalid parameters.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    >>> volume[:, :, 8:] += 4
    >>> out = beltrami_flow(volume, n_iter=10)
    >>> bool(out[:, :, :6].std() < 0.25 * volume[:, :, :6].std())
    True
    >>> round(float(out[:, :, 10:].mean() - out[:, :, :6].mean()))
    4
    """
    n_iter = int(n_iter)
    if n_iter < 0:
        raise ValueError(f"BFlow number of iterations must be >= 0, got {n_iter}")
    tau = clamp_time_step(time_step, "BFlow")
    n_threads = max(1, int(n_threads))
    constant = check_volume(volume)
    u = _prepare(volume, out)
    if constant or n_iter == 0:
        return u
    halo = BFLOW_HALO
    with Plan(u.shape, halo, n_threads, slab_size, tile) as plan:
        k2 = _auto_k2(plan.samples(u, _bflow_gradient_samples)) / (SCHARR * SCHARR)
        beta2 = BFLOW_EMBEDDING ** 2 / k2 if k2 > 0 else 0.0
        for it in range(n_iter):
            plan.update(u, lambda pool, w: _bflow_step(pool, w, tau, beta2))
            if progress is not None:
                progress(it + 1, n_iter, {"beta": math.sqrt(beta2)})
    return u


def denoise(volume, method="EED", sigma=0.5, n_iter=10, lam=-1.0, time_step=0.1,
            n_iter_bflow=70, time_step_bflow=0.15, n_threads=1, slab_size=None,
            tile=None, progress=None, out=None):
    """Run `eed` or `beltrami_flow` with the parameter names of the denoise protocol.

    Parameters
    ----------
    method : {'EED', 'BFlow'}
    sigma, n_iter, lam, time_step
        EED parameters (see `eed`).
    n_iter_bflow, time_step_bflow
        Beltrami parameters (see `beltrami_flow`).
    Others as in `eed`.

    Returns
    -------
    (nz, ny, nx) float32 ndarray

    Examples
    --------
    >>> volume = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    >>> bool(np.array_equal(denoise(volume, "BFlow", n_iter_bflow=3), beltrami_flow(volume, 3)))
    True
    """
    if method == "EED":
        return eed(volume, sigma=sigma, n_iter=n_iter, lam=lam, time_step=time_step,
                   n_threads=n_threads, slab_size=slab_size, tile=tile,
                   progress=progress, out=out)
    if method == "BFlow":
        return beltrami_flow(volume, n_iter=n_iter_bflow, time_step=time_step_bflow,
                             n_threads=n_threads, slab_size=slab_size, tile=tile,
                             progress=progress, out=out)
    raise ValueError(f"unknown denoising method {method!r}; expected one of {METHODS}")
