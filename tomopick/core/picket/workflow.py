"""One PickET workflow on one tomogram: stage 1 (segmentation) then stage 2 (positions).

A workflow is a (feature mode, clusterer, localisation) triple; `picket_pick`
runs one.  To compare several on one tomogram without recomputing stage 1, use
`segment.segment_workflows` and `localize.localize_segmentation`.
"""
from .localize import localize_segmentation
from .segment import MAX_FIT_NEIGHBORHOODS, segment_tomogram

__all__ = ["picket_pick"]


def picket_pick(volume, feature_mode="FFT", clusterer="KMeans",
                localization="connected components", neighborhood_size=5,
                max_fit_neighborhoods=MAX_FIT_NEIGHBORHOODS, z_fit_range=None,
                z_pick_range=None, particle_cluster=-1, particle_diameter=None, min_distance=0,
                seed=0,
                n_threads=2, tomo_id="", voxel_size=None, gmm_components=None, grid_step=None):
    """PickET's two stages on one tomogram: segmentation, then object centroids.

    Parameters are those of `segment_tomogram` plus ``localization``
    ('connected components' or 'watershed'), ``min_distance`` (watershed marker
    spacing, voxels; 0 = from the mask, `localize.marker_spacing`), ``tomo_id`` and
    ``voxel_size`` (Å/voxel) for the returned table.  ``particle_diameter`` is
    in voxels; ``grid_step`` as in `segment_tomogram` (default: 2 for
    particles of 12 voxels or more, `segment.grid_step_for`).

    Returns
    -------
    picks : Picks
        Object centroids (x, y, z) voxels with scores (object mass: summed
        particle margin), best first.
    segmentation : Segmentation
    objects : dict
        `localize.localize_particles` output: 'labels' (on the segmentation's
        grid, 'grid_step'; object k = the k-th pick), 'volumes' (voxels of the
        tomogram, in pick order), counts of the objects dropped by the filters.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, y, x = np.indices((24, 48, 48))
    >>> volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    >>> for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:  # four dark balls, radius 4
    ...     volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 16] -= 1.0
    >>> picks, seg, objects = picket_pick(volume, "Gabor", "GMM", "watershed",
    ...                                   particle_diameter=9, max_fit_neighborhoods=5000,
    ...                                   tomo_id="t1", voxel_size=10.0)
    >>> sorted(map(tuple, np.round(picks.positions).astype(int).tolist()))   # (x, y, z)
    [(12, 12, 12), (12, 34, 12), (34, 12, 12), (34, 34, 12)]
    >>> bool(np.all(np.diff(picks.scores) <= 0))      # best first
    True
    """
    seg = segment_tomogram(volume, feature_mode, clusterer, neighborhood_size,
                           max_fit_neighborhoods, z_fit_range, z_pick_range,
                           particle_cluster, particle_diameter, seed, n_threads,
                           gmm_components, grid_step=grid_step)
    picks, objects = localize_segmentation(seg, localization, particle_diameter, min_distance,
                                           tomo_id, voxel_size)
    return picks, seg, objects
