"""Edge-preserving denoising of tomograms: edge-enhancing diffusion and Beltrami flow.

Both filters are explicit nonlinear diffusion schemes evolved in float32.
Every iteration is one pass over the volume in z-slabs, each cut into (y, x)
tiles; a tile is computed from the previous iterate with a halo covering the
stencil reach of one iteration (EED: Gaussian radius + 2; BFlow: 2), and a
finished slab overwrites the working volume in place (the old values of its
top planes are kept aside for the next slab's halo).  Memory is thus one
float32 working volume, one slab of output and a few ~4 MiB tile buffers,
and the result is bit-for-bit that of the whole volume processed as one
block, whatever the slab, tile and thread counts (the automatic contrast
parameter uses global statistics over a fixed voxel grid).  The tiles of a
slab are shared among threads (numpy releases the GIL).  The arithmetic
runs on flat, contiguous shifted slices of each padded tile, which is why no
scipy filter appears below.

Boundaries: the iterate is extended by half-sample symmetric reflection on
all six faces before every iteration, i.e. homogeneous Neumann (no-flux)
boundaries; EED preserves the mean grey value exactly.

Edge-enhancing diffusion (EED, Weickert 1998), ``u_t = div(D grad u)``:

* ``u_sigma`` = Gaussian of ``u`` (``sigma`` voxels, truncated at 4 sigma as
  ``scipy.ndimage.gaussian_filter``); ``v = grad u_sigma / |grad u_sigma|``.
* ``D = I + (g(s) - 1) v v^T`` with ``s = |grad u_sigma|^2``: eigenvalue 1
  along the edge (two directions), ``g(s)`` across it, where
  ``g(s) = 1 - exp(-3.31488 / (s / K^2)^4)`` (Weickert's diffusivity, m = 4).
* K (``lam``): fixed when > 0, in grey values per voxel; automatic when < 0:
  at every iteration K is the 90 % quantile of ``|grad u_sigma|`` of the
  current iterate (Canny's noise estimator, as proposed by Perona-Malik and
  Weickert), taken over the voxels with even (z, y, x) indices.  If that
  quantile is 0 (a mostly flat volume) the 90 % quantile of the non-zero
  gradients is used.
* Time stepping: explicit Euler, ``u += time_step * div(D grad u)``.
* Discretisation: ``div(D grad u) = lap u + div(C grad u)``,
  ``C = (g - 1) v v^T``.  The isotropic part uses the compact 7-point
  Laplacian (it damps every frequency, including the checkerboard mode that
  wide central-difference stencils leave untouched); the anisotropic part
  uses the rotation-invariance-optimised derivative filters of Weickert and
  Scharr (2002): d/dx = [-1, 0, 1]/2 along x times [3, 10, 3]/16 along y
  and z (and cyclically), both for ``grad u``, ``grad u_sigma`` and the
  divergence.  Since ``-C`` has eigenvalues in [0, 1] and the Scharr
  gradient's energy never exceeds the compact one (Parseval), the operator
  is negative semi-definite with spectral radius <= 12: the explicit scheme
  is L2-stable for ``time_step <= 1/6``.

Beltrami flow (Sochen, Kimmel, Malladi 1998; TomoBflow, Fernandez 2009):
the volume is the graph ``(x, y, z, beta u)`` in 4D; the flow is the
Laplace-Beltrami operator of its induced metric,
``u_t = (1 / sqrt(g)) div(grad u / sqrt(g))``, ``g = 1 + beta^2 |grad u|^2``.
The embedding scale is ``beta = 2 / K0`` with K0 the 90 % quantile of
``|grad u|`` of the input (same estimator as EED): it makes the filter
independent of the grey-value scale, and gradients at the noise level
already halve the local speed.  (On the simulated tomograms beta = 1 / K0
acted almost like linear diffusion over the default 70 x 0.15 time, and
beta >= 3 / K0 froze noise peaks at SNR >= 1; 2 / K0 beat the Gaussian of
equal background smoothing at SNR 0.5-2.)  Discretisation: ``grad u`` by central
differences at voxels; the flux between neighbouring voxels is the
difference times the mean of their ``1 / sqrt(g)``; explicit stable (and
maximum-principle preserving) for ``time_step <= 1/6``.

Time steps above a scheme's bound are clamped to it with a
`DenoiseWarning`.
"""
import math
import mmap
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

