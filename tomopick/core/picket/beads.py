"""Gold beads in a PickET segmentation, found and cut out of the particle mask.

Fiducial gold is far denser than protein, so PickET's feature clustering puts
it in the particle class, and the blurred bead with its reconstruction halo
fills the mask up to a particle radius around it.  A particle touching a bead
then merges with it and stage 2 drops the merged object (too dense, or a
sheet with the halo); a bead alone leaves halo fragments that stage 2 takes
for particles.  `find_gold_beads` finds the beads and the ball around each
that no particle centre can enter (the bead's radius plus a particle's),
which stage 1 removes from the mask: a touching particle keeps the half of
it that lies outside.

Why not `template_matching.peaks.high_contrast_mask`: it thresholds robust
z-scores of a lightly smoothed tomogram at fixed levels.  After PickET's
sigma-2 blur ribosome cores reach 10-15 MAD and 10 nm gold 13-37 MAD
(simulated lamellae, SNR 0.15), so no fixed level separates them; against
the particles' own contrast in the same tomogram they separate: the
brightest particle-sized object of the mask reaches 1.2-1.8 times the median
object's peak, a bead 2.6-3.6 times (`GOLD_CONTRAST` = 2.2 lies between).
"""
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["GOLD_CONTRAST", "MAX_BEAD_FRACTION", "GoldBeads", "find_gold_beads"]

#: a bead's peak deviation from the volume median, in median particle peaks
GOLD_CONTRAST = 2.2
#: beads are rare: when more than this fraction of the mask's particle-sized
#: objects (and more than `MAX_BEADS_ANYWAY`) reach the gold contrast, the mask
#: is not particles (a noise class, whose median peak is low) and no bead is
#: reported (measured: 74-167 false beads on such masks, 5-6 true ones among
#: 107-226 objects otherwise)
MAX_BEAD_FRACTION = 0.1
MAX_BEADS_ANYWAY = 10
#: seed voxels beyond which the deviating voxels are not beads (a field of
#: 1,000 beads of 400 voxels each stays below)
MAX_SEED_VOXELS = 1_000_000
# voxels the median of the volume is taken from (at most, about)
MEDIAN_SAMPLE = 4_000_000


@dataclass
class GoldBeads:
    """Gold beads found in a volume.

    Attributes
    ----------
    positions : (K, 3) float ndarray
        Centres (x, y, z), voxels.
    radii : (K,) float ndarray
        Radius of a ball of the core's volume (voxels); the core is the
        bead's connected region above half its peak deviation.
    contrast : (K,) float ndarray
        Peak deviation from the volume median, in median particle peaks.
    """
    positions: np.ndarray
    radii: np.ndarray
    contrast: np.ndarray

    def __len__(self):
        return len(self.radii)


