"""A small noisy volume with a plane edge, shared by the denoise tests."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def step_volume():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((23, 30, 28)).astype(np.float32)
    v += 3 * (np.arange(28) > 14)          # a plane edge across x
    return v
