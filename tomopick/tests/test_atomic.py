"""Atomic writes: an output appears under its name only complete (core/atomic.py)."""
import os

import numpy as np
import pytest

from tomopick.core.atomic import save_npz
from tomopick.core.formats import create_mrc, read_mrc, write_mrc


def test_create_mrc_publishes_on_close_and_discards_on_error(tmp_path):
    path = tmp_path / "slabs.mrc"
    mrc = create_mrc(path, (4, 5, 6), 2.0)
    mrc.data[:2] = 1.0
    assert not path.exists() and (tmp_path / "slabs.mrc.part").exists()  # half-written: hidden
    mrc.data[2:] = 2.0
    mrc.update_header_stats()
    mrc.close()
    assert os.listdir(tmp_path) == ["slabs.mrc"]
    np.testing.assert_array_equal(read_mrc(path)[:, 0, 0], [1, 1, 2, 2])

    with pytest.raises(RuntimeError):
        with create_mrc(path, (4, 5, 6), 2.0) as mrc:
            mrc.data[:] = 9.0
            raise RuntimeError("killed mid-way")
    assert os.listdir(tmp_path) == ["slabs.mrc"]  # the old complete file, no .part
    np.testing.assert_array_equal(read_mrc(path)[:, 0, 0], [1, 1, 2, 2])


def test_failed_writes_keep_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "vol.mrc"
    write_mrc(path, np.ones((2, 3, 3), np.float32), 1.0)
    picks = tmp_path / "picks.npz"
    save_npz(picks, positions=np.ones((2, 3)))

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError):
        save_npz(picks, positions=np.zeros((5, 3)))
    monkeypatch.setattr("mrcfile.new", broken)
    with pytest.raises(OSError, match=r"cannot write .*vol\.mrc: No space left"):
        write_mrc(path, np.zeros((2, 3, 3), np.float32), 1.0)
    assert sorted(os.listdir(tmp_path)) == ["picks.npz", "vol.mrc"]
    np.testing.assert_array_equal(read_mrc(path), 1.0)
    assert np.load(picks)["positions"].shape == (2, 3)
