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
- objects flatter than half a ball (smallest principal width below half the
  middle one, from the object's second moments) are dropped (and counted):
  slabs lining the tomogram faces;
- objects whose neighbourhood is a sheet (`object_blobness`: the Hessian of
  the mask smoothed at D/4 has one strong curvature, across the sheet, and
  two weak ones along it) are dropped (and counted): membrane patches, which
  the watershed cuts into particle-sized pieces that size, mass and moments
  cannot tell from particles;
- objects with at least 1.75 times the median mass are split into
  floor(mass / median + 0.25) picks by k-means of their voxels: touching particles
  the watershed left merged;
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

from .blur import gaussian_slab, hessian_at

__all__ = [
    "LOCALIZATIONS", "check_localization", "expected_volume", "marker_spacing",
    "split_watershed", "object_blobness", "localize_particles", "localize_segmentation",
]


def _watershed(*args, **kwargs):
    """skimage's watershed, imported on first use: skimage.segmentation imports
    matplotlib, which writes ~/.config/matplotlib (core imports must write nothing)."""
    from skimage.segmentation import watershed as skimage_watershed
    return skimage_watershed(*args, **kwargs)


LOCALIZATIONS = ("connected components", "watershed")
# components whose bounding box exceeds this many voxels are split slab by slab
SLAB_VOXELS = 16_000_000

#: weight of the evidence added to the watershed's distance map (`_break_ties`),
#: in voxels of distance: below the gap between the distance values of a
#: particle's core, so it only orders ties and near-ties
TIE_BREAK = 0.1
# bounds of the automatic watershed marker spacing, in particle diameters
MARKER_SPACING_BOUNDS = (0.25, 0.5)
# Hessian scale of `object_blobness`, in particle diameters
BLOBNESS_SCALE = 0.25
# the core of an object where `object_blobness` is measured: its voxels above
# this quantile of the smoothed mask (nearest a membrane's mid-surface, where
# the curvature along a curved membrane vanishes)
BLOBNESS_CORE = 0.75
# widest object (in particle diameters, along its two largest axes) that is not
# a sheet: the mask shows particles up to ~1.5 D wide (blur, wedge, touching)
SHEET_WIDTH = 1.5
# the lowest blobness of anything no wider than SHEET_WIDTH diameters, however
# thin (see `object_blobness`)
SHEET_BLOBNESS = BLOBNESS_SCALE ** 2 / (BLOBNESS_SCALE ** 2 + SHEET_WIDTH ** 2 / 20)
#: objects with more than this fraction of their voxels in the membrane band
#: (`Segmentation.membranes`) are membrane pieces (measured on the lamellae of
#: ``bench_picket.py --lamellae``: false picks on vesicles 0.37-0.57, particles
#: up to 0.04)
MEMBRANE_OVERLAP = 0.25
#: smallest part of a membrane sheet lying off the membrane band that is kept
#: as a particle merged with the membrane, in expected particle volumes
MIN_OFF_MEMBRANE = 0.35


def check_localization(name):
    """Canonical localisation name ('connected components' or 'watershed').

    Raises
    ------
    ValueError
        If ``name`` is neither.

    Examples
    --------
    >>> check_localization("Watershed"), check_localization("cc")
    ('watershed', 'connected components')
    """
    key = str(name).lower().replace("_", " ")
    if key in ("connected components", "connected component labeling", "cc"):
        return "connected components"
    if key.startswith("watershed"):
        return "watershed"
    raise ValueError(f"localization {name!r} is not one of {LOCALIZATIONS}")


def expected_volume(particle_diameter):
    """Volume (voxels) of a sphere of the given diameter (voxels).

    Examples
    --------
    >>> round(expected_volume(10.0), 1)    # (4/3) pi 5^3
    523.6
    """
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


def marker_spacing(mask, particle_diameter, components=None, distances=None, boxes=None):
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
    distances : dict, optional
        Filled with each measured component's distance transform (float32, in
        its bounding box padded by one voxel) by label, for `split_watershed`
        to reuse.
    boxes : list, optional
        ``scipy.ndimage.find_objects`` of the components, when known (a pass
        over the whole label volume).

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
            boxes = ndi.find_objects(labels) if boxes is None else boxes
            radii = []
            for k in plausible:
                box = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in boxes[k - 1])
                edt = ndi.distance_transform_edt(labels[box] == k).astype(np.float32)
                radii.append(float(edt.max()))
                if distances is not None:
                    distances[int(k)] = edt
            spacing = float(np.median(radii))
    return max(1, int(round(np.clip(spacing, lo, hi))))


