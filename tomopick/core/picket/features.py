"""Neighbourhood features of PickET, computed as filters instead of windows.

PickET (Arvindekar, Golatkar & Viswanath, bioRxiv 2025) describes every voxel of
a blurred, min-max normalised tomogram by its n x n x n neighbourhood (n odd):

- ``intensities``: the n^3 voxel values of the window;
- ``FFT``: the magnitudes of the n^3 discrete Fourier transform of the window;
- ``Gabor``: the responses (window . filter) to a bank of real 3D Gabor filters,
  ``cos(2 pi (fa ta + fb tb + fc tc)) * G``, fa, fb, fc each taking
  ``num_sinusoids`` values in [0, 0.5] cycles/voxel, t = linspace(0, n, n)
  along each window axis, G an isotropic Gaussian ``exp(-r^2 / (4 s^2))`` with
  s = (n // 2) / 3; only the ``num_output_features`` filters whose responses
  vary most (standard deviation over the fitting sample) are kept.

PickET materialises every window.  Here the window form (`window_features`) is
used only for the bounded fitting sample and as the reference; whole volumes go
through filters:

- intensities and Gabor features are linear in the window, so any linear
  combination of them is ONE n^3 correlation kernel (`_window_kernels`), applied
  by FFT (`_correlate_kernels`);
- FFT magnitudes are moduli of local DFT coefficients, a separable complex
  filter evaluated axis by axis (`_fft_magnitudes`: a radix-n butterfly along x,
  banded DFT matrices along y and z, in cache-sized blocks); only the
  non-redundant half is computed: for a real window F(-k) = conj F(k), so
  (n^3 + 1) / 2 coefficients carry all the information.

Conventions: arrays are [z, y, x]; a feature "at voxel x" belongs to the window
centred on x (PickET stores the label of the window starting at x at x + n//2,
which is the same thing).  Volumes are extended by symmetric reflection
(``numpy.pad(mode='symmetric')``) so every voxel, including the border, has a
full window.
"""
import numpy as np
import scipy.fft

__all__ = [
    "FEATURE_MODES", "check_neighborhood_size", "check_feature_mode", "pad_volume", "pad_chunk",
    "window_features", "feature_volumes", "gabor_bank", "select_gabor_filters", "grid_shape",
]

FEATURE_MODES = ("FFT", "Gabor", "intensities")


def check_neighborhood_size(n):
    """Validate an odd neighbourhood edge length; return it as int.

    Raises
    ------
    ValueError
        If ``n`` is not an odd integer >= 3.

    Examples
    --------
    >>> check_neighborhood_size(5)
    5
    >>> check_neighborhood_size(4)
    Traceback (most recent call last):
    ...
    ValueError: neighborhood size must be an odd integer >= 3, got 4
    """
    if int(n) != n or n < 3 or n % 2 == 0:
        raise ValueError(f"neighborhood size must be an odd integer >= 3, got {n}")
    return int(n)


def check_feature_mode(mode):
    """Return the canonical feature-mode name ('FFT', 'Gabor' or 'intensities').

    Raises
    ------
    ValueError
        If ``mode`` is none of them (case-insensitive; 'ffts' is accepted).

    Examples
    --------
    >>> check_feature_mode("ffts"), check_feature_mode("gabor")
    ('FFT', 'Gabor')
    """
    canonical = {m.lower(): m for m in FEATURE_MODES}
    canonical["ffts"] = "FFT"
    try:
        return canonical[str(mode).lower()]
    except KeyError:
        raise ValueError(f"feature mode {mode!r} is not one of {FEATURE_MODES}") from None


# --------------------------------------------------------------------------- windows

