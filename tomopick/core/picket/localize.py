"""PickET stage 2: particle positions from a binary particle mask.

PickET splits the particle mask into objects by connected components or by a
watershed of the distance transform (markers: local maxima at least
``min_distance`` apart) and reports the object centroids.  Additions here:

- objects smaller than ``min_volume_fraction`` of the expected particle volume
  (a sphere of ``particle_diameter``) are noise, objects larger than
  ``max_volume_factor`` times it are membranes, gold or merged clutter: both are
  dropped (and counted);
- watershed markers are spaced, when ``min_distance`` is 0, by the typical
  radius of the particles AS THE MASK SHOWS THEM (`marker_spacing`): the median
  of the distance-transform maximum of the particle-sized components, within
  0.25-0.5 particle diameters.  Two distance maxima closer than one blob radius
  lie in one blob; farther ones are the cores of touching particles.  A fixed
  fraction of the diameter over-split sparse particles (whose mask blobs are
  large) and under-split crowded ones (whose blobs are small); every
  connected component gets at least one marker;
- objects whose mass (summed margin) is below ``min_mass_fraction`` (0.35) of
  the median mass of the objects that pass the size filter are dropped
  (and counted): noise patches that cross the cluster boundary are
  large but faint, particles are both;
- objects whose mean margin per voxel exceeds ``max_density_factor`` (4) times
  that of the median object are dropped (and counted): gold beads and other
  metal or ice contamination are far denser than any protein;
- objects touching the volume border are kept (PickET's peak finder silently
  excludes markers near the border); only slivers whose centroid lies within
  ``edge_margin`` (default D/8) of a face are dropped, and counted: they are
  the filtering/reconstruction artefacts that line tomogram faces, while a
  particle must be more than about three quarters outside the volume for its
  visible part to have its centroid that close to the face;
- every pick has a score: the object's mass, i.e. the sum over its voxels of the
  segmentation's particle margin, so picks can be ranked and thresholded.
"""
import numpy as np
import scipy.ndimage as ndi
from skimage.feature import peak_local_max

from tomopick.core.picks import Picks

__all__ = [
    "LOCALIZATIONS", "check_localization", "expected_volume", "marker_spacing",
    "split_watershed", "localize_particles", "localize_segmentation",
]


def _watershed(*args, **kwargs):
    """skimage's watershed, imported on first use: skimage.segmentation imports
    matplotlib, which writes ~/.config/matplotlib (core imports must write nothing)."""
    from skimage.segmentation import watershed as skimage_watershed
    return skimage_watershed(*args, **kwargs)


LOCALIZATIONS = ("connected components", "watershed")
# components whose bounding box exceeds this many voxels are split slab by slab
SLAB_VOXELS = 16_000_000
# bounds of the automatic watershed marker spacing, in particle diameters
MARKER_SPACING_BOUNDS = (0.25, 0.5)


def check_localization(name):
    """Canonical localisation name ('connected components' or 'watershed').

    Raises
    ------
    ValueError
        If ``name`` is neither.
    """
    key = str(name).lower().replace("_", " ")
    if key in ("connected components", "connected component labeling", "cc"):
        return "connected components"
    if key.startswith("watershed"):
        return "watershed"
    raise ValueError(f"localization {name!r} is not one of {LOCALIZATIONS}")


def expected_volume(particle_diameter):
    """Volume (voxels) of a sphere of the given diameter (voxels)."""
    return np.pi / 6 * float(particle_diameter) ** 3