METHODS = ("EED", "BFlow")
#: explicit stability bound of both schemes (see module notes)
EED_MAX_TIME_STEP = 1.0 / 6.0
BFLOW_MAX_TIME_STEP = 1.0 / 6.0
#: Weickert's constant for the m = 4 diffusivity: the flux |grad| g is largest at |grad| = K
WEICKERT_C4 = 3.31488
#: Beltrami embedding scale in units of 1 / (90 % quantile of the input's |grad u|)
BFLOW_EMBEDDING = 2.0
#: quantile of |grad u_sigma| used as the automatic contrast parameter
AUTO_K_QUANTILE = 90.0

# scale of the unnormalised Scharr derivative: [-1, 0, 1] * [3, 10, 3] / 10 * [3, 10, 3] / 10
# gives 2 * (16/10)^2 times the true [-1,0,1]/2 x [3,10,3]/16 x [3,10,3]/16 derivative
_SCHARR = 0.5 * (10.0 / 16.0) ** 2
_TINY = np.float32(1e-30)


class DenoiseWarning(UserWarning):
    """A parameter was adjusted (e.g. a time step clamped to its stability bound)."""


# --------------------------------------------------------------------- parameters
def clamp_time_step(time_step, method):
    """Clamp a time step to the explicit stability bound of a method.

    Parameters
    ----------
    time_step : float
        Requested step (> 0).
    method : {'EED', 'BFlow'}

    Returns
    -------
    float
        ``time_step`` or the bound, whichever is smaller; a `DenoiseWarning`
        is issued when it was clamped.

    Raises
    ------
    ValueError
        If the time step is not a positive finite number.
    """
    tau = float(time_step)
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"{method} time step must be a positive number, got {time_step!r}")
    bound = EED_MAX_TIME_STEP if method == "EED" else BFLOW_MAX_TIME_STEP
    if tau > bound:
        warnings.warn(f"{method} time step {tau:g} exceeds the explicit stability bound "
                      f"{bound:.4f}; clamped to {bound:.4f}", DenoiseWarning, stacklevel=3)
        return bound
    return tau


