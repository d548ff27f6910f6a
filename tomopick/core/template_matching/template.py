"""The template and its mask, at the tomogram's voxel size, in a cubic box."""
import numpy as np

from ..fourier import resample_volume, soft_sphere


def crop_or_pad(volume, n, fill=0.0):
    """A cube of side ``n`` with the input's centre element ``m // 2`` at ``n // 2``.

    Examples
    --------
    >>> v = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    >>> out = crop_or_pad(v, 5)
    >>> out.shape, float(out[2, 2, 2]) == float(v[1, 1, 1])
    ((5, 5, 5), True)
    >>> float(crop_or_pad(out, 3)[1, 1, 1])
    13.0
    """
    volume = np.asarray(volume, dtype=np.float32)
    out = np.full((n, n, n), fill, dtype=np.float32)
    src, dst = [], []
    for m in volume.shape:
        lo = n // 2 - m // 2                     # where the input's index 0 lands
        s0, d0 = max(0, -lo), max(0, lo)
        length = min(m - s0, n - d0)
        src.append(slice(s0, s0 + length))
        dst.append(slice(d0, d0 + length))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def template_box_size(diameter_vox):
    """Odd box side (voxels) holding a particle of a diameter plus a soft mask edge.

    Examples
    --------
    >>> template_box_size(10.0), template_box_size(11.2)   # diameter + 6, rounded up to odd
    (17, 19)
    """
    n = int(np.ceil(diameter_vox)) + 6
    return n + 1 - n % 2


def prepare_template(reference, reference_voxel_size, voxel_size, diameter, mask=None,
                     invert=False, log=None):
    """Reference and mask resampled to a tomogram's voxel size, in a cubic box.

    Parameters
    ----------
    reference : (n, n, n) array of float
        The reference density, [z, y, x]; any polarity (see ``invert``).
    reference_voxel_size : float
        Å per voxel of ``reference`` (and ``mask``).
    voxel_size : float
        Å per voxel of the tomogram.
    diameter : float
        Particle diameter, Å: the box is this plus a margin, and the default
        mask is a soft sphere of this diameter (2-voxel cos^2 edge).
    mask : array of float, optional
        Same shape as ``reference``, values in [0, 1].
    invert : bool
        Negate the reference (template density bright, tomogram density dark).
    log : callable, optional
        Receives one line when resampling happens.

    Returns
    -------
    template : (m, m, m) ndarray of float32
        Particle centre at element ``m // 2``; m odd.
    mask : (m, m, m) ndarray of float32
    voxel_size : float
        Å per voxel reached by the resampling (within 0.5 %).

    Raises
    ------
    ValueError
        For an empty, non-finite or constant reference, a mask of another
        shape, or non-positive sizes.

    Examples
    --------
    >>> ref = np.zeros((32, 32, 32), np.float32); ref[12:20, 14:18, 10:22] = 1
    >>> t, m, size = prepare_template(ref, 10.0, 20.0, 120.0)
    >>> t.shape, m.shape, size
    ((13, 13, 13), (13, 13, 13), 20.0)
    """
    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim != 3 or ref.size == 0:
        raise ValueError(f"the reference must be a 3D volume, got shape {ref.shape}")
    if not np.isfinite(ref).all():
        raise ValueError("the reference has non-finite values (NaN or inf)")
    if float(ref.std()) <= 1e-12 * max(1.0, float(np.abs(ref).max())):
        raise ValueError(f"the reference is empty or constant (every voxel {float(ref.flat[0])})")
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape != ref.shape:
            raise ValueError(f"the mask has shape {mask.shape}, the reference {ref.shape}: "
                             f"they must match")
        if float(mask.max()) <= 0:
            raise ValueError("the mask is empty (no positive voxel)")
    if reference_voxel_size <= 0 or voxel_size <= 0 or diameter <= 0:
        raise ValueError(f"voxel sizes and the diameter must be positive, got "
                         f"{reference_voxel_size}, {voxel_size} and {diameter}")
    if invert:
        ref = -ref
    achieved = float(reference_voxel_size)
    if abs(reference_voxel_size / voxel_size - 1) > 1e-4:
        ref, achieved = resample_volume(ref, reference_voxel_size, voxel_size)
        if mask is not None:
            mask = np.clip(resample_volume(mask, reference_voxel_size, voxel_size)[0], 0, 1)
        if log:
            log(f"reference resampled from {reference_voxel_size:.3f} to {achieved:.3f} Å/voxel "
                f"(tomogram {voxel_size:.3f}), box {ref.shape[0]}")
    n = template_box_size(diameter / voxel_size)
    # the background of a map (its edge) is the level the template sits on
    edge = np.concatenate([ref[[0, -1]].ravel(), ref[:, [0, -1]].ravel(),
                           ref[..., [0, -1]].ravel()])
    template = crop_or_pad(ref - np.float32(np.median(edge)), n)
    if mask is None:
        mask = soft_sphere((n, n, n), diameter / voxel_size / 2, edge=2.0)
    else:
        mask = crop_or_pad(mask, n)
    return template, mask.astype(np.float32), achieved