def _label_sizes(labels, n, slab_voxels=4_000_000):
    """Voxels of each label 0..n, counted slab by slab.

    ``np.bincount`` casts its input to int64: on a whole int32 label volume
    that is a temporary twice its size (2.4 GB at 1000 x 1000 x 300).
    """
    sizes = np.zeros(n + 1, np.int64)
    step = max(1, slab_voxels // max(1, labels[0].size))
    for z0 in range(0, labels.shape[0], step):
        sizes += np.bincount(labels[z0:z0 + step].ravel(), minlength=n + 1)
    return sizes


def marker_spacing(mask, particle_diameter, components=None):
    """Watershed marker spacing (voxels) from the mask's own particle-sized blobs.

    The median, over the connected components whose volume is 0.1-8 times a
    sphere of ``particle_diameter``, of the component's largest distance to
    the background: the radius a particle has in this mask.  Clipped to
    ``MARKER_SPACING_BOUNDS`` diameters (0.35 D when no component is
    particle-sized).

    Parameters
    ----------
    mask : (nz, ny, nx) bool array
    particle_diameter : float
        Voxels.
    components : (labels, n) from ``scipy.ndimage.label(mask)``, optional

    Returns
    -------
    int
        >= 1.

    Examples
    --------
    >>> z, y, x = np.indices((30, 30, 60))
    >>> mask = ((x - 15) ** 2 + (y - 15) ** 2 + (z - 15) ** 2 < 36) | \\
    ...        ((x - 45) ** 2 + (y - 15) ** 2 + (z - 15) ** 2 < 36)
    >>> marker_spacing(mask, 16)            # blobs of radius 6 -> 6 voxels
    6
    """
    lo, hi = (f * float(particle_diameter) for f in MARKER_SPACING_BOUNDS)
    labels, n = components if components is not None else ndi.label(mask)
    spacing = 0.35 * float(particle_diameter)
    if n:
        sizes = _label_sizes(labels, n)[1:]
        expected = expected_volume(particle_diameter)
        plausible = np.flatnonzero((sizes >= 0.1 * expected) & (sizes <= 8 * expected)) + 1
        if len(plausible):
            # the distance transform only inside particle-sized components' boxes
            boxes = ndi.find_objects(labels)
            radii = []
            for k in plausible:
                box = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in boxes[k - 1])
                radii.append(ndi.distance_transform_edt(labels[box] == k).max())
            spacing = float(np.median(radii))
    return max(1, int(round(np.clip(spacing, lo, hi))))


