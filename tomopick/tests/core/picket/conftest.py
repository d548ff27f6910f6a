"""Phantoms shared by the PickET tests."""
import pytest

from tomopick.core.picket import segment as seg
from tomopick.core.simulate import simulate_tomogram


@pytest.fixture(scope="module")
def phantom_slab():
    """Preprocessed central slab of a small phantom (particles, wedge, noise)."""
    ph = simulate_tomogram(shape=(48, 64, 64), n_particles=10, n_vesicles=0, snr=0.5, seed=3)
    return seg.preprocess(ph.tomogram)[12:36]


@pytest.fixture(scope="module")
def phantom():
    return simulate_tomogram(shape=(64, 96, 96), n_particles=20, n_vesicles=0, snr=0.5,
                             tilt_range=(-60, 60), thickness_gradient=True, seed=0)