def _particle_peaks(volume, median, mask, particle_diameter, slab_voxels):
    """Signed peak deviation from ``median`` of each of the mask's particle-sized objects, (N,).

    The peak is the object's extreme value on the side it departs most from
    the median.  On every second voxel (objects are several voxels across
    there), slab by slab (no volume-sized deviation array, nor scipy's sorted
    copies of one); objects of at least half a particle's volume count (the
    many small noise objects of a mask would set the reference too low).
    """
    labels, n = ndi.label(mask[::2, ::2, ::2])
    if n == 0:
        return np.zeros(0)
    highest, lowest = np.full(n, -np.inf), np.full(n, np.inf)
    sizes = np.zeros(n, np.int64)
    index = np.arange(1, n + 1)
    step = max(1, slab_voxels // max(1, labels[0].size))
    for z0 in range(0, labels.shape[0], step):
        part, lab = volume[2 * z0:2 * (z0 + step):2, ::2, ::2], labels[z0:z0 + step]
        counts = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        sizes += counts
        # labels absent from the slab come back as 0 from scipy: left out
        here = counts > 0
        highest[here] = np.maximum(highest[here], np.asarray(ndi.maximum(part, lab, index))[here])
        lowest[here] = np.minimum(lowest[here], np.asarray(ndi.minimum(part, lab, index))[here])
    highest, lowest = highest - median, lowest - median
    peaks = np.where(highest >= -lowest, highest, lowest)
    return peaks[sizes >= 0.5 * np.pi / 6 * (particle_diameter / 2) ** 3]


def _seed_groups(volume, median, threshold, sign, slab_voxels):
    """6-connected groups of the voxels beyond ``median + sign * threshold``.

    Found slab by slab and grouped from their coordinates (a KD-tree of the
    few seed voxels), not labelled in a volume-sized array (1.2 GB of int32 at
    1000 x 1000 x 300).  Groups come in the order ``scipy.ndimage.label``
    numbers them (raster order of their first voxel).

    Returns
    -------
    list of (K_i, 3) int ndarray, or None
        [z, y, x] of each group's voxels; None when there are more than
        `MAX_SEED_VOXELS` (no field of beads is that dense).
    """
    step = max(1, slab_voxels // max(1, volume[0].size))
    found, total = [], 0
    for z0 in range(0, volume.shape[0], step):
        part = volume[z0:z0 + step]
        coords = np.argwhere(part > median + threshold if sign > 0 else
                             part < median - threshold)
        total += len(coords)
        if total > MAX_SEED_VOXELS:
            return None
        coords[:, 0] += z0
        found.append(coords)
    coords = np.concatenate(found) if found else np.zeros((0, 3), np.intp)
    if len(coords) == 0:
        return []
    # face neighbours are the pairs at distance 1 (the next is sqrt 2)
    pairs = cKDTree(coords).query_pairs(1.0, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(len(coords), len(coords)))
    n, group = connected_components(graph, directed=False)
    order = np.argsort(group, kind="stable")
    return np.split(coords[order], np.cumsum(np.bincount(group, minlength=n))[:-1])


def find_gold_beads(volume, mask, particle_diameter, contrast=GOLD_CONTRAST, cut=False,
                    slab_voxels=4_000_000):
    """Gold beads: objects whose peak is ``contrast`` times denser than the particles'.

    The deviation of every voxel from the volume median is compared with the
    median peak deviation of the particle mask's particle-sized objects; each
    connected region beyond ``contrast`` times that, on the side of the median
    the particles lie (gold is denser than protein), is a bead (none when they
    are too many to be beads: `MAX_BEAD_FRACTION`).  Its core is the
    connected region above half its own peak around the peak (for a bead
    larger than the blur, its physical extent), its centre the core's
    centroid.  Its footprint is every voxel closer to the core than a
    particle radius: where no particle centre can be, and where the bead's
    halo and the fragments it leaves in the mask lie (measured 4-12 voxels
    from 3-voxel beads with 16-voxel particles).

    Parameters
    ----------
    volume : (nz, ny, nx) array of float
        The blurred tomogram (`segment.preprocess`), sampled like ``mask``.
    mask : (nz, ny, nx) bool array
        The particle mask (`segment_tomogram`'s).
    particle_diameter : float
        Voxels of this volume.
    contrast : float
        In median particle peaks (`GOLD_CONTRAST`).
    cut : bool
        Clear the beads' footprints from ``mask``, in place.
    slab_voxels : int
        Voxels scanned for seeds at a time.

    Returns
    -------
    GoldBeads
        Empty when the mask holds no particle-sized object.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((32, 64, 64))
    >>> volume = rng.normal(0, 0.01, z.shape).astype(np.float32)
    >>> for cx in (12, 30, 48):                          # three particles, radius 5
    ...     volume[(x - cx) ** 2 + (y - 20) ** 2 + (z - 16) ** 2 <= 25] -= 0.2
    >>> volume[(x - 30) ** 2 + (y - 45) ** 2 + (z - 16) ** 2 <= 4] -= 1.0   # a bead, radius 2
    >>> mask = volume < -0.1
    >>> beads = find_gold_beads(volume, mask, particle_diameter=10, cut=True)
    >>> len(beads), np.round(beads.positions).astype(int).tolist()
    (1, [[30, 45, 16]])
    >>> bool(mask[16, 20, 30]), bool(mask[16, 45, 30])      # a particle kept, the bead cut
    (True, False)
    """
    volume = np.asarray(volume)
    if volume.shape != np.shape(mask):
        raise ValueError(f"volume {volume.shape} and particle mask {np.shape(mask)} differ "
                         "in shape")
    empty = GoldBeads(np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    # the median from at most ~MEDIAN_SAMPLE voxels, every second one at least
    stride = max(2, int(np.ceil((volume.size / MEDIAN_SAMPLE) ** (1 / 3))))
    median = np.float32(np.median(volume[::stride, ::stride, ::stride]))
    peaks = _particle_peaks(volume, median, mask, float(particle_diameter), slab_voxels)
    reference = float(np.median(np.abs(peaks))) if len(peaks) else 0.0
    if not reference > 0:
        return empty
    # gold is denser than any protein: it departs from the solvent on the
    # particles' side (whichever the contrast convention)
    sign = 1 if (peaks > 0).sum() >= (peaks < 0).sum() else -1
    groups = _seed_groups(volume, median, np.float32(contrast * reference), sign, slab_voxels)
    if not groups or len(groups) > max(MAX_BEADS_ANYWAY, MAX_BEAD_FRACTION * len(peaks)):
        return empty
    clearance = particle_diameter / 2
    halo = int(np.ceil(clearance)) + 1
    positions, radii, contrasts = [], [], []
    for seed in groups:
        box = tuple(slice(max(0, lo - halo), min(e, hi + 1 + halo))
                    for lo, hi, e in zip(seed.min(axis=0), seed.max(axis=0), volume.shape))
        offset = np.array([b.start for b in box])
        local = np.abs(volume[box] - median)
        at = seed - offset
        peak_at = tuple(at[np.argmax(local[tuple(at.T)])])
        peak = float(local[peak_at])
        above, _ = ndi.label(local > 0.5 * peak)
        core = above == above[peak_at]
        if cut:
            mask[box] &= ndi.distance_transform_edt(~core) > clearance
        positions.append((np.array(ndi.center_of_mass(core)) + offset)[::-1])
        radii.append((3 * core.sum() / (4 * np.pi)) ** (1 / 3))
        contrasts.append(peak / reference)
    return GoldBeads(np.array(positions), np.array(radii), np.array(contrasts))
