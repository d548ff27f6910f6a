"""The slab/tile/thread sweep does not change the result (tomopick.core.denoise.plan)."""
import numpy as np
import pytest

from tomopick.core import denoise


@pytest.mark.parametrize("slab,tile,threads", [(1, (4, 5), 1), (3, (5, 7), 2), (4, (9, 30), 3),
                                                (7, (30, 9), 2), (100, None, 1)])
def test_slab_tile_and_thread_split_gives_identical_result(step_volume, slab, tile, threads):
    whole_eed = denoise.eed(step_volume, n_iter=4, slab_size=1000, tile=(1000, 1000))
    whole_bf = denoise.beltrami_flow(step_volume, n_iter=4, slab_size=1000, tile=(1000, 1000))
    eed = denoise.eed(step_volume, n_iter=4, slab_size=slab, tile=tile, n_threads=threads)
    bf = denoise.beltrami_flow(step_volume, n_iter=4, slab_size=slab, tile=tile,
                               n_threads=threads)
    np.testing.assert_array_equal(eed, whole_eed)     # automatic K uses global statistics
    np.testing.assert_array_equal(bf, whole_bf)
