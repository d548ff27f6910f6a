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


def _particle_peaks(deviation, mask, particle_diameter):
    """Peak deviation of each of the mask's particle-sized objects, (N,).

    On every second voxel (objects are several voxels across there:
    ``deviation`` is given there already); objects of at least half a
    particle's volume count (the many small noise objects of a mask would set
    the reference too low).
    """
    labels, n = ndi.label(mask[::2, ::2, ::2])
    if n == 0:
        return np.zeros(0)
    volumes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    peaks = np.asarray(ndi.maximum(deviation, labels, np.arange(1, n + 1)))
    return peaks[volumes >= 0.5 * np.pi / 6 * (particle_diameter / 2) ** 3]


def find_gold_beads(volume, mask, particle_diameter, contrast=GOLD_CONTRAST):
    """Gold beads: objects whose peak is ``contrast`` times denser than the particles'.

    The deviation of every voxel from the volume median is compared with the
    median peak deviation of the particle mask's particle-sized objects; each
    connected region above ``contrast`` times that is a bead (none when they
    are too many to be beads: `MAX_BEAD_FRACTION`).  Its core is the
    connected region above half its own peak around the peak (for a bead
    larger than the blur, its physical extent), its centre the core's
    centroid.  The footprint is every voxel closer to a core than a particle
    radius: where no particle centre can be, and where the bead's halo and
    the fragments it leaves in the mask lie (measured 4-12 voxels from 3-voxel
    beads with 16-voxel particles).

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

    Returns
    -------
    beads : GoldBeads
        Empty when the mask holds no particle-sized object.
    footprint : (nz, ny, nx) bool ndarray
        Voxels within a particle radius of a core (to cut out of the mask).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((32, 64, 64))
    >>> volume = rng.normal(0, 0.01, z.shape).astype(np.float32)
    >>> for cx in (12, 30, 48):                          # three particles, radius 5
    ...     volume[(x - cx) ** 2 + (y - 20) ** 2 + (z - 16) ** 2 <= 25] -= 0.2
    >>> volume[(x - 30) ** 2 + (y - 45) ** 2 + (z - 16) ** 2 <= 4] -= 1.0   # a bead, radius 2
    >>> beads, footprint = find_gold_beads(volume, volume < -0.1, particle_diameter=10)
    >>> len(beads), np.round(beads.positions).astype(int).tolist()
    (1, [[30, 45, 16]])
    >>> bool(footprint[16, 20, 30]), bool(footprint[16, 45, 30])
    (False, True)
    """
    volume = np.asarray(volume)
    mask = np.asarray(mask, bool)
    if volume.shape != mask.shape:
        raise ValueError(f"volume {volume.shape} and particle mask {mask.shape} differ in shape")
    # no volume-sized deviation array: the coarse grid, the seeds' mask and
    # each bead's box are enough (150 MB less on a 500 x 500 x 150 grid)
    coarse = volume[::2, ::2, ::2]
    median = np.float32(np.median(coarse))
    footprint = np.zeros(mask.shape, bool)
    empty = GoldBeads(np.zeros((0, 3)), np.zeros(0), np.zeros(0)), footprint
    peaks = _particle_peaks(np.abs(coarse - median), mask, float(particle_diameter))
    reference = float(np.median(peaks)) if len(peaks) else 0.0
    if not reference > 0:
        return empty
    seeds = volume > median + np.float32(contrast * reference)
    seeds |= volume < median - np.float32(contrast * reference)
    seeds, n = ndi.label(seeds)
    if n == 0 or n > max(MAX_BEADS_ANYWAY, MAX_BEAD_FRACTION * len(peaks)):
        return empty
    clearance = particle_diameter / 2
    halo = int(np.ceil(clearance)) + 1
    positions, radii, contrasts = [], [], []
    for k, box in enumerate(ndi.find_objects(seeds), start=1):
        box = tuple(slice(max(0, s.start - halo), min(e, s.stop + halo))
                    for s, e in zip(box, mask.shape))
        local = np.abs(volume[box] - median)
        peak_at = np.unravel_index(np.argmax(np.where(seeds[box] == k, local, 0)), local.shape)
        peak = float(local[peak_at])
        above, _ = ndi.label(local > 0.5 * peak)
        core = above == above[peak_at]
        footprint[box] |= ndi.distance_transform_edt(~core) <= clearance
        offset = np.array([s.start for s in box], float)
        positions.append((np.array(ndi.center_of_mass(core)) + offset)[::-1])
        radii.append((3 * core.sum() / (4 * np.pi)) ** (1 / 3))
        contrasts.append(peak / reference)
    return GoldBeads(np.array(positions), np.array(radii), np.array(contrasts)), footprint
