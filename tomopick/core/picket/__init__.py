"""PickET: unsupervised particle picking (Arvindekar, Golatkar & Viswanath, 2025).

A workflow is a feature mode x clusterer x localisation:

- `features`: neighbourhood features of every voxel (FFT magnitudes, Gabor
  responses, intensities), computed as filters;
- `segment`: stage 1, a two-class clustering of those features into particle
  and background (`segment_tomogram`; several workflows sharing their
  preparation: `segment_workflows`);
- `beads`: gold beads found against the particles' own contrast and cut out
  of the particle mask (`segment_tomogram` does it; `find_gold_beads`);
- `membranes`: lipid membranes found in the density (structure tensor), for
  stage 2 to drop membrane pieces and keep particles merged with a membrane
  (`segment_tomogram` does it; `find_membranes`);
- `localize`: stage 2, particle positions from the particle mask (connected
  components or watershed; `localize_segmentation` on a stage-1 result);
- `workflow`: both stages on one tomogram (`picket_pick`);
- `blur`: the Gaussian blur of a z-slab both stages use (preprocessing, mask
  smoothing: `gaussian_slab`).
"""
from .beads import GoldBeads, find_gold_beads
from .features import FEATURE_MODES, check_feature_mode
from .localize import LOCALIZATIONS, check_localization, localize_particles, localize_segmentation
from .membranes import find_membranes
from .segment import (CLUSTERERS, MAX_FIT_NEIGHBORHOODS, GridVolume, Segmentation,
                      check_clusterer, lamella_z_ranges, parse_z_range, segment_tomogram,
                      segment_workflows)
from .workflow import picket_pick

__all__ = [
    "FEATURE_MODES", "CLUSTERERS", "LOCALIZATIONS", "MAX_FIT_NEIGHBORHOODS",
    "check_feature_mode", "check_clusterer", "check_localization", "parse_z_range",
    "lamella_z_ranges", "segment_tomogram", "segment_workflows", "Segmentation",
    "localize_particles", "localize_segmentation", "picket_pick", "GridVolume",
    "find_gold_beads", "GoldBeads", "find_membranes",
]