def pad_volume(volume, n):
    """Extend a [z, y, x] volume by n//2 voxels on every side (symmetric reflection).

    Examples
    --------
    >>> import numpy as np
    >>> padded = pad_volume(np.arange(4.0).reshape(1, 1, 4), 5)
    >>> padded.shape
    (5, 5, 8)
    >>> padded[2, 2]  # reflected: the edge value repeats
    array([1., 0., 0., 1., 2., 3., 3., 2.], dtype=float32)
    """
    return np.pad(np.asarray(volume, dtype=np.float32), n // 2, mode="symmetric")


def grid_shape(shape, step):
    """Shape of the grid of voxels whose indices are multiples of ``step``.

    Grid voxel (k, j, i) is voxel (step k, step j, step i) of the volume.

    Examples
    --------
    >>> grid_shape((128, 255, 256), 2)
    (64, 128, 128)
    """
    return tuple(-(-int(s) // int(step)) for s in shape)


def _symmetric_index(index, size):
    """Indices into an axis of ``size`` extended by symmetric reflection (``np.pad`` 'symmetric').

    Valid for indices within one axis length of the axis (-size <= i < 2 size).
    """
    index = np.asarray(index)
    index = np.where(index < 0, -index - 1, index)
    return np.where(index >= size, 2 * size - 1 - index, index)


def pad_chunk(volume, z0, z1, n):
    """Slices z0..z1-1 of a volume extended by n//2 on every side, as `pad_volume` would.

    ``pad_chunk(v, z0, z1, n)`` equals ``pad_volume(v, n)[z0:z1 + n - 1]``
    without padding (or copying) the whole volume: prediction pads chunk by
    chunk, so only the chunks in flight hold a halo.

    Returns
    -------
    (z1 - z0 + n - 1, ny + n - 1, nx + n - 1) float32 ndarray

    Examples
    --------
    >>> v = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    >>> np.array_equal(pad_chunk(v, 1, 3, 3), pad_volume(v, 3)[1:5])
    True
    """
    h = n // 2
    nz = volume.shape[0]
    if z0 - h >= 0 and z1 + h <= nz:
        block = np.asarray(volume[z0 - h:z1 + h], np.float32)
    else:
        block = np.asarray(volume[_symmetric_index(np.arange(z0 - h, z1 + h), nz)], np.float32)
    return np.pad(block, ((0, 0), (h, h), (h, h)), mode="symmetric")


def _sample_windows(volume, centers, n):
    """Gather the n^3 windows centred on given voxels of the (unpadded) volume.

    Windows reaching past a face are completed by symmetric reflection, as
    if the volume were padded by `pad_volume` (nothing volume-sized is made).

    Parameters
    ----------
    volume : (nz, ny, nx) ndarray
    centers : (M, 3) int array
        Voxel indices [z, y, x].
    n : int
        Window edge.

    Returns
    -------
    (M, n^3) float32 ndarray
        Windows flattened in [a, b, c] (z, y, x) order, as PickET flattens them.
    """
    h = n // 2
    centers = np.asarray(centers, dtype=np.intp).reshape(-1, 3)
    volume = np.asarray(volume)
    out = np.empty((len(centers), n ** 3), np.float32)
    # windows inside the volume: one gather from the sliding-window view (~10x
    # faster than broadcast index arrays); the few that cross a face are
    # completed by reflected indices
    inner = np.all((centers >= h) & (centers < np.array(volume.shape) - h), axis=1)
    view = np.lib.stride_tricks.sliding_window_view(volume, (n, n, n))
    c = centers[inner] - h
    out[inner] = view[c[:, 0], c[:, 1], c[:, 2]].reshape(-1, n ** 3)
    if not inner.all():
        offsets = np.arange(-h, h + 1)
        z, y, x = (_symmetric_index(centers[~inner, axis, None] + offsets, volume.shape[axis])
                   for axis in range(3))
        out[~inner] = volume[z[:, :, None, None], y[:, None, :, None],
                             x[:, None, None, :]].reshape(-1, n ** 3)
    return out


def _all_windows(volume, n):
    """Every window of a (small) volume, (nz*ny*nx, n^3): the explicit reference.

    Materialises n^3 values per voxel -- only for tests and benchmarks.
    """
    padded = pad_volume(volume, n)
    view = np.lib.stride_tricks.sliding_window_view(padded, (n, n, n))
    return view.reshape(-1, n ** 3).astype(np.float32)


# --------------------------------------------------------------------------- FFT

def _fft_half_indices(n):
    """The non-redundant half of the n^3 DFT frequencies.

    Returns
    -------
    freqs : (K, 3) int ndarray
        (kz, ky, kx) in -n//2..n//2, K = (n^3 + 1) / 2, ordered with kx first
        (kx > 0), then ky (kx = 0, ky > 0), then kz (kx = ky = 0, kz >= 0).
    weights : (K,) ndarray
        How many of the n^3 coefficients each one stands for (2: itself and its
        conjugate partner; 1: the zero frequency).
    """
    h = n // 2
    ks = np.arange(-h, h + 1)
    freqs = [(kz, ky, kx) for kx in range(1, h + 1) for ky in ks for kz in ks]
    freqs += [(kz, ky, 0) for ky in range(1, h + 1) for kz in ks]
    freqs += [(kz, 0, 0) for kz in range(0, h + 1)]
    freqs = np.array(freqs, dtype=int)
    weights = np.where((freqs == 0).all(axis=1), 1.0, 2.0)
    return freqs, weights


def _window_fft_magnitudes(windows, n):
    """PickET's FFT features of explicit windows, restricted to the half-space.

    Parameters
    ----------
    windows : (M, n^3) array
    n : int

    Returns
    -------
    (M, (n^3 + 1) / 2) float32 ndarray
        |DFT| of each window at `_fft_half_indices` (the other half duplicates
        these values exactly).
    """
    # the half-space coefficients as one real matrix product (cos and sin parts):
    # same numbers as numpy.fft.fftn of each window, ~50x faster for many
    # small windows
    real, imag = _half_dft_matrices(n)
    windows = np.asarray(windows, np.float32).reshape(-1, n ** 3)
    re = windows @ real
    im = windows @ imag
    return np.sqrt(re * re + im * im)


def _half_dft_matrices(n):
    """(n^3, K) cos and -sin matrices of the half-space DFT of a flattened window."""
    freqs, _ = _fft_half_indices(n)
    a, b, c = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    t = np.column_stack([a.ravel(), b.ravel(), c.ravel()])       # window offsets
    phase = 2 * np.pi * (t @ freqs.T) / n
    return np.cos(phase).astype(np.float32), (-np.sin(phase)).astype(np.float32)


def _axis_dft(a, axis, n, out_len, ks, step=1):
    """Centred n-point DFT along one axis, valid part, for the frequencies ``ks``.

    T_k(x) = sum_{t=-h..h} a(x + t) exp(-2 pi i k t / n), computed from the
    symmetric/antisymmetric pairs a(x+t) +- a(x-t) so every k costs h
    multiply-adds for its cosine part and h for its sine part, and -k comes free
    (T_-k = C_k + i S_k when T_k = C_k - i S_k).  With ``step`` the output
    positions are x = 0, step, 2 step, ... (``out_len`` of them).
    """
    h = n // 2

    def tap(t):
        index = [slice(None)] * a.ndim
        index[axis] = slice(h + t, h + t + step * (out_len - 1) + 1, step)
        return a[tuple(index)]

    a0 = tap(0)
    sums = [tap(t) + tap(-t) for t in range(1, h + 1)]
    diffs = [tap(t) - tap(-t) for t in range(1, h + 1)]
    out = {}
    for k in sorted(set(abs(int(k)) for k in ks)):
        cos_part = a0.copy()
        for t, s in enumerate(sums, start=1):
            cos_part += np.float32(np.cos(2 * np.pi * k * t / n)) * s
        if k == 0:
            out[0] = cos_part
            continue
        sin_part = np.zeros_like(cos_part)
        for t, d in enumerate(diffs, start=1):
            sin_part += np.float32(np.sin(2 * np.pi * k * t / n)) * d
        if k in ks:
            out[k] = _complex(cos_part, -sin_part)
        if -k in ks:
            out[-k] = _complex(cos_part, sin_part)
    return out


def _complex(re, im):
    """re + i im without float64 promotion (inputs may themselves be complex)."""
    if np.iscomplexobj(re) or np.iscomplexobj(im):
        return re + np.complex64(1j) * im
    out = np.empty(re.shape, np.complex64)
    out.real = re
    out.imag = im
    return out


def _band_dft_matrix(n, out_len, step=1):
    """(n * out_len, step (out_len - 1) + n) complex64: the centred n-point DFT along one axis.

    Row ``(k + n//2) * out_len + o`` holds exp(-2 pi i k t / n) at column
    ``step o + t + n//2`` (t = -n//2..n//2): multiplying it into a padded axis
    gives every frequency k at every output position (every ``step``-th
    position of the axis) in one matrix product.
    """
    h = n // 2
    m = np.zeros((n, out_len, step * (out_len - 1) + 1 + 2 * h), np.complex64)
    o = np.arange(out_len)
    for ki, k in enumerate(range(-h, h + 1)):
        for t in range(-h, h + 1):
            m[ki, o, step * o + t + h] = np.exp(-2j * np.pi * k * t / n)
    return m.reshape(n * out_len, -1)


def _fft_magnitudes(padded, n, out_shape=None, step=1):
    """Half-space local DFT magnitudes of every window, by separable filtering.

    The x axis is transformed with the radix-n butterfly (`_axis_dft`, only
    kx >= 0 is needed); the y and z axes with banded DFT matrices, so the bulk of
    the work is two complex matrix products (BLAS) instead of a few hundred
    elementwise passes.  Call it on blocks of a few rows (see
    `_project_fft_magnitudes`) so the intermediates stay in cache.

    Parameters
    ----------
    padded : 3D ndarray
        Volume (or block) already extended by n//2 on every side.
    n : int
        Window edge (odd).
    out_shape : tuple, optional
        Output voxels along z, y, x; defaults to every voxel
        (``ceil((padded.shape - (n - 1)) / step)``).
    step : int
        Grid step: only voxels whose indices are multiples of ``step`` (along
        every axis) are computed, at 1 / step^3 of the cost.

    Returns
    -------
    (K, nz, ny, nx) float32 ndarray
        Feature k at output voxel x equals ``_window_fft_magnitudes`` of the
        window centred on voxel ``step x``, k ordered as `_fft_half_indices`.
    """
    h = n // 2
    nz, ny, nx = out_shape or grid_shape([s - 2 * h for s in padded.shape], step)
    freqs, _ = _fft_half_indices(n)
    out = np.empty((len(freqs), nz, ny, nx), np.float32)
    u = np.asarray(padded, np.float32)
    by = _band_dft_matrix(n, ny, step)
    bz = _band_dft_matrix(n, nz, step)
    # the band matrices read step (len - 1) + n rows of the padded block
    u = u[:step * (nz - 1) + n, :step * (ny - 1) + n]
    coefficients = {}
    for kx, xk in _axis_dft(u, 2, n, nx, range(0, h + 1), step).items():
        yk = np.matmul(by, xk.astype(np.complex64, copy=False))   # (Z, n*ny, nx)
        zk = bz @ yk.reshape(yk.shape[0], -1)                      # (n*nz, n*ny*nx)
        coefficients[kx] = zk.reshape(n, nz, n, ny, nx)
    for row, (kz, ky, kx) in enumerate(freqs):
        np.abs(coefficients[kx][kz + h, :, ky + h], out=out[row])
    return out


# --------------------------------------------------------------------------- Gabor

def gabor_bank(n, num_sinusoids=10, max_freq=0.5):
    """PickET's bank of real 3D Gabor filters, one per frequency triple.

    Parameters
    ----------
    n : int
        Window edge (odd).
    num_sinusoids : int
        Frequencies per axis, ``linspace(0, max_freq, num_sinusoids)``.

    Returns
    -------
    bank : (num_sinusoids^3, n^3) float32 ndarray
        Filters flattened in [a, b, c] window order.
    freqs : (num_sinusoids^3, 3) ndarray
        (fa, fb, fc) cycles/voxel along window axes (z, y, x) of each filter.

    Examples
    --------
    >>> bank, freqs = gabor_bank(5, num_sinusoids=3)
    >>> bank.shape, freqs.shape
    ((27, 125), (27, 3))
    >>> freqs[1].tolist()                          # (fa, fb, fc) cycles/voxel
    [0.0, 0.0, 0.25]
    """
    h = n // 2
    sigma = h / 3
    t = np.linspace(0, n, n)             # PickET's wave coordinate (not unit-spaced)
    r = np.arange(-h, h + 1)
    g1 = np.exp(-0.5 * r ** 2 / (2 * sigma ** 2))
    gauss = g1[:, None, None] * g1[None, :, None] * g1[None, None, :]
    f = np.linspace(0, max_freq, num_sinusoids)
    fa, fb, fc = [a.ravel() for a in np.meshgrid(f, f, f, indexing="ij")]
    phase = (fa[:, None, None, None] * t[None, :, None, None]
             + fb[:, None, None, None] * t[None, None, :, None]
             + fc[:, None, None, None] * t[None, None, None, :])
    bank = np.cos(2 * np.pi * phase) * gauss[None]
    return (bank.reshape(len(fa), n ** 3).astype(np.float32),
            np.column_stack([fa, fb, fc]))


def select_gabor_filters(windows, bank, num_output_features=64):
    """Indices of the filters whose responses vary most over the sample.

    PickET computes every filter's response to every window and their
    standard deviations.  A response is linear in the window, so its variance
    is ``f' C f`` with C the windows' covariance: one n^3 x n^3 matrix from
    the sample, then a small product per filter -- the same numbers without
    the (M, filters) response matrix (100,000 x 1,000 floats in PickET).

    Returns
    -------
    (num_output_features,) int ndarray
        Sorted by increasing response standard deviation, as PickET's argsort.

    Examples
    --------
    >>> import numpy as np
    >>> bank, _ = gabor_bank(3, num_sinusoids=2)
    >>> windows = np.random.default_rng(1).random((200, 27)).astype(np.float32)
    >>> chosen = select_gabor_filters(windows, bank, num_output_features=3)
    >>> len(chosen), int(chosen[-1]) == int(np.argmax((windows @ bank.T).std(axis=0)))
    (3, True)
    """
    windows = np.asarray(windows, np.float64)
    centred = windows - windows.mean(axis=0)
    covariance = centred.T @ centred / len(windows)
    bank = np.asarray(bank, np.float64)
    stds = np.sqrt(np.maximum(((bank @ covariance) * bank).sum(axis=1), 0))
    return np.argsort(stds, kind="stable")[-int(num_output_features):]


# --------------------------------------------------------------------------- generic

def window_features(windows, n, mode, gabor_filters=None):
    """PickET's features of explicit windows (fitting sample; reference).

    Parameters
    ----------
    windows : (M, n^3) array
    n : int
    mode : {'FFT', 'Gabor', 'intensities'}
    gabor_filters : (F, n^3) array
        The selected Gabor filters (Gabor mode only).

    Returns
    -------
    (M, d) float32 ndarray
        d = n^3 (intensities), (n^3 + 1) / 2 (FFT, half-space), F (Gabor).

    Examples
    --------
    >>> import numpy as np
    >>> windows = np.zeros((2, 27), np.float32)
    >>> windows[1, 13] = 1.0                       # a centred impulse
    >>> features = window_features(windows, 3, "FFT")
    >>> features.shape                             # the non-redundant half: (27 + 1) / 2
    (2, 14)
    >>> # an impulse has a flat spectrum, an empty window none
    >>> np.unique(np.round(features[1], 3)).tolist(), float(features[0].max())
    ([1.0], 0.0)
    """
    mode = check_feature_mode(mode)
    windows = np.asarray(windows, np.float32)
    if mode == "intensities":
        return windows
    if mode == "FFT":
        return _window_fft_magnitudes(windows, n)
    if gabor_filters is None:
        raise ValueError("Gabor features need the selected filters (gabor_filters)")
    return windows @ np.asarray(gabor_filters, np.float32).T


def _window_kernels(projection, mode, n, gabor_filters=None):
    """Correlation kernels equivalent to linear maps of linear features.

    For intensities (features = window) and Gabor (features = filters @ window),
    ``projection @ features`` is ``kernels @ window``: one n^3 kernel per row.

    Parameters
    ----------
    projection : (P, d) array
    mode : {'Gabor', 'intensities'}

    Returns
    -------
    (P, n, n, n) float64 ndarray
    """
    mode = check_feature_mode(mode)
    projection = np.atleast_2d(np.asarray(projection, float))
    if mode == "intensities":
        kernels = projection
    elif mode == "Gabor":
        kernels = projection @ np.asarray(gabor_filters, float)
    else:
        raise ValueError("FFT magnitudes are not linear in the window: no kernel exists")
    return kernels.reshape(-1, n, n, n)


def _transform_shape(shape):
    """FFT size used by `_correlate_kernels` for a padded block of this shape."""
    return tuple(scipy.fft.next_fast_len(int(s), real=True) for s in shape)


def _kernel_spectra(kernels, fshape, workers=1):
    """Spectra of n^3 kernels for correlation by FFT on transforms of shape ``fshape``.

    Correlation is convolution with the flipped kernel (read from offset n-1),
    so these are the real FFTs of the flipped kernels.

    Returns
    -------
    list of complex64 ndarray
    """
    return [scipy.fft.rfftn(np.asarray(k)[::-1, ::-1, ::-1].astype(np.float32), fshape,
                            workers=workers) for k in kernels]


def _correlate_kernels(padded, kernels, workers=1, cache=None, consume=None, step=1):
    """Valid correlation of a padded volume (or chunk) with several n^3 kernels.

    out[p, x] = sum_w padded[x + w] * kernels[p, w], w over the window; with the
    volume padded by `pad_volume`, out[p] at voxel x is ``kernels[p] . window(x)``.
    Computed with real FFTs: one forward transform of the volume, one inverse
    per kernel.

    Parameters
    ----------
    padded : 3D ndarray
    kernels : (P, n, n, n) array
    workers : int
        Threads for scipy.fft.
    cache : dict, optional
        Kernel spectra by transform shape, reused across z-chunks of one volume.
    consume : callable, optional
        ``consume(p, response)`` receives each kernel's (nz, ny, nx) response
        in turn instead of it being stored (a reduction over the kernels then
        never holds all P of them).
    step : int
        Grid step: only voxels whose indices are multiples of it are returned
        (the inverse transforms keep only those planes, axis by axis).

    Returns
    -------
    (P, nz, ny, nx) float32 ndarray, or None with ``consume``
        nz, ny, nx = ceil(valid size / step).
    """
    kernels = np.asarray(kernels)
    n = kernels.shape[-1]
    shape_in = padded.shape
    valid = tuple(s - n + 1 for s in shape_in)
    out_shape = grid_shape(valid, step)
    fshape = _transform_shape(shape_in)
    spectrum = scipy.fft.rfftn(np.asarray(padded, np.float32), fshape, workers=workers)
    cache = {} if cache is None else cache
    if fshape not in cache:
        cache[fshape] = _kernel_spectra(kernels, fshape, workers)
    out = None if consume else np.empty((len(kernels),) + out_shape, np.float32)
    valid_z, valid_y, valid_x = (slice(n - 1, n - 1 + s, step) for s in valid)
    # one product buffer for all kernels, overwritten by the inverse transform:
    # fresh chunk-sized temporaries per kernel cost as much as the transform
    product = np.empty_like(spectrum)
    for p, kspec in enumerate(cache[fshape]):
        np.multiply(spectrum, kspec, out=product)
        # the inverse axis by axis, dropping the invalid (halo, wrapped) planes
        # after each axis: the y and x passes then transform only what is kept
        # (~35 % less work than irfftn of the whole padded chunk)
        t = scipy.fft.ifft(product, axis=0, workers=workers, overwrite_x=True)[valid_z]
        t = scipy.fft.ifft(t, axis=1, workers=workers, overwrite_x=True)[:, valid_y]
        response = scipy.fft.irfft(t, fshape[2], axis=2, workers=workers)[..., valid_x]
        if consume:
            consume(p, response)
        else:
            out[p] = response
    return out


def _project_fft_magnitudes(padded, n, projection, block=None, reduce=None, step=1,
                            outputs=None):
    """``projection @ _fft_magnitudes`` at every voxel, in cache-sized blocks.

    The magnitudes of a block of ``block`` (z, y) rows stay in the CPU cache
    between the butterfly and the matrix product: this is ~10x faster than
    transforming a whole slab at once and never holds (n^3+1)/2 feature volumes.
    The default block is 6 z-rows by 2048 / nx y-rows (about 12,000 voxels):
    6 x 4 rows were measured ~1.7x faster than 8 x 8 on 512-voxel rows (the
    banded DFT matrices of `_fft_magnitudes` waste less on zeros in thin
    blocks), 6 x 16 1.25x faster than 6 x 4 on 128-voxel rows.

    Parameters
    ----------
    padded : 3D ndarray
        Volume or z-chunk extended by n//2 on every side.
    projection : (P, K) array
        K = (n^3 + 1) / 2, columns ordered as `_fft_half_indices`.
    reduce : callable, optional
        Maps each block's (P, bz, by, nx) projections to one (bz, by, nx)
        value per voxel (e.g. a classifier's margin), so the P projections of
        the whole block are never held.
    step : int
        Grid step (`_fft_magnitudes`): voxels whose indices are multiples of it.
    outputs : int, optional
        ``reduce`` returns this many values per voxel, (outputs, bz, by, nx).

    Returns
    -------
    (P, nz, ny, nx) float32 ndarray, or (nz, ny, nx) with ``reduce``
        ((outputs, nz, ny, nx) with ``outputs``); nz, ny, nx = ceil(unpadded size / step).
    """
    h = n // 2
    projection = np.atleast_2d(np.asarray(projection, np.float32))
    nz, ny, nx = grid_shape([s - 2 * h for s in padded.shape], step)
    if reduce:
        lead = (int(outputs),) if outputs else ()
    else:
        lead = (len(projection),)
    out = np.empty(lead + (nz, ny, nx), np.float32)
    bz, by = block or (6, max(1, 2048 // nx))
    for z0 in range(0, nz, bz):
        z1 = min(nz, z0 + bz)
        for y0 in range(0, ny, by):
            y1 = min(ny, y0 + by)
            mags = _fft_magnitudes(padded[step * z0:step * (z1 - 1) + n,
                                          step * y0:step * (y1 - 1) + n], n,
                                   (z1 - z0, y1 - y0, nx), step)
            proj = (projection @ mags.reshape(len(mags), -1)).reshape(
                len(projection), z1 - z0, y1 - y0, nx)
            if reduce:
                out[..., z0:z1, y0:y1, :] = reduce(proj)
            else:
                out[:, z0:z1, y0:y1] = proj
    return out


def feature_volumes(volume, n, mode, gabor_filters=None, workers=1):
    """Every feature at every voxel of a (small) volume, computed as filters.

    The fast counterpart of ``window_features(_all_windows(volume, n), ...)``;
    used for tests and inspection (prediction never needs all features).

    Returns
    -------
    (d, nz, ny, nx) float32 ndarray

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    >>> by_filters = feature_volumes(volume, 3, "intensities")
    >>> by_filters.shape
    (27, 6, 7, 8)
    >>> # feature 13 is the centre of the 3^3 window: the volume itself
    >>> bool(np.allclose(by_filters[13], volume, atol=1e-5))
    True
    """
    mode = check_feature_mode(mode)
    padded = pad_volume(volume, n)
    if mode == "FFT":
        return _fft_magnitudes(padded, n)
    d = n ** 3 if mode == "intensities" else len(gabor_filters)
    kernels = _window_kernels(np.eye(d), mode, n, gabor_filters)
    return _correlate_kernels(padded, kernels, workers)
