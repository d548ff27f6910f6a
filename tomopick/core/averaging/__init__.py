"""Subtomogram averaging: alignment to a reference, wedge-weighted averages, FSC, initial models."""
from .align import Aligner
from .average import FourierAverage, centre_of_mass_offset, low_pass
from .fsc import HALF_MAP_THRESHOLD, fsc, resolution
from .initial_model import InitialModel, Progress, find_symmetry_frame, initial_model

__all__ = ["Aligner", "FourierAverage", "HALF_MAP_THRESHOLD", "InitialModel", "Progress",
           "centre_of_mass_offset", "find_symmetry_frame", "fsc", "initial_model", "low_pass",
           "resolution"]
