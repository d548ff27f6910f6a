"""Fast local normalised cross-correlation (FLCF) of a template with a volume.

For a rotation R the template is rotated (trilinear interpolation about its
centre element), weighted by the tomogram's missing wedge in the tomogram's
frame (the wedge does not rotate with the particle), then normalised under
the mask ``m`` to zero mean and unit variance (``t'``, weights m). With
``N = sum(m)`` and ``sigma_T(x)`` the standard deviation of the tomogram under
the mask centred at x (weights m), the score is

    cc(x) = sum_r t'(r) T(x + r) / (N sigma_T(x))

(Roseman 2003, as pytom-match-pick): 1 for a perfect linear match, ~0 for
unrelated content. The correlation runs on real FFTs in float32; the
template's forward FFT is pruned (rows and planes of zeros skipped), so a
rotation costs about 1.3 volume FFTs. The mask is spherical, so the local
statistics are computed once, not per rotation.

Arrays are [z, y, x]; ``R @ r`` maps a canonical offset (x, y, z) of the
template to the tomogram (core's convention).
"""
import numpy as np
import scipy.fft
from scipy import ndimage



def _workers():
    """FFT threads: those of the caller's ``scipy.fft.set_workers`` context (`match_template`)."""
    return scipy.fft.get_workers()


