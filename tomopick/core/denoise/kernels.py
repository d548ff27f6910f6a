"""Numerics of the two flows: one explicit step on a padded tile, and gradient samples.

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

Every function here works on one padded block (a tile with its halo) and
takes a buffer pool (`tomopick.core.denoise.plan`) for its temporaries; how a
volume is cut into such blocks is the planner's business.
"""
import numpy as np

#: Weickert's constant for the m = 4 diffusivity: the flux |grad| g is largest at |grad| = K
WEICKERT_C4 = 3.31488
#: quantile of |grad u_sigma| used as the automatic contrast parameter
AUTO_K_QUANTILE = 90.0

# scale of the unnormalised Scharr derivative: [-1, 0, 1] * [3, 10, 3] / 10 * [3, 10, 3] / 10
# gives 2 * (16/10)^2 times the true [-1,0,1]/2 x [3,10,3]/16 x [3,10,3]/16 derivative
SCHARR = 0.5 * (10.0 / 16.0) ** 2
_TINY = np.float32(1e-30)


def _gaussian_weights(sigma):
    """Half of scipy's Gaussian kernel: weights for offsets 0..radius (truncate 4)."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(radius + 1, dtype=float)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / (w[0] + 2 * w[1:].sum())


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
    """Scharr cross-smoothing [3, 10, 3] / 10 (the 10/16 goes into `SCHARR`)."""
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
    """Central difference a_{i+1} - a_{i-1} (the 1/2 goes into `SCHARR`)."""
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

    The true gradient is ``SCHARR`` times the result; reach 1 on every axis.
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
    """Unnormalised Scharr divergence of a vector field (``SCHARR`` x true); reach 1."""
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
        np.multiply(s, np.float32(SCHARR * SCHARR / k2), out=coef)
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
        update *= np.float32(-SCHARR * SCHARR)
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
    return k2 * SCHARR * SCHARR


# ---------------------------------------------------------------- BFlow kernels
BFLOW_HALO = 2


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