def split_watershed(mask, min_distance, min_volume=0, components=None, evidence=None,
                    distances=None, boxes=None):
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
    evidence : (nz, ny, nx) float array, optional
        Per-voxel particle margin; breaks the ties of the distance map
        (`_break_ties`), so a flat core gets one marker.
    distances : dict, optional
        Distance transforms already computed by component (`marker_spacing`);
        consumed.
    boxes : list, optional
        ``scipy.ndimage.find_objects`` of the components, when known.

    Returns
    -------
    labels : (nz, ny, nx) int32 ndarray
        0 = background, objects 1..N.

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.indices((20, 20, 40))
    >>> mask = ((x - 14) ** 2 + (y - 10) ** 2 + (z - 10) ** 2 <= 25) | \\
    ...        ((x - 22) ** 2 + (y - 10) ** 2 + (z - 10) ** 2 <= 25)   # overlapping balls
    >>> labels = split_watershed(mask, min_distance=4)
    >>> int(labels.max()), labels[10, 10, 12] != labels[10, 10, 24]
    (2, True)
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
    boxes = ndi.find_objects(components) if boxes is None else boxes
    for comp, box in enumerate(boxes, start=1):
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
            next_id = _watershed_in_slabs(own, target, min_distance, next_id,
                                          None if evidence is None else evidence[box])
            continue
        edt = distances.pop(comp, None) if distances else None
        if edt is None:
            edt = ndi.distance_transform_edt(own).astype(np.float32)
        if evidence is not None:
            _break_ties(edt, evidence[box], own)
        peaks = _distance_maxima(edt, min_distance)
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


def _distance_maxima(edt, min_distance):
    """Watershed markers: maxima of a distance map at least ``min_distance`` apart, (K, 3).

    skimage's ``peak_local_max`` with threshold 0: the map is 0 outside its
    object, so the object mask is implied and no per-label pass is needed
    (with ``labels`` it was 40 % of a watershed localisation: a
    ``find_objects`` and a relabelled copy per component).
    """
    # most components hold one candidate (the maximum filter's fixed points
    # above 0): it is the marker, without the spacing pass (a KD-tree per
    # component, three quarters of peak_local_max's time); the rest go the
    # whole way.  Same candidates as peak_local_max: separable filter of the
    # same size, 'nearest' edges, no peak in a constant map.
    size = 2 * int(min_distance) + 1
    candidates = edt == ndi.maximum_filter(edt, size=size, mode="nearest")
    if candidates.all():
        return np.zeros((0, edt.ndim), np.intp)
    candidates &= edt > 0
    found = np.argwhere(candidates)
    if len(found) <= 1:
        return found
    return peak_local_max(edt, min_distance=int(min_distance), threshold_abs=0,
                          exclude_border=False)


def _break_ties(edt, evidence, own):
    """Add ``TIE_BREAK`` x the component's evidence (scaled to its maximum) to its distance map.

    On a coarse grid the distance transform takes few distinct values and a
    particle's core is a plateau on which `peak_local_max` puts several markers
    (measured: 306 picks for 276 particles, F1 0.88 on the crowded lamella);
    the evidence, highest at the densest voxels, gives each plateau one summit
    (263 picks, F1 0.95).  In place.
    """
    e = np.where(own, np.asarray(evidence, np.float32), np.float32(0))
    top = float(e.max())
    if top > 0:
        e *= np.float32(TIE_BREAK / top)
        edt += e


