"""Choice parameters: the form owns the order (saved workflows store the index), core the names.

Each EnumParam lists its choices in its protocol (SPEC order); the protocol
hands core the chosen *name*, so every choice must be a name core accepts.
Reordering a core tuple can then never change what a saved workflow means.
"""
import pytest
from pyworkflow.protocol import params

from tomopick import protocols
from tomopick.core import alignment, consensus, denoise, extraction, geometry, picket

MODEL_TYPES = ["General", "Vesicle", "Ellipsoidal vesicle", "Surface", "Filament"]
# (protocol, parameter): (choices in SPEC order, names core accepts)
CHOICES = {
    ("ProtTomoPickDenoise", "method"): (["EED", "BFlow"], denoise.METHODS),
    ("ProtTomoPickVectorialPicking", "modelType"): (MODEL_TYPES, geometry.MODEL_TYPES),
    ("ProtTomoPickModelWorkflow", "modelType"): (MODEL_TYPES, geometry.MODEL_TYPES),
    ("ProtTomoPickPickET", "featureExtraction"): (["FFT", "Gabor", "intensities"],
                                                  picket.FEATURE_MODES),
    ("ProtTomoPickPickET", "clustering"): (["KMeans", "GMM"], picket.CLUSTERERS),
    ("ProtTomoPickPickET", "localization"): (["connected components", "watershed"],
                                             picket.LOCALIZATIONS),
    ("ProtTomoPickConsensus", "mode"): ([">=", "="], consensus.MODES),
    ("ProtTomoPickExtraction", "normproc"): (["normalize", "edge mean"],
                                             extraction.NORMALIZATIONS),
    ("ProtTomoPickExtraction", "outOfBounds"): (["skip", "pad"], extraction.OUT_OF_BOUNDS),
    ("ProtTomoPickApplyAlignment", "interpolation"): (["linear", "cubic"],
                                                      alignment.INTERPOLATIONS),
}


def _enum_choices(protocol_name, parameter):
    protocol = getattr(protocols, protocol_name)()
    param = protocol.getParam(parameter)
    assert isinstance(param, params.EnumParam), f"{protocol_name}.{parameter} is no EnumParam"
    return list(param.choices)


@pytest.mark.parametrize("protocol_name,parameter", sorted(CHOICES))
def test_form_choices_are_in_spec_order_and_each_is_a_name_core_accepts(protocol_name, parameter):
    expected, core_names = CHOICES[(protocol_name, parameter)]
    choices = _enum_choices(protocol_name, parameter)
    assert choices == expected
    assert set(choices) <= set(core_names), f"core does not know {set(choices) - set(core_names)}"
