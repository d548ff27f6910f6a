"""The picker trained once for the learned picking tests, and the phantom it never saw."""
import pytest

from tomopick.core.learned import LearnedPicker

from .phantoms import VOXEL, examples, phantom, ribosome_diameter


@pytest.fixture(scope="package")
def trained():
    """Trained on 10 ribosomes + 10 others of phantom seed 1; (picker, diameter voxels)."""
    train = phantom(1)
    diameter = ribosome_diameter(train)
    picker = LearnedPicker.create(diameter * VOXEL, VOXEL, seed=0)
    positives, negatives = examples(train)
    picker.add_examples(train.tomogram, VOXEL, positives, negatives)
    picker.fit()
    return picker, diameter


@pytest.fixture(scope="package")
def unseen():
    return phantom(2)
