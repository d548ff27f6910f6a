"""Learned picking: a voxel classifier trained on a few picked examples.

`features` computes a rotation-invariant multi-scale filter stack on a working
grid scaled to the particle; `model` turns positive / negative picks into
training voxels, fits the classifier and persists it (no pickle); `detect`
applies it: dense score map, non-maximum suppression, automatic threshold,
sub-voxel positions.
"""
from .detect import Detection, automatic_threshold, nms_peaks, pick, subvoxel_offsets
from .features import WorkingGrid, feature_names, features_at, working_volume
from .model import CLASSIFIERS, FORMAT_VERSION, LearnedPicker, ModelFileError

__all__ = ["CLASSIFIERS", "Detection", "FORMAT_VERSION", "LearnedPicker", "ModelFileError",
           "WorkingGrid", "automatic_threshold", "feature_names", "features_at", "nms_peaks",
           "pick", "subvoxel_offsets", "working_volume"]
