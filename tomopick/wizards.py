"""Wizards of tomopick's forms.

Each wizard is written next to the protocol it serves. pyworkflow only
collects Wizard classes *declared* in the plugin's ``wizards`` module (it
checks ``__module__``), so every wizard of the protocol modules is re-declared
here as a subclass with this module's name.
"""
from pyworkflow.wizard import Wizard

import tomopick.protocols as _protocols

for _module in list(vars(_protocols).values()):
    if getattr(_module, "__name__", "").startswith("tomopick.protocols.protocol_"):
        for _name, _obj in list(vars(_module).items()):
            if (isinstance(_obj, type) and issubclass(_obj, Wizard) and _obj is not Wizard
                    and _obj.__module__ == _module.__name__):
                globals()[_name] = type(_name, (_obj,), {"__module__": __name__,
                                                         "__doc__": _obj.__doc__})


# ------------------------------------------------------------------ non-directional path
# Wizards of the template matching, learned picking and initial model forms, declared here
# directly. Each has a classmethod computing the value (testable without a display) and a
# ``show`` that fills the form.

from tomopick.protocols.protocol_initial_model import ProtTomoPickInitialModel  # noqa: E402
from tomopick.protocols.protocol_learned_picking import ProtTomoPickLearnedPicking  # noqa: E402
from tomopick.protocols.protocol_template_matching import (  # noqa: E402
    ProtTomoPickTemplateMatching)


def _reference_box(protocol):
    """(box size in voxels, Å/voxel) of a template matching form's reference, or None."""
    from tomopick.core.formats import MrcError, mrc_header_info

    ref = protocol.reference.get()
    if ref is not None:
        dim = ref.getDim()
        return (None if not dim else int(dim[0])), ref.getSamplingRate()
    path = protocol.referenceFile.get()
    if not path:
        return None
    try:
        info = mrc_header_info(path)
    except (MrcError, OSError):
        return None
    return int(info["shape"][-1]), float(info["voxel_size"])


class TemplateMatchingBoxSizeWizard(Wizard):
    """Box size of the picks: the reference's box rescaled to the tomograms' sampling rate."""
    _targets = [(ProtTomoPickTemplateMatching, ["boxSize"])]

    @classmethod
    def boxSize(cls, protocol):
        """Even box size in voxels of the tomograms (0 when the form lacks what it needs)."""
        reference = _reference_box(protocol)
        tomograms = protocol.inputTomograms.get()
        if not reference or not reference[0] or not reference[1] or tomograms is None \
                or not tomograms.getSamplingRate():
            return 0
        box = reference[0] * reference[1] / tomograms.getSamplingRate()
        return int(2 * round(box / 2))

    @classmethod
    def show(cls, form, *params):
        form.setVar("boxSize", cls.boxSize(form.protocol))


def _angular_step(diameter, resolution):
    from tomopick.core.rotations.sampling import angular_step_for
    if not diameter or not resolution or diameter <= 0 or resolution <= 0:
        return 0.0
    return round(angular_step_for(diameter, resolution), 1)


class TemplateMatchingAngularSamplingWizard(Wizard):
    """Angular step from the particle diameter and the low-pass (Crowther-like rule).

    ``degrees(lowpass / diameter)``: a finer step does not change the band-limited
    template; the search runs coarser and refines locally to this step.
    """
    _targets = [(ProtTomoPickTemplateMatching, ["angularSampling"])]

    @classmethod
    def angularSampling(cls, protocol):
        """Degrees (0 when the low-pass is 0: the protocol's automatic step then applies)."""
        return _angular_step(protocol.particleDiameter.get(), protocol.lowpass.get())

    @classmethod
    def show(cls, form, *params):
        form.setVar("angularSampling", cls.angularSampling(form.protocol))


class InitialModelAngularSamplingWizard(Wizard):
    """Angular step of the initial model's global search from the diameter and the low-pass.

    Four times the Crowther-like step at the model's low-pass (300 Å at 40 Å:
    about 30 degrees): the global search is refined locally to about a quarter
    of its step, i.e. to the step the low-pass allows.
    """
    _targets = [(ProtTomoPickInitialModel, ["angularSampling"])]

    @classmethod
    def angularSampling(cls, protocol):
        return round(4 * _angular_step(protocol.particleDiameter.get(), protocol.lowpass.get()), 1)

    @classmethod
    def show(cls, form, *params):
        form.setVar("angularSampling", cls.angularSampling(form.protocol))


class LearnedPickingBoxSizeWizard(Wizard):
    """Box size of the picks: the training positives' box rescaled to the tomograms."""
    _targets = [(ProtTomoPickLearnedPicking, ["boxSize"])]

    @classmethod
    def boxSize(cls, protocol):
        positives = protocol.positives.get()
        tomograms = protocol.inputTomograms.get()
        if positives is None or tomograms is None or not positives.getBoxSize():
            return 0
        rate, target = positives.getSamplingRate(), tomograms.getSamplingRate()
        factor = rate / target if rate and target else 1.0
        return int(round(positives.getBoxSize() * factor))

    @classmethod
    def show(cls, form, *params):
        form.setVar("boxSize", cls.boxSize(form.protocol))