def _gaussian_weights(sigma):
    """Half of scipy's Gaussian kernel: weights for offsets 0..radius (truncate 4)."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(radius + 1, dtype=float)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / (w[0] + 2 * w[1:].sum())


# ------------------------------------------------------------------ buffer pool
class _Pool:
    """Reusable float32 tile buffers of one capacity (the largest padded tile).

    A tile step needs ~100 array passes over ~10 live temporaries; allocating
    them afresh costs a page fault per 4 KiB (as much again as the
    arithmetic), so flat buffers are recycled and smaller tiles use their
    leading part.  The pool holds as many buffers as were ever live at once.
    Thread-safe.
    """

    def __init__(self, capacity):
        self.capacity = int(capacity)
        self._free = []
        self._lock = threading.Lock()

    def take(self, shape):
        n = math.prod(shape)
        if n > self.capacity:
            raise ValueError(f"tile of {shape} exceeds the pool's {self.capacity} elements")
        with self._lock:
            buf = self._free.pop() if self._free else None
        if buf is None:
            buf = np.empty(self.capacity, dtype=np.float32)
        return buf[:n].reshape(shape)

    def give(self, *arrays):
        with self._lock:
            for a in arrays:
                self._free.append(a.base if a.base is not None else a.reshape(-1))

    def clear(self):
        with self._lock:
            self._free.clear()


# ---------------------------------------------------------- flat-shift 1D filters
# A padded block (Z, Y, X) is C-contiguous, so a neighbour along axis k is the
# element `stride_k` = (Y*X, X, 1)[k] further in the flat array.  Filtering the
# flat array with shifted contiguous slices is several times faster than
# strided slicing along x; the price is that the outermost `reach` samples of
# every axis hold values mixed across rows.  Those samples lie in the halo,
# which each tile discards, exactly as a "valid" convolution would.

def _strides(shape):
    return (shape[1] * shape[2], shape[2], 1)


def _new(pool, shape, lo, hi):
    """Buffer of `shape` whose `lo`/`hi` unreached flat samples are zeroed."""
    out = pool.take(shape)
    flat = out.reshape(-1)
    flat[:lo] = 0
    flat[flat.size - hi:] = 0
    return out


def _sym_filter(pool, a, axis, weights):
    """Symmetric FIR filter w[0] a_i + sum_k w[k] (a_{i-k} + a_{i+k}) along `axis`."""
    r = len(weights) - 1
    st = _strides(a.shape)[axis]
    f = a.reshape(-1)
    n = f.size
    out = _new(pool, a.shape, r * st, r * st)
    o = out.reshape(-1)[r * st:n - r * st]
    np.multiply(f[r * st:n - r * st], np.float32(weights[0]), out=o)
    if r:
        buf = pool.take(a.shape)
        tmp = buf.reshape(-1)[:o.size]
        for k in range(1, r + 1):
            np.add(f[(r - k) * st:n - (r + k) * st], f[(r + k) * st:n - (r - k) * st], out=tmp)
            tmp *= np.float32(weights[k])
            o += tmp
        pool.give(buf)
    return out


def _smooth(pool, a, axis):
    """Scharr cross-smoothing [3, 10, 3] / 10 (the 10/16 goes into `_SCHARR`)."""
    st = _strides(a.shape)[axis]
    f = a.reshape(-1)
    n = f.size
    out = _new(pool, a.shape, st, st)
    o = out.reshape(-1)[st:n - st]
    np.add(f[:n - 2 * st], f[2 * st:], out=o)
    o *= np.float32(0.3)
    o += f[st:n - st]
    return out


def _diff(pool, a, axis):
    """Central difference a_{i+1} - a_{i-1} (the 1/2 goes into `_SCHARR`)."""
    st = _strides(a.shape)[axis]
    f = a.reshape(-1)
    n = f.size
    out = _new(pool, a.shape, st, st)
    np.subtract(f[2 * st:], f[:n - 2 * st], out=out.reshape(-1)[st:n - st])
    return out


def _smooth_diff(pool, a, smooth_axis, diff_axis):
    """D_diff S_smooth a, releasing the intermediate."""
    s = _smooth(pool, a, smooth_axis)
    out = _diff(pool, s, diff_axis)
    pool.give(s)
    return out


def _scharr_gradient(pool, a):
    """Unnormalised Scharr gradient (x, y, z components) of an [z, y, x] block.

    The true gradient is ``_SCHARR`` times the result; reach 1 on every axis.
    The cross-smoothing passes are shared between components (8 passes).
    """
    az = _smooth(pool, a, 0)                       # S_z a
    gx = _smooth_diff(pool, az, 1, 2)              # D_x S_y S_z a
    pool.give(az)
    ex = _smooth(pool, a, 2)                       # S_x a
    gy = _smooth_diff(pool, ex, 0, 1)              # D_y S_z S_x a
    gz = _smooth_diff(pool, ex, 1, 0)              # D_z S_y S_x a
    pool.give(ex)
    return gx, gy, gz


def _scharr_divergence(pool, jx, jy, jz):
    """Unnormalised Scharr divergence of a vector field (``_SCHARR`` x true); reach 1."""
    a = _smooth_diff(pool, jx, 1, 2)               # D_x S_y jx
    b = _smooth_diff(pool, jy, 2, 1)               # D_y S_x jy
    a += b
    pool.give(b)
    out = _smooth(pool, a, 0)                      # S_z (...)
    pool.give(a)
    a = _smooth(pool, jz, 2)
    b = _smooth_diff(pool, a, 1, 0)                # D_z S_y S_x jz
    out += b
    pool.give(a, b)
    return out


def _crop(a, m):
    if m == 0:
        return a
    return a[m:-m, m:-m, m:-m]


def _add_laplacian(u, out):
    """out += compact 7-point Laplacian of u (valid where the reach-1 stencil fits)."""
    f = u.reshape(-1)
    n = f.size
    sz, sy, _ = _strides(u.shape)
    o = out.reshape(-1)[sz:n - sz]
    for shift in (-sz, sz, -sy, sy, -1, 1):
        o += f[sz + shift:n - sz + shift]
    o -= np.float32(6) * f[sz:n - sz]


# ------------------------------------------------------------------ EED kernels
def _eed_halo(sigma):
    return len(_gaussian_weights(sigma)) - 1 + 2


def _smoothed_gradient(pool, window, weights):
    """Unnormalised Scharr gradient of the Gaussian of a block; reach r + 1."""
    g = window
    for axis in range(3):
        if len(weights) > 1:
            filtered = _sym_filter(pool, g, axis, weights)
            if g is not window:
                pool.give(g)
            g = filtered
    grad = _scharr_gradient(pool, g)
    if g is not window:
        pool.give(g)
    return grad


def _eed_step(pool, window, weights, tau, k2):
    """One explicit EED step on a padded block (pooled buffer, same shape, halo valid).

    ``window`` carries a halo of ``_eed_halo`` planes on each side of every
    axis; ``k2`` is K^2 in true gradient units.  Only the inner block of the
    result is meaningful.
    """
    with np.errstate(all="ignore"):
        gx, gy, gz = _smoothed_gradient(pool, window, weights)
        # coef = e / s with e = exp(-C / (s/K^2)^4) = 1 - g(s) (true units)
        s, coef = pool.take(window.shape), pool.take(window.shape)
        np.multiply(gx, gx, out=s)
        np.multiply(gy, gy, out=coef)
        s += coef
        np.multiply(gz, gz, out=coef)
        s += coef
        np.multiply(s, np.float32(_SCHARR * _SCHARR / k2), out=coef)
        np.multiply(coef, coef, out=coef)
        np.multiply(coef, coef, out=coef)
        np.divide(np.float32(-WEICKERT_C4), coef, out=coef)
        np.exp(coef, out=coef)
        s += _TINY
        np.divide(coef, s, out=coef)
        pool.give(s)
        # coef * (grad_s . grad u), one component of grad u at a time
        ux, uy, uz = _scharr_gradient(pool, window)
        ux *= gx
        uy *= gy
        ux += uy
        uz *= gz
        ux += uz
        pool.give(uy, uz)
        ux *= coef
        pool.give(coef)
        # flux correction (g - 1) (v.grad u) v = -e (grad_s.grad u) grad_s / s; of the
        # unnormalised Scharr factors only that of grad u survives
        gx *= ux
        gy *= ux
        gz *= ux
        pool.give(ux)
        update = _scharr_divergence(pool, gx, gy, gz)
        pool.give(gx, gy, gz)
        update *= np.float32(-_SCHARR * _SCHARR)
        _add_laplacian(window, update)
        update *= np.float32(tau)
        update += window
    return update


def _eed_gradient_samples(pool, window, weights, h, start):
    """|grad u_sigma|^2 (unnormalised) at the voxels of the block with even global indices."""
    with np.errstate(all="ignore"):
        gx, gy, gz = _smoothed_gradient(pool, window, weights)
    sl = _even(window.shape, h, start)
    s = gx[sl] * gx[sl]
    s += gy[sl] * gy[sl]
    s += gz[sl] * gz[sl]
    pool.give(gx, gy, gz)
    return s.ravel()


def _even(shape, h, start):
    """Index of the inner voxels of a padded block whose global (z, y, x) are all even."""
    return tuple(slice(h + (-s) % 2, n - h, 2) for s, n in zip(start, shape))


def _auto_k2(samples):
    """Squared contrast parameter (true units) from unnormalised squared gradients."""
    samples = np.concatenate(samples) if len(samples) else np.zeros(0, np.float32)
    if samples.size == 0:
        return 0.0
    k2 = float(np.percentile(samples, AUTO_K_QUANTILE))
    if k2 <= 0:
        nonzero = samples[samples > 0]
        k2 = float(np.percentile(nonzero, AUTO_K_QUANTILE)) if nonzero.size else 0.0
    return k2 * _SCHARR * _SCHARR


# ---------------------------------------------------------------- BFlow kernels
_BFLOW_HALO = 2


def _bflow_gradient2(pool, u):
    """|grad u|^2 by central differences; reach 1."""
    s = _diff(pool, u, 2)
    s *= s
    for axis in (1, 0):
        c = _diff(pool, u, axis)
        c *= c
        s += c
        pool.give(c)
    s *= np.float32(0.25)
    return s


def _bflow_step(pool, window, tau, beta2):
    """One explicit Beltrami step on a block with a halo of 2 (pooled buffer, same shape)."""
    with np.errstate(all="ignore"):
        p = _bflow_gradient2(pool, window)
        p *= np.float32(beta2)
        p += np.float32(1)
        np.sqrt(p, out=p)
        np.divide(np.float32(1), p, out=p)               # 1 / sqrt(g), reach 1
        f, pf = window.reshape(-1), p.reshape(-1)
        n = f.size
        div = _new(pool, window.shape, n, 0)
        d = div.reshape(-1)
        flux_buf, tmp_buf = pool.take(window.shape), pool.take(window.shape)
        flux, tmp = flux_buf.reshape(-1), tmp_buf.reshape(-1)
        for st in _strides(window.shape):
            # flux through the face between i and i + st: 2 mean(1/sqrt g) (u_{i+st} - u_i)
            m = n - st
            np.add(pf[:m], pf[st:], out=flux[:m])
            np.subtract(f[st:], f[:m], out=tmp[:m])
            flux[:m] *= tmp[:m]
            d[st:m] += flux[st:m]
            d[st:m] -= flux[:m - st]
        pool.give(flux_buf, tmp_buf)
        div *= p
        pool.give(p)
        div *= np.float32(0.5 * tau)
        div += window
    return div


def _bflow_gradient_samples(pool, window, h, start):
    with np.errstate(all="ignore"):
        g = _bflow_gradient2(pool, window)
    out = g[_even(window.shape, h, start)].flatten()     # a copy: g goes back to the pool
    pool.give(g)
    return out


# ------------------------------------------------------------------- slab sweeps
#: elements of one padded tile array: ~10 such temporaries stay near the L3
#: cache (flat passes run ~1.7x faster than on 12 MB arrays)
_TILE_ELEMENTS = 2**20
_DEFAULT_SLAB = 64


def _reflect(index, n):
    """Half-sample symmetric reflection of (possibly out-of-range) indices into [0, n)."""
    index = np.mod(index, 2 * n)
    return np.where(index >= n, 2 * n - 1 - index, index)


def _as_slice(index):
    """A slice equal to an increasing run of indices, else the index array."""
    if len(index) and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


class _Plan:
    """How one iteration walks the volume: z-slabs, (y, x) tiles inside them, threads."""

    def __init__(self, shape, halo, n_threads, slab_size=None, tile=None):
        nz, ny, nx = shape
        self.shape, self.halo = shape, halo
        self.slab = max(1, min(int(slab_size or _DEFAULT_SLAB), nz))
        if tile is None:
            area = _TILE_ELEMENTS / (self.slab + 2 * halo)
            side = max(2 * halo, int(math.sqrt(area)) - 2 * halo)
            tx = min(nx, side)
            ty = max(2 * halo, int(area / (tx + 2 * halo)) - 2 * halo)
            tile = (ty, tx)
        ty, tx = (max(1, min(int(t), n)) for t, n in zip(tile, (ny, nx)))
        self.tiles = [(y0, min(y0 + ty, ny), x0, min(x0 + tx, nx))
                      for y0 in range(0, ny, ty) for x0 in range(0, nx, tx)]
        self.n_threads = max(1, min(int(n_threads), len(self.tiles)))
        self.executor = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None
        self.pool = _Pool((self.slab + 2 * halo) * (ty + 2 * halo) * (tx + 2 * halo))

    def map(self, fn, items):
        if self.executor is None:
            return [fn(*item) for item in items]
        return list(self.executor.map(lambda item: fn(*item), items))

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
        self.pool.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def window(self, below, u, z0, z1, y0, y1, x0, x1):
        """Padded block (pooled) around slab [z0, z1) x tile [y0, y1) x [x0, x1).

        Holds the old values of the iterate: ``below`` has those of the planes
        just under z0 (already overwritten in ``u``), everything from z0 up is
        still old in ``u``.  Outside the volume the iterate is reflected
        (half-sample symmetric, i.e. Neumann boundaries).
        """
        h, (nz, ny, nx) = self.halo, self.shape
        zs = _reflect(np.arange(z0 - h, z1 + h), nz)
        ys = _as_slice(_reflect(np.arange(y0 - h, y1 + h), ny))
        xs = _as_slice(_reflect(np.arange(x0 - h, x1 + h), nx))
        win = self.pool.take((len(zs), y1 - y0 + 2 * h, x1 - x0 + 2 * h))
        fancy = not (isinstance(ys, slice) and isinstance(xs, slice))
        for j, z in enumerate(zs):
            plane = below[len(below) - (z0 - z)] if z < z0 else u[z]
            win[j] = plane[ys][:, xs] if fancy else plane[ys, xs]
        return win

    def update(self, u, step):
        """Replace `u` in place by one step of ``step(pool, window)``, slab by slab."""
        h = self.halo
        below = u[:0].copy()
        for z0 in range(0, self.shape[0], self.slab):
            z1 = min(z0 + self.slab, self.shape[0])
            out = np.empty((z1 - z0,) + u.shape[1:], dtype=np.float32)

            def tile(y0, y1, x0, x1):
                win = self.window(below, u, z0, z1, y0, y1, x0, x1)
                new = step(self.pool, win)
                out[:, y0:y1, x0:x1] = _crop(new, h)
                self.pool.give(win, new)

            self.map(tile, self.tiles)
            if z1 - z0 >= h:
                below = u[z1 - h:z1].copy()
            else:
                below = np.concatenate([below, u[z0:z1]], axis=0)[
                    max(0, len(below) + z1 - z0 - h):]
            u[z0:z1] = out
            del out

    def samples(self, u, sampler):
        """Gather ``sampler(pool, window, halo, (z0, y0, x0))`` over all tiles (read-only)."""
        result = []
        for z0 in range(0, self.shape[0], self.slab):
            z1 = min(z0 + self.slab, self.shape[0])
            below = u[max(z0 - self.halo, 0):z0]

            def tile(y0, y1, x0, x1):
                win = self.window(below, u, z0, z1, y0, y1, x0, x1)
                values = sampler(self.pool, win, self.halo, (z0, y0, x0))
                self.pool.give(win)
                return values

            result += self.map(tile, self.tiles)
        return result


# ------------------------------------------------------------------ public API
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
        _release(volume)
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
    with _Plan(u.shape, halo, n_threads, slab_size, tile) as plan:
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
    halo = _BFLOW_HALO
    with _Plan(u.shape, halo, n_threads, slab_size, tile) as plan:
        k2 = _auto_k2(plan.samples(u, _bflow_gradient_samples)) / (_SCHARR * _SCHARR)
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


def _release(array):
    """Drop the resident pages of a memory-mapped array (they stay in the page cache)."""
    mm = getattr(array, "_mmap", None)
    if mm is None:
        base = getattr(array, "base", None)
        mm = base if isinstance(base, mmap.mmap) else None
    if mm is not None:
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):
            pass


def denoise_file(in_path, out_path, method="EED", n_threads=1, slab_size=None,
                 progress=None, voxel_size=None, **params):
    """Denoise an MRC tomogram file into a new float32 MRC file, streaming.

    The input is memory-mapped and copied slab by slab into one float32
    working volume, which is filtered in place and written slab by slab; peak
    memory is about one float32 volume plus slab temporaries.  The output
    header keeps the input's voxel size, origin and start indices.

    Parameters
    ----------
    in_path, out_path : str or path-like
        Input and output MRC files (the output is replaced atomically).
    method : {'EED', 'BFlow'}
    n_threads, slab_size, progress
        As in `eed`.
    voxel_size : float, optional
        Å/voxel to write in the output header (e.g. the sampling rate a
        project assigned to the tomogram); default: the input header's.
    **params
        ``sigma``, ``n_iter``, ``lam``, ``time_step``, ``n_iter_bflow``,
        ``time_step_bflow`` as in `denoise`.

    Returns
    -------
    dict
        ``shape``, ``voxel_size`` (x, y, z Å), ``origin`` (x, y, z Å),
        ``passed_through`` (True for a constant volume, copied unchanged).

    Raises
    ------
    tomopick.core.formats.mrc.MrcError
        If the input is missing or not an MRC volume.
    ValueError
        For NaN/infinite voxels or invalid parameters.
    """
    import mrcfile
    from tomopick.core.formats.mrc import read_mrc

    src = read_mrc(in_path, mmap=True)
    if src.ndim == 2:
        src = src[None]
    with mrcfile.open(os.fspath(in_path), header_only=True, permissive=True) as mrc:
        header = mrc.header.copy()
        voxel = mrc.voxel_size.copy()
    if voxel_size is not None:
        if not float(voxel_size) > 0:
            raise ValueError(f"voxel size must be > 0 Å, got {voxel_size}")
        voxel.x = voxel.y = voxel.z = float(voxel_size)
    constant = check_volume(src, name=os.path.basename(os.fspath(in_path)))
    work = np.empty(src.shape, dtype=np.float32)
    for z0 in range(0, src.shape[0], 16):
        work[z0:z0 + 16] = src[z0:z0 + 16]
        _release(src)
    del src
    if not constant:
        denoise(work, method=method, n_threads=n_threads, slab_size=slab_size,
                progress=progress, out=work, **params)
    _write_like(out_path, work, header, voxel)
    return {"shape": work.shape,
            "voxel_size": (float(voxel.x), float(voxel.y), float(voxel.z)),
            "origin": (float(header.origin.x), float(header.origin.y), float(header.origin.z)),
            "passed_through": bool(constant)}


def _write_like(out_path, data, header, voxel):
    """Write float32 `data` slab by slab with the geometry of an input header."""
    from tomopick.core.formats.mrc import create_mrc
    # written as <out_path>.part, renamed only when complete
    with create_mrc(out_path, data.shape, float(voxel.x)) as mrc:
        mrc.voxel_size = voxel
        mrc.header.origin = header.origin
        for field in ("nxstart", "nystart", "nzstart"):
            mrc.header[field] = header[field]
        lo, hi, total, total2 = math.inf, -math.inf, 0.0, 0.0
        for z0 in range(0, data.shape[0], 16):
            block = data[z0:z0 + 16]
            mrc.data[z0:z0 + 16] = block
            _release(mrc.data)
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
            total += float(block.sum(dtype=np.float64))
            total2 += float(np.square(block, dtype=np.float64).sum())
        n = data.size
        mean = total / n
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
        mrc.header.rms = math.sqrt(max(total2 / n - mean * mean, 0.0))