def split_watershed(mask, min_distance, min_volume=0, components=None):
    """PickET's watershed: distance-transform maxima as markers, at least one per component.

    Run component by component inside each bounding box (padded by one voxel):
    the distance to the background, its maxima and the flooding of one
    component never depend on another, so this equals the whole-volume
    computation while touching only particle voxels (PickET's global version
    needs several full-volume arrays and minutes on a 512 x 512 x 200 tomogram).
    Unlike PickET's global peak search, markers of two different components do
    not suppress each other.  A component whose bounding box exceeds
    ``SLAB_VOXELS`` (a network spanning the tomogram) is processed in z-slabs
    (`_watershed_in_slabs`), which bounds the memory.

    Parameters
    ----------
    mask : (nz, ny, nx) bool array
    min_distance : int
        Minimum marker separation (voxels).
    min_volume : int
        Components smaller than this are labelled whole, without a watershed
        (they cannot hold two particles worth keeping).
    components : (labels, n) from ``scipy.ndimage.label(mask)``, optional
        int32 labels are overwritten: they become the returned labels (one
        whole-volume label array instead of two).

    Returns
    -------
    labels : (nz, ny, nx) int32 ndarray
        0 = background, objects 1..N.
    """
    if min_distance < 1:
        raise ValueError(f"watershed min_distance must be >= 1 voxel, got {min_distance}")
    components, ncomp = components if components is not None else ndi.label(mask)
    if components.dtype != np.int32:
        components = components.astype(np.int32)
    # objects are written into the components' array as NEGATIVE ids, so the
    # components not yet visited (positive) are still found; flipped at the end
    labels = components
    if ncomp == 0:
        return labels
    sizes = _label_sizes(components, ncomp)
    next_id = 1
    for comp, box in enumerate(ndi.find_objects(components), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1))
                    for b, n in zip(box, mask.shape))
        own = components[box] == comp
        target = labels[box]
        if sizes[comp] < max(min_volume, 2):
            target[own] = -next_id
            next_id += 1
            continue
        if own.size > SLAB_VOXELS:
            next_id = _watershed_in_slabs(own, target, min_distance, next_id)
            continue
        edt = ndi.distance_transform_edt(own).astype(np.float32)
        peaks = peak_local_max(edt, min_distance=int(min_distance), labels=own.astype(np.int32),
                               exclude_border=False)
        if len(peaks) == 0:            # a plateau without a strict maximum: one marker
            peaks = np.array([np.unravel_index(np.argmax(edt), edt.shape)])
        if len(peaks) == 1:
            target[own] = -next_id
            next_id += 1
            continue
        markers = np.zeros(own.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        split = _watershed(-edt, markers, mask=own)
        target[own] = -(split[own] + (next_id - 1))
        next_id += len(peaks)
    for z0 in range(0, labels.shape[0], 16):
        np.negative(labels[z0:z0 + 16], out=labels[z0:z0 + 16])
    return labels


def _watershed_in_slabs(own, target, min_distance, next_id):
    """Watershed of one very large component (a percolating network) slab by slab.

    The distance transform, its maxima and the flooding are local (a particle
    is a few min_distance across), so z-slabs with a halo of
    ``2 * min_distance + 1`` give the same markers and regions as the whole
    bounding box while holding only one slab's work arrays (the whole-box
    transform of a 512 x 512 x 200 network needs > 2 GB).  Pass 1 computes
    each slab's distance transform and keeps the maxima of its core; pass 2
    floods each slab from all markers inside it (halo included) and writes its
    core.
    """
    nz = own.shape[0]
    plane = own[0].size
    halo = 2 * int(min_distance) + 1
    core = max(2 * halo, SLAB_VOXELS // plane - 2 * halo)
    slabs = [(a, min(nz, a + core)) for a in range(0, nz, core)]
    edt = np.zeros(own.shape, np.float32)
    peaks = []
    for a, b in slabs:
        lo, hi = max(0, a - halo), min(nz, b + halo)
        sub = own[lo:hi]
        if not sub[a - lo:b - lo].any():
            continue
        sub_edt = ndi.distance_transform_edt(sub).astype(np.float32)
        edt[a:b] = sub_edt[a - lo:b - lo]
        p = peak_local_max(sub_edt, min_distance=int(min_distance),
                           labels=sub.astype(np.int32), exclude_border=False)
        p[:, 0] += lo
        peaks.append(p[(p[:, 0] >= a) & (p[:, 0] < b)])
        del sub_edt
    peaks = np.concatenate(peaks) if peaks else np.zeros((0, 3), int)
    if len(peaks) == 0:
        peaks = np.array([np.unravel_index(np.argmax(edt), edt.shape)])
    ids = next_id + np.arange(len(peaks), dtype=np.int32)
    for a, b in slabs:
        lo, hi = max(0, a - halo), min(nz, b + halo)
        sub = own[lo:hi]
        if not sub[a - lo:b - lo].any():
            continue
        inside = (peaks[:, 0] >= lo) & (peaks[:, 0] < hi)
        markers = np.zeros(sub.shape, np.int32)
        markers[tuple((peaks[inside] - [lo, 0, 0]).T)] = ids[inside]
        if not inside.any():            # a sliver of the network with no marker near
            markers[np.unravel_index(np.argmax(edt[lo:hi]), sub.shape)] = ids[0]
        split = _watershed(-edt[lo:hi], markers, mask=sub)[a - lo:b - lo]
        core_own = own[a:b]
        target[a:b][core_own] = -split[core_own]      # negative: see split_watershed
    return next_id + len(peaks)


def _relabel(labels, new_id, slab=16):
    """``labels[...] = new_id[labels]`` in place, a few slices at a time (no second volume)."""
    for z0 in range(0, labels.shape[0], slab):
        labels[z0:z0 + slab] = new_id[labels[z0:z0 + slab]]
    return labels


def _object_sums(labels, nobj, evidence=None, slab_voxels=4_000_000):
    """Volume, summed (x, y, z) and mass (summed evidence, else volume) of objects 1..nobj.

    Accumulated slab by slab: the per-voxel index arrays of one slab only
    (six 8-byte values per object voxel of the whole volume otherwise).

    Returns
    -------
    volumes : (nobj,) float
    sums : (nobj, 3) float
    mass : (nobj,) float
    """
    volumes, mass = np.zeros(nobj + 1), np.zeros(nobj + 1)
    sums = np.zeros((nobj + 1, 3))
    step = max(1, slab_voxels // max(1, labels[0].size))
    for z0 in range(0, labels.shape[0], step):
        sub = labels[z0:z0 + step]
        flat = np.flatnonzero(sub)
        lab = sub.ravel()[flat]
        volumes += np.bincount(lab, minlength=nobj + 1)
        z, y, x = np.unravel_index(flat, sub.shape)
        for axis, c in enumerate((x, y, z + z0)):
            sums[:, axis] += np.bincount(lab, weights=c, minlength=nobj + 1)
        mass += (np.bincount(lab, minlength=nobj + 1) if evidence is None else
                 np.bincount(lab, weights=np.asarray(evidence[z0:z0 + step]).ravel()[flat],
                             minlength=nobj + 1))
    return volumes[1:], sums[1:], mass[1:]


def localize_particles(mask, method="connected components", particle_diameter=None,
                       min_distance=0, evidence=None, min_volume_fraction=0.1,
                       max_volume_factor=8.0, edge_margin=None, faces=None,
                       min_mass_fraction=0.35, max_density_factor=4.0):
    """Objects of a particle mask and their centroids.

    Parameters
    ----------
    mask : (nz, ny, nx) bool array
        Particle voxels.
    method : {'connected components', 'watershed'}
    particle_diameter : float, optional
        Expected particle diameter in voxels; enables the size filter and the
        automatic watershed marker spacing.
    min_distance : int
        Watershed marker spacing in voxels; 0 = `marker_spacing` (from the mask
        and the diameter).
    evidence : (nz, ny, nx) float array, optional
        Per-voxel particle margin; scores are its sums over objects (object
        volume when not given).
    min_volume_fraction, max_volume_factor : float
        Size filter relative to the expected particle volume.
    min_mass_fraction : float
        Objects whose mass (summed evidence) is below this fraction of the
        median mass of the objects that pass the size filter are dropped
        (needs a diameter; 0 = keep all).
    max_density_factor : float
        Objects whose mean evidence per voxel is above this many times the
        median object's are dropped (needs a diameter and the evidence;
        0 = keep all).
    edge_margin : float, optional
        Objects whose centroid is closer than this (voxels) to a face are
        dropped; default particle_diameter / 8 (0 without a diameter).
    faces : (3, 2) array, optional
        (lo, hi) coordinates of the volume faces along x, y, z in the mask's
        own voxel coordinates (default: the mask's bounds; give them when the
        mask is a slab of a larger volume).

    Returns
    -------
    result : dict
        'positions' (N, 3) float (x, y, z) voxels, bottom-left origin (centre of
        [k, j, i] at (i, j, k)); 'scores' (N,); 'volumes' (N,) voxels;
        'labels' (nz, ny, nx) int32, kept objects renumbered 1..N;
        'n_objects', 'n_too_small', 'n_too_large', 'n_edge_slivers',
        'n_faint', 'n_dense'; 'min_distance' (the watershed spacing used, else 0).

    Raises
    ------
    ValueError
        If watershed is asked for with neither min_distance nor a diameter.
    """
    method = check_localization(method)
    mask = np.asarray(mask, bool)
    if method == "watershed":
        if not min_distance and not particle_diameter:
            raise ValueError("watershed needs min_distance > 0 or a particle diameter")
        components = ndi.label(mask)
        if not min_distance:
            min_distance = marker_spacing(mask, particle_diameter, components)
        min_volume = (min_volume_fraction * expected_volume(particle_diameter)
                      if particle_diameter else 0)
        labels = split_watershed(mask, min_distance, int(min_volume), components)
        del components                  # its array is now the labels
    else:
        labels, _ = ndi.label(mask)
        labels = labels.astype(np.int32, copy=False)
    nobj = int(labels.max())
    volumes, sums, mass = _object_sums(labels, nobj, evidence)
    keep = volumes > 0
    too_small = too_large = np.zeros(nobj, bool)
    if particle_diameter:
        expected = expected_volume(particle_diameter)
        too_small = volumes < min_volume_fraction * expected
        too_large = volumes > max_volume_factor * expected
        keep &= ~too_small & ~too_large
    with np.errstate(invalid="ignore", divide="ignore"):
        positions = sums / volumes[:, None]
    if edge_margin is None:
        edge_margin = particle_diameter / 8 if particle_diameter else 0.0
    if faces is None:
        faces = [(0, s - 1) for s in labels.shape[::-1]]
    faces = np.asarray(faces, float)
    to_face = np.minimum(positions - faces[:, 0], faces[:, 1] - positions).min(axis=1)
    slivers = keep & (to_face < edge_margin)
    keep &= ~slivers
    faint = np.zeros(nobj, bool)
    if particle_diameter and min_mass_fraction and keep.any():
        # the reference is the median object that passed the size filter:
        # measured on simulated lamellae, the median of only the larger objects
        # was dominated by a few merged blobs and dropped real particles
        reference = np.median(mass[keep])
        if reference > 0:
            faint = keep & (mass < min_mass_fraction * reference)
            keep &= ~faint
    dense = np.zeros(nobj, bool)
    if particle_diameter and max_density_factor and evidence is not None and keep.any():
        density = mass / np.maximum(volumes, 1)
        reference = np.median(density[keep])
        if reference > 0:
            dense = keep & (density > max_density_factor * reference)
            keep &= ~dense
    new_id = np.zeros(nobj + 1, np.int32)
    new_id[1:][keep] = np.arange(1, keep.sum() + 1)
    _relabel(labels, new_id)
    return {"positions": positions[keep], "scores": mass[keep], "volumes": volumes[keep],
            "labels": labels, "n_objects": nobj,
            "n_too_small": int(too_small.sum()), "n_too_large": int(too_large.sum()),
            "n_edge_slivers": int(slivers.sum()), "n_faint": int(faint.sum()),
            "n_dense": int(dense.sum()),
            "min_distance": int(min_distance) if method == "watershed" else 0}


def localize_segmentation(seg, localization="connected components", particle_diameter=None,
                          min_distance=0, tomo_id="", voxel_size=None):
    """PickET stage 2 on a `Segmentation`: objects of its mask, ranked by mass.

    Several localisations of one segmentation share its stage 1.  Parameters
    and returns as `picket_pick` (without the segmentation).
    """
    # the whole mask (empty outside the picking range): the labels are then
    # the volume's own, with no slab-to-volume copy (one int32 volume less)
    objects = localize_particles(seg.mask, localization, particle_diameter, min_distance,
                                 seg.evidence)
    positions = objects["positions"]
    order = np.argsort(-objects["scores"], kind="stable")
    # relabel so that object k (1-based) is the k-th pick, best first
    rank = np.zeros(len(order) + 1, np.int32)
    rank[order + 1] = np.arange(1, len(order) + 1)
    _relabel(objects["labels"], rank)
    objects["volumes"] = objects["volumes"][order]
    picks = Picks(np.full(len(order), str(tomo_id)), positions[order],
                  scores=objects["scores"][order], voxel_size=voxel_size)
    return picks, objects