def _box_points(n):
    """(3, n^3) offsets (x, y, z) of a cube's voxels from its centre element."""
    g = np.arange(n, dtype=np.float32) - np.float32(n // 2)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()])


def rotate_templates(template, rotations, order=1, points=None):
    """Rotated copies ``t_R(x) = t(R^T x)`` of a cubic template about its centre element.

    Parameters
    ----------
    template : (n, n, n) array of float
    rotations : (K, 3, 3) array of float
    order : int
        Spline order of `scipy.ndimage.map_coordinates` (1 = trilinear).
    points : (3, P) ndarray, optional
        Offsets (x, y, z) from the centre to evaluate instead of the whole
        box (e.g. only those a mask reaches).

    Returns
    -------
    (K, n, n, n) ndarray of float32, or (K, P) when ``points`` is given

    Examples
    --------
    >>> t = np.zeros((5, 5, 5), np.float32); t[2, 2, 3] = 1      # (x, y, z) = (+1, 0, 0)
    >>> Rz = np.array([[[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]])   # x -> y
    >>> np.argwhere(rotate_templates(t, Rz)[0] > 0.5).tolist()
    [[2, 3, 2]]
    """
    template = np.asarray(template, dtype=np.float32)
    n = template.shape[0]
    pts = _box_points(n) if points is None else points
    rotations = np.asarray(rotations, dtype=np.float32).reshape(-1, 3, 3)
    # R^T x for every rotation, as (x, y, z) offsets -> [z, y, x] indices
    src = np.einsum("kji,jp->kip", rotations, pts) + np.float32(n // 2)
    coords = src[:, ::-1].transpose(1, 0, 2).reshape(3, -1)
    out = ndimage.map_coordinates(template, coords, order=order, mode="constant", cval=0.0,
                                  prefilter=False)
    if points is not None:
        return out.reshape(len(rotations), -1)
    return out.reshape(len(rotations), n, n, n)


def condition_templates(rotated, mask, box_filter):
    """Wedge/band-pass filter and normalise rotated templates under the mask.

    Parameters
    ----------
    rotated : (K, n, n, n) array of float32
    mask : (n, n, n) array of float32
    box_filter : (n, n, n // 2 + 1) array of float32 or None
        Fourier weights on the template box (wedge x band-pass).

    Returns
    -------
    (K, n, n, n) ndarray of float32
        ``m (t - mu) / s`` with mu, s the mean and standard deviation of the
        filtered template under the weights m, so that a volume equal to
        ``a t + b`` under the mask scores exactly 1 (see the module docstring).

    Examples
    --------
    >>> t = np.random.default_rng(0).standard_normal((1, 9, 9, 9)).astype(np.float32)
    >>> g = np.arange(9) - 4
    >>> mask = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2 <= 16)
    >>> c = condition_templates(t, mask.astype(np.float32), None)
    >>> print(f"{c.sum():.3f} {(c ** 2).sum() / mask.sum():.3f}")   # zero mean, unit variance
    0.000 1.000
    >>> bool(np.all(c[:, ~mask] == 0))
    True
    """
    t = rotated
    if box_filter is not None:
        spec = scipy.fft.rfftn(t, axes=(1, 2, 3), workers=_workers())
        spec *= box_filter
        t = scipy.fft.irfftn(spec, s=t.shape[1:], axes=(1, 2, 3), workers=_workers())
    msum = np.float32(mask.sum())
    mu = np.einsum("kzyx,zyx->k", t, mask) / msum
    var = np.einsum("kzyx,zyx->k", t * t, mask) / msum - mu * mu
    s = np.sqrt(np.maximum(var, 1e-30)).astype(np.float32)
    out = (t - mu[:, None, None, None]) * mask / s[:, None, None, None]
    return out.astype(np.float32, copy=False)


def _wrap_indices(n, size):
    """Indices of a volume of ``size`` where a centred box of ``n`` lands wrapped at 0."""
    return (np.arange(n) - n // 2) % size


def pruned_rfftn(boxes, shape):
    """rfftn of small centred boxes placed at the origin (wrapped) of a larger volume.

    Equal to ``rfftn(V)`` with ``V`` zero but for the box, its centre element
    at index 0; the passes over rows and planes that are all zero are skipped.

    Parameters
    ----------
    boxes : (K, n, n, n) array of float32
    shape : (nz, ny, nx)

    Returns
    -------
    (K, nz, ny, nx // 2 + 1) ndarray of complex64

    Examples
    --------
    >>> b = np.random.default_rng(0).standard_normal((1, 5, 5, 5)).astype(np.float32)
    >>> v = np.zeros((1, 12, 10, 8), np.float32)
    >>> v[np.ix_([0], (np.arange(5) - 2) % 12, (np.arange(5) - 2) % 10, (np.arange(5) - 2) % 8)] = b
    >>> np.allclose(pruned_rfftn(b, (12, 10, 8)), scipy.fft.rfftn(v, axes=(1, 2, 3)), atol=1e-4)
    True
    """
    k, n = boxes.shape[0], boxes.shape[1]
    nz, ny, nx = shape
    iz, iy, ix = (_wrap_indices(n, s) for s in shape)
    a = np.zeros((k, n, n, nx), np.float32)
    a[..., ix] = boxes
    a = scipy.fft.rfft(a, axis=3, workers=_workers())
    b = np.zeros((k, n, ny, nx // 2 + 1), np.complex64)
    b[:, :, iy] = a
    b = scipy.fft.fft(b, axis=2, workers=_workers(), overwrite_x=True)
    c = np.zeros((k, nz, ny, nx // 2 + 1), np.complex64)
    c[:, iz] = b
    return scipy.fft.fft(c, axis=1, workers=_workers(), overwrite_x=True)


class Correlator:
    """A filtered volume ready for FLCF with one spherical mask.

    Parameters
    ----------
    volume : (nz, ny, nx) array of float
    volume_filter : (nz, ny, nx // 2 + 1) array of float32 or None
        Fourier weights applied once to the volume (band-pass, whitening).
    mask : (n, n, n) array of float32
        Spherical (rotation-invariant) mask of the template.
    keep_real : bool
        Keep the filtered volume in real space (for local refinement).

    Attributes
    ----------
    spectrum : complex64 rfftn of the filtered volume.
    inv_norm : (nz, ny, nx) float32, ``1 / (N sigma_T(x))`` (sigma floored at
        5 % of its median, or 1e-3 of its maximum where the volume is empty).
    filtered : the filtered volume (when ``keep_real``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> template = rng.standard_normal((9, 9, 9)).astype(np.float32)
    >>> g = np.arange(9) - 4
    >>> mask = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    ...         <= 16).astype(np.float32)
    >>> volume = rng.normal(0, 0.1, (24, 32, 28)).astype(np.float32)
    >>> volume[10:19, 4:13, 15:24] += 2 * template     # centre element at [z, y, x] = [14, 8, 19]
    >>> correlator = Correlator(volume, None, mask)
    >>> cc = next(correlator.scores(condition_templates(template[None], mask, None)))
    >>> np.unravel_index(np.argmax(cc), cc.shape), f"{cc.max():.2f}"
    ((14, 8, 19), '1.00')
    """

    def __init__(self, volume, volume_filter, mask, keep_real=True):
        volume = np.asarray(volume, dtype=np.float32)
        self.shape = volume.shape
        spec = scipy.fft.rfftn(volume, workers=_workers())
        if volume_filter is not None:
            spec *= volume_filter
        self.spectrum = spec
        filtered = scipy.fft.irfftn(spec, s=self.shape, workers=_workers()).astype(np.float32)
        n = mask.shape[0]
        msum = float(mask.sum())
        mspec = pruned_rfftn(mask[None].astype(np.float32), self.shape)[0]
        # the mask is symmetric: correlating with it is convolving with it
        mean = scipy.fft.irfftn(spec * mspec, s=self.shape, workers=_workers())
        sq = scipy.fft.irfftn(scipy.fft.rfftn(filtered * filtered, workers=_workers()) * mspec,
                              s=self.shape, workers=_workers())
        mean /= msum
        sq /= msum
        sq -= mean * mean
        del mean
        sigma = np.sqrt(np.maximum(sq, 0, out=sq), out=sq).astype(np.float32, copy=False)
        positive = sigma[sigma > 0]
        floor = max(0.05 * float(np.median(positive)) if positive.size else 0.0,
                    1e-3 * float(sigma.max()), 1e-30)
        np.maximum(sigma, floor, out=sigma)
        self.inv_norm = (1.0 / (msum * sigma)).astype(np.float32)
        self.filtered = filtered if keep_real else None
        self.mask_sum = msum
        self.box = n

    def scores(self, conditioned):
        """FLCF maps of conditioned templates, one at a time (generator of float32 volumes)."""
        spectra = pruned_rfftn(conditioned, self.shape)
        for s in spectra:
            np.conjugate(s, out=s)
            s *= self.spectrum
            cc = scipy.fft.irfftn(s, s=self.shape, workers=_workers(), overwrite_x=True)
            cc = cc.astype(np.float32, copy=False)
            cc *= self.inv_norm
            yield cc


def local_scores(data, inv_norm, center, conditioned, shift):
    """FLCF of conditioned templates at the voxels within ``shift`` of a centre.

    Parameters
    ----------
    data : (nz, ny, nx) float32
        Filtered volume (`Correlator.filtered`).
    inv_norm : (nz, ny, nx) float32
        `Correlator.inv_norm`.
    center : (3,) int
        (x, y, z) voxel.
    conditioned : (K, n, n, n) float32
        From `condition_templates`.
    shift : int
        Half-size of the searched neighbourhood, voxels.

    Returns
    -------
    (K, 2s+1, 2s+1, 2s+1) ndarray of float32
        Scores at offsets [dz, dy, dx] = index - s; -inf where the voxel lies
        outside the volume.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> template = rng.standard_normal((9, 9, 9)).astype(np.float32)
    >>> g = np.arange(9) - 4
    >>> mask = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    ...         <= 16).astype(np.float32)
    >>> volume = rng.normal(0, 0.1, (24, 32, 28)).astype(np.float32)
    >>> volume[10:19, 4:13, 15:24] += 2 * template     # centre at (x, y, z) = (19, 8, 14)
    >>> corr = Correlator(volume, None, mask)
    >>> conditioned = condition_templates(template[None], mask, None)
    >>> local = local_scores(corr.filtered, corr.inv_norm, (19, 8, 14), conditioned, shift=1)
    >>> local.shape, np.unravel_index(np.argmax(local[0]), local[0].shape)
    ((1, 3, 3, 3), (1, 1, 1))
    >>> cc = next(corr.scores(conditioned))                # the same as the global FLCF there
    >>> np.allclose(local[0], cc[13:16, 7:10, 18:21], atol=1e-4)
    True
    """
    k, n = conditioned.shape[0], conditioned.shape[1]
    size = n + 2 * shift
    half = size // 2
    cx, cy, cz = (int(c) for c in center)
    lo = np.array([cz, cy, cx]) - half
    box = np.zeros((size,) * 3, np.float32)
    src, dst = [], []
    for axis in range(3):
        a0, a1 = max(lo[axis], 0), min(lo[axis] + size, data.shape[axis])
        src.append(slice(a0, a1))
        dst.append(slice(a0 - lo[axis], a1 - lo[axis]))
        if a1 <= a0:
            return np.full((k,) + (2 * shift + 1,) * 3, -np.inf, np.float32)
    box[tuple(dst)] = data[tuple(src)]
    fbox = scipy.fft.rfftn(box, workers=1)
    tmp = np.zeros((k, size, size, size), np.float32)
    tmp[:, :n, :n, :n] = conditioned
    # centre element n // 2 of the template to index 0
    tmp = np.roll(tmp, (-(n // 2),) * 3, axis=(1, 2, 3))
    spec = scipy.fft.rfftn(tmp, axes=(1, 2, 3), workers=1)
    np.conjugate(spec, out=spec)
    spec *= fbox
    cc = scipy.fft.irfftn(spec, s=(size,) * 3, axes=(1, 2, 3), workers=1)
    # offset d of the template centre from the box centre is element half + d
    sl = slice(half - shift, half + shift + 1)
    cc = cc[:, sl, sl, sl].astype(np.float32)
    norm = np.zeros((2 * shift + 1,) * 3, np.float32)
    src, dst = [], []
    for axis, c in enumerate((cz, cy, cx)):
        a0, a1 = max(c - shift, 0), min(c + shift + 1, data.shape[axis])
        src.append(slice(a0, a1))
        dst.append(slice(a0 - (c - shift), a1 - (c - shift)))
    norm[tuple(dst)] = inv_norm[tuple(src)]
    out = cc * norm
    out[:, norm == 0] = -np.inf
    return out
