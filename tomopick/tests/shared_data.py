"""The shared real-data folder (``../shared/data`` beside the project) for tests."""
import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIRS = [os.path.join(_HERE, "..", "..", "..", "shared", "data"), "/work/shared/data"]


def data_file(name):
    """Path of a real-data file; skips the calling test when the folder does not hold it."""
    for directory in DATA_DIRS:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    pytest.skip(f"{name} not found in {DATA_DIRS} (the shared real-data folder)")
