"""tomopick.core.learned.model: persistence, versioning, named errors, determinism."""
import json

import numpy as np
import pytest

from tomopick.core.learned import LearnedPicker, ModelFileError, pick

from .phantoms import VOXEL, examples, phantom, ribosome_diameter


def test_saved_model_reloads_to_identical_scores_and_is_versioned(trained, unseen, tmp_path):
    picker, _ = trained
    path = tmp_path / "model.npz"
    picker.save(path)
    again = LearnedPicker.load(path)
    assert again.n_examples == {"positives": 10, "negatives": 10}
    assert again.scales == picker.scales and again.working_voxel_size == picker.working_voxel_size
    crop = unseen.tomogram[:, :64, :64]
    np.testing.assert_array_equal(pick(again, crop, VOXEL).score_map,
                                  pick(picker, crop, VOXEL).score_map)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    assert header["format"] == "tomopick-learned-picker" and header["version"] == 1
    header["version"] = 2
    np.savez(tmp_path / "future.npz", **dict(arrays, header=np.array(json.dumps(header))))
    with pytest.raises(ModelFileError, match=r"future.npz: model format version 2"):
        LearnedPicker.load(tmp_path / "future.npz")
    with pytest.raises(ModelFileError, match=r"model not found: .*missing.npz"):
        LearnedPicker.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not a model")
    with pytest.raises(ModelFileError, match="junk.npz: not a readable"):
        LearnedPicker.load(tmp_path / "junk.npz")


def test_bad_examples_are_named():
    volume = np.random.default_rng(0).normal(size=(32, 48, 48)).astype(np.float32)
    picker = LearnedPicker.create(120.0, 10.0)
    picker.add_examples(volume, 10.0, [[20, 20, 16]])
    with pytest.raises(ValueError, match="at least 2 positive examples, got 1"):
        picker.fit()
    with pytest.raises(ValueError, match=r"positive pick 1 at \(60.0, 20.0, 16.0\) lies outside "
                                         r"the 48x48x32 tomogram"):
        picker.add_examples(volume, 10.0, [[20, 20, 16], [60, 20, 16]])
    with pytest.raises(ValueError, match="diameter must be positive"):
        LearnedPicker.create(0, 10.0)


def test_training_is_deterministic_for_a_seed():
    ph = phantom(5, shape=(48, 96, 96), n_particles=24)
    positives, negatives = examples(ph, 5)
    maps = []
    for _ in range(2):
        picker = LearnedPicker.create(ribosome_diameter(ph) * VOXEL, VOXEL, seed=7)
        picker.add_examples(ph.tomogram, VOXEL, positives, negatives)
        maps.append(pick(picker.fit(), ph.tomogram, VOXEL).score_map)
    np.testing.assert_array_equal(maps[0], maps[1])