def _watershed_in_slabs(own, target, min_distance, next_id, evidence=None):
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
        if evidence is not None:
            _break_ties(sub_edt, evidence[lo:hi], sub)
        edt[a:b] = sub_edt[a - lo:b - lo]
        p = _distance_maxima(sub_edt, min_distance)
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
    """Volume, summed (x, y, z), summed products and mass of objects 1..nobj.

    Accumulated slab by slab: the per-voxel index arrays of one slab only
    (six 8-byte values per object voxel of the whole volume otherwise).

    Returns
    -------
    volumes : (nobj,) float
    sums : (nobj, 3) float
        Summed x, y, z.
    products : (nobj, 6) float
        Summed xx, xy, xz, yy, yz, zz (`_MOMENT_PAIRS`), for `_principal_widths`.
    mass : (nobj,) float
        Summed evidence (the volume when there is none).
    """
    volumes, mass = np.zeros(nobj + 1), np.zeros(nobj + 1)
    sums, products = np.zeros((nobj + 1, 3)), np.zeros((nobj + 1, 6))
    step = max(1, slab_voxels // max(1, labels[0].size))
    for z0 in range(0, labels.shape[0], step):
        sub = labels[z0:z0 + step]
        flat = np.flatnonzero(sub)
        lab = sub.ravel()[flat]
        volumes += np.bincount(lab, minlength=nobj + 1)
        z, y, x = np.unravel_index(flat, sub.shape)
        coords = (x.astype(float), y.astype(float), (z + z0).astype(float))
        for axis, c in enumerate(coords):
            sums[:, axis] += np.bincount(lab, weights=c, minlength=nobj + 1)
        for k, (i, j) in enumerate(_MOMENT_PAIRS):
            products[:, k] += np.bincount(lab, weights=coords[i] * coords[j],
                                          minlength=nobj + 1)
        mass += (np.bincount(lab, minlength=nobj + 1) if evidence is None else
                 np.bincount(lab, weights=np.asarray(evidence[z0:z0 + step]).ravel()[flat],
                             minlength=nobj + 1))
    return volumes[1:], sums[1:], products[1:], mass[1:]


#: index pairs of the summed coordinate products (x = 0, y = 1, z = 2)
_MOMENT_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def localize_particles(mask, method="connected components", particle_diameter=None,
                       min_distance=0, evidence=None, min_volume_fraction=0.1,
                       max_volume_factor=8.0, edge_margin=None, faces=None,
                       min_mass_fraction=0.35, max_density_factor=4.0,
                       min_flatness=0.5, min_blobness=None,
                       split_mass_factor=1.75, membranes=None):
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
    min_flatness : float
        Objects whose smallest principal width is below this fraction of the
        middle one are dropped (needs a diameter; 0 = keep all): 0.5 keeps a
        ball cut through its centre by a face (0.55) and drops slabs lining
        the faces (measured 0.2-0.45).
    min_blobness : float, optional
        Objects whose `object_blobness` is below this are sheets (membranes)
        and dropped; default `SHEET_BLOBNESS` (0.36: anything no wider than
        `SHEET_WIDTH` = 1.5 diameters is above it); 0 = keep all.
    split_mass_factor : float
        Objects whose mass is at least this many times the median kept
        object's are split into floor(mass / median + 0.25) parts (k-means of their
        voxels weighted by the evidence): touching particles the watershed
        left merged (needs a diameter; 0 = no split).  1.75: a single
        particle's mass stayed below 1.46-1.76 median (99th percentile,
        sparse lamellae, GMM workflows), a merged pair has about 2.
    membranes : (nz, ny, nx) bool array, optional
        The membrane band (`Segmentation.membranes`; needs a diameter): objects
        with more than `MEMBRANE_OVERLAP` of their voxels in it are dropped
        (membrane pieces), and of a sheet that much on a membrane, each
        connected part off the band of at least `MIN_OFF_MEMBRANE` expected
        volumes becomes an object (a particle merged with the membrane).
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
        'widths' (N, 3) principal widths, smallest first (voxels; a ball of
        diameter D: D, D, D); 'n_objects', 'n_too_small', 'n_too_large',
        'n_edge_slivers', 'n_faint', 'n_dense', 'n_flat', 'n_sheets',
        'n_membrane' (objects dropped by each filter), 'n_off_membrane'
        (objects found off the membrane in sheets), 'n_split' (objects split
        into several picks);
        'min_distance' (the watershed spacing used, else 0).

    Raises
    ------
    ValueError
        If watershed is asked for with neither min_distance nor a diameter.

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.indices((20, 40, 40))
    >>> mask = np.zeros(z.shape, bool)
    >>> for cx in (10, 18, 30):                    # two touching balls and a lone one
    ...     mask |= (x - cx) ** 2 + (y - 20) ** 2 + (z - 10) ** 2 <= 25
    >>> cc = localize_particles(mask, "connected components", particle_diameter=10)
    >>> ws = localize_particles(mask, "watershed", particle_diameter=10)
    >>> len(cc["positions"]), len(ws["positions"])
    (2, 3)
    >>> sorted(np.round(ws["positions"][:, 0]).astype(int).tolist())   # x of the centres
    [10, 18, 30]
    """
    method = check_localization(method)
    mask = np.asarray(mask, bool)
    if method == "watershed":
        if not min_distance and not particle_diameter:
            raise ValueError("watershed needs min_distance > 0 or a particle diameter")
        components = ndi.label(mask)
        distances, boxes = {}, ndi.find_objects(components[0])
        if not min_distance:
            min_distance = marker_spacing(mask, particle_diameter, components, distances, boxes)
        min_volume = (min_volume_fraction * expected_volume(particle_diameter)
                      if particle_diameter else 0)
        labels = split_watershed(mask, min_distance, int(min_volume), components, evidence,
                                 distances, boxes)
        del distances, boxes
        del components                  # its array is now the labels
    else:
        labels, _ = ndi.label(mask)
        labels = labels.astype(np.int32, copy=False)
    nobj = int(labels.max())
    volumes, sums, products, mass, widths, positions = _statistics(labels, nobj, evidence)
    keep = volumes > 0
    too_small = too_large = np.zeros(nobj, bool)
    if particle_diameter:
        expected = expected_volume(particle_diameter)
        too_small = volumes < min_volume_fraction * expected
        too_large = volumes > max_volume_factor * expected
        keep &= ~too_small & ~too_large
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
    flattened = np.zeros(nobj, bool)
    if particle_diameter and min_flatness:
        with np.errstate(invalid="ignore", divide="ignore"):
            flattened = keep & (widths[:, 0] < min_flatness * widths[:, 1])
        keep &= ~flattened
    sheet = np.zeros(nobj, bool)
    if particle_diameter and min_blobness != 0 and keep.any():
        # the Hessian is evaluated only for the objects still kept (the costly test)
        ids = np.flatnonzero(keep) + 1
        threshold = SHEET_BLOBNESS if min_blobness is None else min_blobness
        sheet[ids - 1] = object_blobness(mask, labels, ids, particle_diameter) < threshold
        keep &= ~sheet
    membrane = np.zeros(nobj, bool)
    n_off_membrane = 0
    if particle_diameter and membranes is not None and keep.any():
        in_band = np.bincount(labels[np.asarray(membranes, bool)], minlength=nobj + 1)[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            on_band = in_band > MEMBRANE_OVERLAP * volumes
        membrane = keep & on_band
        keep &= ~membrane
        laden = np.flatnonzero(sheet & on_band) + 1
        if len(laden):
            labels, parts = _off_membrane_parts(
                labels, laden, membranes, MIN_OFF_MEMBRANE * expected_volume(particle_diameter))
            if parts:
                n_off_membrane = len(parts)
                volumes, sums, products, mass, widths, positions = _statistics(
                    labels, nobj + len(parts), evidence)
                keep = np.concatenate([keep, np.ones(len(parts), bool)])
                nobj += len(parts)
    n_split, n_found = 0, nobj - n_off_membrane
    reference = np.median(mass[keep]) if keep.sum() > 2 else 0.0
    if particle_diameter and split_mass_factor and reference > 0:
        # a part per median mass, from 1.75 medians up (a single particle's mass
        # stays below that, see the docstring)
        counts = np.floor(mass / reference + 0.25).astype(int)
        heavy = np.flatnonzero(keep & (mass >= split_mass_factor * reference) & (counts >= 2))
        if len(heavy):
            labels, parts = _split_heavy(labels, evidence, heavy + 1, counts[heavy])
            n_split = len(heavy)
            extra = len(parts)
            # the parts replace their object: recompute their statistics
            keep[heavy] = False
            nobj2 = nobj + extra
            volumes, sums, products, mass, widths, positions = _statistics(labels, nobj2,
                                                                           evidence)
            keep = np.concatenate([keep, volumes[nobj:] > 0])
            nobj = nobj2
    new_id = np.zeros(nobj + 1, np.int32)
    new_id[1:][keep] = np.arange(1, keep.sum() + 1)
    _relabel(labels, new_id)
    return {"positions": positions[keep], "scores": mass[keep], "volumes": volumes[keep],
            "labels": labels, "n_objects": n_found,
            "n_too_small": int(too_small.sum()), "n_too_large": int(too_large.sum()),
            "n_edge_slivers": int(slivers.sum()), "n_faint": int(faint.sum()),
            "n_dense": int(dense.sum()), "n_flat": int(flattened.sum()),
            "n_sheets": int(sheet.sum()), "n_membrane": int(membrane.sum()),
            "n_off_membrane": n_off_membrane, "n_split": n_split,
            "widths": widths[keep],
            "min_distance": int(min_distance) if method == "watershed" else 0}


def object_blobness(mask, labels, ids, particle_diameter, slab_voxels=4_000_000):
    """How blob-like (1) rather than sheet-like (0) the mask is around each object.

    The mask is smoothed with a Gaussian of sigma = D / 4 and its Hessian taken
    (central differences) at the object's core voxels (its quarter of voxels
    where the smoothed mask is highest: a blob's centre, a membrane's
    mid-surface, where the curvature along even a small vesicle vanishes;
    measured, the object's upper half let pieces of a 11 x 14 x 19 voxel
    vesicle through); blobness is
    the median over the core of lambda_2 / lambda_1, the two most negative
    eigenvalues.  A blob has three similar negative curvatures (1); on a sheet
    (a membrane, a face artefact) the curvature across it is negative and the
    two along it vanish (0), whatever part of the sheet the watershed made
    into this object; a filament is blob-like here (lambda_1 = lambda_2).

    For a Gaussian-like object of variances v_1 <= v_2 (across, along) the
    Hessian of the smoothed mask at its centre has lambda_2 / lambda_1 =
    (v_1 + sigma^2) / (v_2 + sigma^2), which for anything no wider than a
    ball of diameter D (v_2 <= D^2 / 20), however thin, is at least
    sigma^2 / (D^2 / 20 + sigma^2) = 5/9 (`SHEET_BLOBNESS`).  Measured on the
    lamellae of ``benchmarks/bench_picket.py --lamellae``: particles 0.6-0.9
    (5th-95th percentile), membrane patches on vesicles 0.15-0.21.

    Parameters
    ----------
    mask : (nz, ny, nx) bool array
    labels : (nz, ny, nx) int array
        Objects of the mask.
    ids : (K,) int
        Labels to measure.
    particle_diameter : float
        Voxels.
    slab_voxels : int
        Voxels smoothed at a time (z-slabs; only slabs holding the objects).

    Returns
    -------
    (K,) float ndarray

    Examples
    --------
    >>> z, y, x = np.indices((40, 40, 40))
    >>> ball = (x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 36
    >>> sheet = (abs(z - 20) <= 3) & (abs(y - 20) < 15) & (abs(x - 20) < 15)
    >>> [round(float(object_blobness(m, m.astype(int), [1], 12)[0]), 2)
    ...  for m in (ball, sheet)]
    [0.99, 0.08]
    """
    sigma = BLOBNESS_SCALE * float(particle_diameter)
    ids = np.asarray(ids, int)
    out = np.ones(len(ids))
    if len(ids) == 0:
        return out
    wanted = np.zeros(int(labels.max()) + 2, bool)
    wanted[ids[ids < len(wanted)]] = True
    # the smoothed mask's values and Hessians at every voxel of the wanted
    # objects, z-slab by z-slab, the slab smoothed with one slice more on
    # either side for the differences: the same numbers as smoothing the whole
    # mask (to float32 rounding)
    nz = mask.shape[0]
    step = max(1, slab_voxels // max(1, mask[0].size))
    found = {k: [] for k in ("label", "value", "hessian")}
    for z0 in range(0, nz, step):
        z1 = min(nz, z0 + step)
        core = wanted[np.minimum(labels[z0:z1], len(wanted) - 1)]
        if not core.any():
            continue
        a, b = max(0, z0 - 1), min(nz, z1 + 1)
        smooth = gaussian_slab(mask, a, b, sigma, truncate=3.0, mode="nearest")
        points = np.argwhere(core) + [z0 - a, 0, 0]
        found["label"].append(labels[z0:z1][core])
        found["value"].append(smooth[tuple(points.T)])
        found["hessian"].append(hessian_at(smooth, points))
    if not found["label"]:
        return out
    label, value, hess = (np.concatenate(found[k]) for k in ("label", "value", "hessian"))
    # each object's core: its voxels at or above its BLOBNESS_CORE quantile of
    # the smoothed mask (numpy's linear quantile, per object, from one sort)
    order = np.lexsort((value, label))
    label, value, hess = label[order], value[order], hess[order]
    uniq, first, count = np.unique(label, return_index=True, return_counts=True)
    pos = BLOBNESS_CORE * (count - 1)
    below = np.floor(pos).astype(int)
    above = np.minimum(below + 1, count - 1)
    frac = (pos - below).astype(np.float32)
    threshold = (value[first + below] * (1 - frac) + value[first + above] * frac)
    group = np.repeat(np.arange(len(uniq)), count)
    core = value >= threshold[group]
    lam = np.linalg.eigvalsh(hess[core])     # ascending: lam[:, 0] most negative
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.clip(np.where(lam[:, 0] < 0, lam[:, 1] / lam[:, 0], 0.0), 0, 1)
    # per-object median of the core's ratios (every object has a core: its
    # maximum is at or above its own quantile)
    group = group[core]
    order = np.lexsort((ratio, group))
    ratio = ratio[order]
    _, first, count = np.unique(group[order], return_index=True, return_counts=True)
    median = (ratio[first + (count - 1) // 2] + ratio[first + count // 2]) / 2
    blobness = dict(zip(uniq.tolist(), median.tolist()))
    return np.array([blobness.get(int(k), 1.0) for k in ids])


def _statistics(labels, nobj, evidence=None):
    """`_object_sums` of objects 1..nobj with their principal widths and centroids."""
    volumes, sums, products, mass = _object_sums(labels, nobj, evidence)
    widths = _principal_widths(volumes, sums, products)
    with np.errstate(invalid="ignore", divide="ignore"):
        positions = sums / volumes[:, None]
    return volumes, sums, products, mass, widths, positions


def _off_membrane_parts(labels, ids, membranes, min_volume):
    """Each object's connected parts off the membrane band, from ``min_volume`` voxels up.

    The parts get new labels after ``labels.max()`` (written in place; the
    rest of each object keeps its label); returns (labels, new ids).
    """
    boxes = ndi.find_objects(labels, max_label=int(max(ids)))
    next_id = int(labels.max()) + 1
    new = []
    for k in ids:
        box = boxes[k - 1]
        parts, n = ndi.label((labels[box] == k) & ~np.asarray(membranes[box], bool))
        if n == 0:
            continue
        sizes = np.bincount(parts.ravel())
        for part in np.flatnonzero(sizes[1:] >= min_volume) + 1:
            labels[box][parts == part] = next_id
            new.append(next_id)
            next_id += 1
    return labels, new


def _split_heavy(labels, evidence, ids, counts):
    """Split each object ``ids[i]`` into ``counts[i]`` parts (`_weighted_kmeans` of its voxels).

    Each object is read inside its bounding box (no whole-volume voxel
    lists); voxels are weighted by their evidence (clipped at 0), or equally.
    Parts get new labels after ``labels.max()``, written into ``labels`` in
    place; returns (labels, new ids).
    """
    boxes = ndi.find_objects(labels, max_label=int(max(ids)))
    next_id = int(labels.max()) + 1
    new = []
    for k, n in zip(ids, counts):
        box = boxes[k - 1]
        own = labels[box] == k
        vox = np.argwhere(own)
        n = int(min(n, len(vox)))
        weights = (np.ones(len(vox)) if evidence is None
                   else np.asarray(evidence[box], float)[own])
        coords = (vox + [b.start for b in box]).astype(float)
        part = _weighted_kmeans(coords, np.clip(weights, 0, None) + 1e-6, n)
        labels[box][own] = next_id + part
        new.extend(range(next_id, next_id + n))
        next_id += n
    return labels, new


def _weighted_kmeans(points, weights, k, iterations=30):
    """Labels 0..k-1 of ``points`` (n, d) by Lloyd's k-means with sample weights.

    Deterministic: the centres start at the weighted quantiles (i + 0.5) / k
    of the projection on the principal axis (merged particles lie along it).
    """
    mean = np.average(points, axis=0, weights=weights)
    centred = points - mean
    cov = (centred * weights[:, None]).T @ centred / weights.sum()
    axis = np.linalg.eigh(cov)[1][:, -1]
    t = centred @ axis
    order = np.argsort(t)
    cdf = np.cumsum(weights[order]) / weights.sum()
    starts = order[np.searchsorted(cdf, (np.arange(k) + 0.5) / k).clip(0, len(t) - 1)]
    centres = points[starts].copy()
    part = np.zeros(len(points), int)
    for _ in range(iterations):
        d = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
        new = d.argmin(1)
        if _ and np.array_equal(new, part):
            break
        part = new
        for j in range(k):
            sel = part == j
            if sel.any():
                centres[j] = np.average(points[sel], axis=0, weights=weights[sel])
    return part


def _principal_widths(volumes, sums, products):
    """Each object's diameters along its principal axes, smallest first (voxels).

    From the object's second moments (`_object_sums`): sqrt(20 * eigenvalue
    of its coordinate covariance), which is D along every axis for a solid
    ball of diameter D (variance D^2 / 20 along any axis).  (nobj, 3) array.
    """
    n = np.maximum(volumes, 1)
    mean = sums / n[:, None]
    cov = np.empty((len(volumes), 3, 3))
    for k, (i, j) in enumerate(_MOMENT_PAIRS):
        cov[:, i, j] = cov[:, j, i] = products[:, k] / n - mean[:, i] * mean[:, j]
    return np.sqrt(20 * np.clip(np.linalg.eigvalsh(cov), 0, None))


def localize_segmentation(seg, localization="connected components", particle_diameter=None,
                          min_distance=0, tomo_id="", voxel_size=None, **filters):
    """PickET stage 2 on a `Segmentation`: objects of its mask, ranked by mass.

    Several localisations of one segmentation share its stage 1.  Parameters
    and returns as `picket_pick` (without the segmentation; lengths in voxels
    of the tomogram whatever the segmentation's grid step, the labels on its
    grid: ``objects['grid_step']``); ``filters`` are
    `localize_particles`' filter settings (``min_flatness``, ``min_blobness``,
    ``split_mass_factor``...), their defaults when not given.

    Examples
    --------
    >>> import numpy as np
    >>> from tomopick.core.picket import segment_tomogram
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((24, 48, 48))
    >>> volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    >>> for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:
    ...     volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 16] -= 1.0
    >>> seg = segment_tomogram(volume, "intensities", "KMeans", particle_diameter=9,
    ...                        max_fit_neighborhoods=5000)
    >>> for method in ("connected components", "watershed"):   # one stage 1, two stage 2
    ...     picks, _ = localize_segmentation(seg, method, particle_diameter=9, tomo_id="t1")
    ...     print(method, sorted(map(tuple, np.round(picks.positions).astype(int).tolist())))
    connected components [(12, 12, 12), (12, 34, 12), (34, 12, 12), (34, 34, 12)]
    watershed [(12, 12, 12), (12, 34, 12), (34, 12, 12), (34, 34, 12)]
    """
    # the whole mask (empty outside the picking range): the labels are then
    # the volume's own, with no slab-to-volume copy (one int32 volume less).
    # On a grid of step s lengths are divided by s going in and multiplied
    # coming out; grid voxel k is tomogram voxel s k, so positions scale alike
    step = seg.grid_step
    filters.setdefault("membranes", seg.membranes)
    objects = localize_particles(
        seg.mask, localization, particle_diameter / step if particle_diameter else None,
        -(-int(min_distance) // step), seg.evidence, **filters)
    objects["positions"] = objects["positions"] * step
    objects["volumes"] = objects["volumes"] * step ** 3
    objects["widths"] = objects["widths"] * step
    objects["min_distance"] *= step
    objects["grid_step"] = step
    positions = objects["positions"]
    order = np.argsort(-objects["scores"], kind="stable")
    # relabel so that object k (1-based) is the k-th pick, best first
    rank = np.zeros(len(order) + 1, np.int32)
    rank[order + 1] = np.arange(1, len(order) + 1)
    _relabel(objects["labels"], rank)
    objects["volumes"] = objects["volumes"][order]
    objects["widths"] = objects["widths"][order]
    picks = Picks(np.full(len(order), str(tomo_id)), positions[order],
                  scores=objects["scores"][order], voxel_size=voxel_size)
    return picks, objects
